"""What every command shares: the typer apps, and user errors as one line with exit code 2."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand

from tunelab import __version__
from tunelab.errors import TunelabError

# transformers imports torchao when it is installed: torchao then logs a warning for every CUDA kernel library it
# cannot load, and torch one for each of its enums — noise on every command of a CPU machine
for _noisy in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)

HELP = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, context_settings=HELP,
                  help="Fine-tune pretrained language models: data → train → evaluate → export.")
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
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """User mistakes become one line on stderr and exit code 2 — never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            _quiet_transformers()
            return fn(*args, **kwargs)
        except TunelabError as exc:
            _fail(str(exc))
        except FloatingPointError as exc:
            _fail(str(exc), code=1)

    return wrapper


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
