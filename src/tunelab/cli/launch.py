"""`tunelab train --nproc N`: the same command relaunched under `torchrun`, one process per device (or CPU share).

torchrun (PyTorch's own launcher) starts the processes and sets their ranks; inside, accelerate and
`train.distributed` (ddp, fsdp, deepspeed) take over. `--dry-run` prints the exact command instead."""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import ConfigError

MASTER_PORT = 29500  # torchrun's default


@dataclass(frozen=True)
class Launch:
    nproc: int
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None  # None: MASTER_PORT

    def check(self) -> None:
        """Settings that would be ignored or fail inside torchrun: refused here, each in one line."""
        if self.nnodes > 1 and not self.master_addr:
            raise ConfigError("--nnodes: several machines need --master-addr (the address of the --node-rank 0 one)")
        if self.nnodes == 1 and (self.master_addr or self.master_port is not None):
            flag = "--master-addr" if self.master_addr else "--master-port"
            raise ConfigError(f"{flag}: for several machines (--nnodes M); one machine's processes meet on it "
                              "(torchrun --standalone, a free port)")
        if not 0 <= self.node_rank < self.nnodes:
            raise ConfigError(f"--node-rank: {self.node_rank} is not in 0..{self.nnodes - 1} (--nnodes {self.nnodes})")
        if self.nnodes > 1 and self.node_rank == 0:  # this machine hosts the rendezvous: its port must be free
            from tunelab.cli.common import check_listen

            check_listen(None, self.port, "--master-port")  # (every interface, as torchrun's store binds)

    @property
    def port(self) -> int:
        return MASTER_PORT if self.master_port is None else self.master_port


def torchrun_command(launch: Launch, config: Path | None, sets: list[str], resume: str | None,
                     overwrite: bool) -> list[str]:
    """The torchrun command line whose every process runs `python -m tunelab train` with these arguments."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(launch.nproc)]
    if launch.nnodes == 1:
        cmd += ["--standalone"]
    else:
        cmd += ["--nnodes", str(launch.nnodes), "--node-rank", str(launch.node_rank),
                "--master-addr", str(launch.master_addr), "--master-port", str(launch.port)]
    cmd += ["-m", "tunelab", "train", *([str(config)] if config else []), *(x for s in sets for x in ("--set", s))]
    if resume is not None:
        cmd += ["--resume", resume] if resume != "auto" else ["--resume"]
    return cmd + (["--overwrite"] if overwrite else [])


def threads(nproc: int) -> dict[str, str]:
    """The variables tunelab sets for the launch: OMP_NUM_THREADS, a share of the cores (torchrun gives every process
    one thread), unless the user set it."""
    if "OMP_NUM_THREADS" in os.environ:
        return {}
    return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // nproc))}


def shell_line(cmd: list[str], nproc: int) -> str:
    """The command as a shell runs it, with the variables tunelab sets in front (what --dry-run prints)."""
    return shlex.join([*(f"{k}={v}" for k, v in threads(nproc).items()), *cmd])


def _ended(code: int) -> str:
    if code >= 0:
        return f"ended with exit code {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


def run_launch(cmd: list[str], nproc: int) -> int:
    """Run `cmd` — torchrun's own `run()` with its arguments, in this process — in the foreground; the exit status
    of the command: 0, 2 when a process ended with a user error (which the first process said in one line), 130 on
    Ctrl-C (which reaches every process: each ends as a one-process run does, the newest checkpoint kept), else the
    first failed process's. torchrun's own report of a failed process (a ChildFailedError traceback, which the
    workers' output already explains) is not printed."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    print(f"launch: {shell_line(cmd, nproc)}", file=sys.stderr)
    os.environ.update(threads(nproc))  # (the processes' environment: this one's)
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(parse_args(cmd[cmd.index("torch.distributed.run") + 1:]))
    except ChildFailedError as failed:
        codes = {rank: f.exitcode for rank, f in failed.failures.items()}
        if 2 in codes.values() or 130 in codes.values():  # a user error (said), Ctrl-C
            return 2 if 2 in codes.values() else 130
        # a crash, or a process killed (the out-of-memory killer's SIGKILL): every failed one said — the killed
        # first (the others then fail waiting for it, at the same moment as far as torchrun can tell), those torchrun
        # itself stopped after the first failure (SIGTERM) last
        failed = sorted(codes.items(), key=lambda rc: (rc[1] == -signal.SIGTERM, rc[1] >= 0, rc[1] != -signal.SIGKILL,
                                                       rc[0]))
        for rank, code in failed:
            print(f"error: process rank {rank} {_ended(code)}", file=sys.stderr)
        code = failed[0][1]
        return 128 - code if code < 0 else code or 1
    except (KeyboardInterrupt, SignalException):
        return 130
    return 0
