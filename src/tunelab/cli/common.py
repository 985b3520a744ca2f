"""What every command shares: the typer apps, and user errors as one line with exit code 2."""

from __future__ import annotations

import atexit
import errno
import functools
import gc
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
import typer.core
from typer.core import TyperCommand, TyperGroup

from tunelab import __version__
from tunelab.errors import TunelabError, first_line, os_error_line, surface

# transformers imports torchao when it is installed: torchao then logs a warning for every CUDA kernel library it
# cannot load, and torch one for each of its enums — noise on every command of a CPU machine
for _noisy in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)

HELP = {"help_option_names": ["-h", "--help"]}
click = getattr(typer.core, "_click", None) or typer.core.click  # typer ≥ 0.20 carries its own copy of click


# A process that imported torch, transformers and peft spent 1-2.5 s of its exit (after the command's last line, its
# atexit handlers done) in the garbage collections Python runs while it takes its modules apart — walking millions of
# objects whose memory the process's end gives back anyway. Frozen (gc.freeze) as the interpreter exits, those
# objects are not walked: every command, and each process of a `--nproc` launch that torchrun waits for, ends at once.
# atexit handlers (trackers' uploads, temp folders) still run and objects are still freed as their last reference
# goes (open files flushed and closed); only cyclic garbage left at exit is not collected (the process's end frees it).


class _OneLineUsageErrors(TyperGroup):
    """Usage mistakes (an unknown option, a missing argument, a value of the wrong type) as one line on stderr,
    exit code 2, like every other user error: `error: No such option: --nosuch (tunelab train -h for help)`.
    `tunelab` and `tunelab data` alone print their help once, on stdout, and exit with code 2 (click's and typer's
    `no_args_is_help`: no command was given)."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        atexit.unregister(gc.freeze)  # (once, however often the app runs in this process)
        atexit.register(gc.freeze)  # the command's process ends without its last garbage collections (above)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)  # an exit code, or a command's None
        except getattr(click.exceptions, "NoArgsIsHelpError", ()) as e:  # click ≥ 8.2; before, help was printed
            # typer's rich help printed itself while the error was made (its text is then empty); click's is the text
            if e.format_message().strip():
                typer.echo(e.format_message())
            sys.exit(2)
        except click.exceptions.ClickException as e:
            usage = isinstance(e, click.exceptions.UsageError) and e.ctx is not None
            where = f" ({e.ctx.command_path} -h for help)" if usage and e.ctx else ""
            typer.echo(f"error: {e.format_message()}{where}", err=True)
            sys.exit(e.exit_code)
        except typer.Abort:  # (typer ≥ 0.29's click copy has no exceptions.Abort)
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=_OneLineUsageErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings=HELP, help="Fine-tune pretrained language models: data → train → evaluate → export.")
data_app = typer.Typer(no_args_is_help=True, context_settings=HELP, help="Inspect and augment data files.")
app.add_typer(data_app, name="data")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tunelab {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print tunelab's version and exit.")) -> None:
    """Fine-tune pretrained language models: data → train → evaluate → export."""


def _quiet_transformers() -> None:
    """Our own progress bar and tables replace transformers' load bars and reports."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _fail(message: str, code: int = 2) -> None:
    from tunelab.progress import speaks

    if speaks():  # under a launcher every process of a machine meets the same error: its first says it
        typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """User mistakes become one line on stderr and exit code 2 — never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            _quiet_transformers()
            with surface("cli"):  # messages name options as flags (`--overwrite`), also from the API it calls
                return fn(*args, **kwargs)
        except TunelabError as exc:
            _fail(str(exc))
        except FloatingPointError as exc:
            _fail(str(exc), code=1)
        except OSError as exc:  # a path the user named: a directory to write a file to, no permission, ...
            if exc.errno == errno.EPIPE:  # `| head`: typer ends quietly
                raise
            _fail(os_error_line(exc))

    return wrapper


def check_listen(host: str | None, port: int, flag: str = "--host/--port") -> None:
    """Refuse, as one line, an address the server could not listen on (a name that does not resolve, a port in use,
    no permission) before any model is loaded; uvicorn would log it and exit with a traceback of its own."""
    import socket

    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in addresses:  # each, as asyncio's create_server binds them
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    probe.bind(address)
                except OSError as exc:
                    if exc.errno != errno.EADDRNOTAVAIL or len(addresses) == 1:  # (an address family not set up)
                        raise
    except OSError as exc:
        reason = exc.strerror or first_line(exc)
        raise TunelabError(f"{flag}: cannot listen on {host or '*'}:{port}: {reason}") from None


class _OptionalResumeValue(TyperCommand):
    """`--resume` alone (last, or before another option or the config file) means `--resume=auto`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        args = list(args)
        for i, arg in enumerate(args):
            if arg == "--":
                break
            following = args[i + 1] if i + 1 < len(args) else None
            if arg == "--resume" and (following is None or following.startswith("-") or Path(following).is_file()):
                args[i] = "--resume=auto"
        return super().parse_args(ctx, args)
