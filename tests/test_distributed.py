"""Several CPU processes (gloo) through `tunelab train --nproc N` (torchrun): the loss curve and the weights equal a
one-process run at the same global batch, whatever the number of processes — also across a SIGKILL and a resume:
classification under DDP (resumed as two nodes over loopback), SFT with LoRA (token-weighted) under FSDP2 resumed on
another number of processes; checkpoints, the model and the LoRA adapter hold full tensors; only the main process
writes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import WORDS, free_port, say_rows, sentiment_rows, write_jsonl
from tunelab.cli import app

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TUNELAB_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}
REL = 1e-3  # the bound on the relative difference of the loss curves


def _sets(model: Path, tmp: Path, out: Path, *extra: str) -> list[str]:
    # 58 rows, global batch 8: 8 steps per epoch, the last batch of 2 rows (one per process)
    train = write_jsonl(tmp / "train.jsonl", sentiment_rows(58, 0))
    val = write_jsonl(tmp / "val.jsonl", sentiment_rows(12, 1))
    sets = [f"model={model}", "task=classification", f"data.train={train}", f"data.validation={val}",
            f"output_dir={out}", "train.epochs=2", "train.batch_size=8", "train.log_steps=3", "train.save_steps=4",
            "train.dropout=0", "train.lr=5e-3", "train.report=false", *extra]
    return [x for s in sets for x in ("--set", s)]


def _train(args: list[str], *launch: str, pause: str | None = None, paused: Path | None = None, processes: int = 0,
           env: dict[str, str] | None = None, meanwhile: Callable[[], None] = lambda: None) -> str:
    """`tunelab train ARGS LAUNCH` as a user runs it, returning its output, `meanwhile()` run here while it starts;
    with `pause`, SIGKILL the whole process group once each of its `processes` sleeps at `pause` (TUNELAB_TEST_PAUSE;
    each touches `paused`.RANK then)."""
    cmd = [sys.executable, "-m", "tunelab", "train", *args, *launch]
    env = {**ENV, **(env or {}), **({"TUNELAB_TEST_PAUSE": pause, "TUNELAB_TEST_PAUSED": str(paused)} if pause else {})}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    if pause is None:
        try:
            meanwhile()
            out, _ = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        assert proc.returncode == 0, out[-3000:]
        return out
    assert paused is not None and processes > 0
    deadline = time.monotonic() + 180
    try:
        meanwhile()
        while not all(Path(f"{paused}.{rank}").exists() for rank in range(processes)):  # each asleep in the pause
            assert proc.poll() is None, f"ended (rc {proc.returncode}) before {pause}: {proc.stdout.read()[-3000:]}"
            assert time.monotonic() < deadline, f"the run did not reach {pause}"
            time.sleep(0.05)
    finally:  # the launcher, torchrun and every worker (torchrun starts each in its own session), as a lost node
        for p in [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]:
            p.send_signal(signal.SIGKILL)
        proc.wait()
    return proc.stdout.read()


def _in_process(args: list[str]) -> None:
    """The one-process reference, through the Python API (no launcher, no process start-up to pay)."""
    import tunelab

    tunelab.train(None, **dict(a.split("=", 1) for a in args[1::2]))


def _losses(out: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [(r["step"], r["loss"]) for r in rows if "loss" in r and "lr" in r]  # training log rows only
    assert len(losses) == len(dict(losses)), "a loss row written twice"
    return dict(losses)


def _same_curve(got: dict[int, float], want: dict[int, float], steps: list[int]) -> None:
    assert sorted(got) == sorted(want) == steps
    worst = max(abs(got[s] - want[s]) / abs(want[s]) for s in want)
    assert worst <= REL, f"loss curves differ by {worst:.2e} (relative)"


def _same_model(got: Path, want: Path) -> None:
    a, b = load_file(str(got / "model" / "model.safetensors")), load_file(str(want / "model" / "model.safetensors"))
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    assert (got / "model" / "model.safetensors").stat().st_size == (want / "model" / "model.safetensors").stat().st_size
    assert max(float((a[k] - b[k]).abs().max()) for k in b) < 1e-4


def _two_nodes(args: list[str], env: dict[str, str]) -> str:
    """`tunelab train ARGS --nproc 1 --nnodes 2 --node-rank 0|1 --master-addr 127.0.0.1`: two launchers, one process
    each, that rendezvous over TCP as two machines sharing a file system do; both outputs."""
    node = ["--nproc", "1", "--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    second = subprocess.Popen([sys.executable, "-m", "tunelab", "train", *args, *node, "--node-rank", "1"],
                              env={**ENV, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        first = _train(args, *node, "--node-rank", "0", env=env)
        log, _ = second.communicate(timeout=120)
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
    assert second.returncode == 0, log[-3000:]
    return first + log


def test_ddp_killed_and_resumed_equals_one_process(tiny_bert: Path, tmp_path: Path) -> None:
    """With the feature cache on (the reference tokenises in memory): the first process of the node tokenises and
    writes the cache, the other maps it. The resume runs as two nodes of one process each (`--nnodes 2`, over
    loopback); both map the cache. The one-process reference runs here while the launch starts."""
    out, cache = tmp_path / "run", {"TUNELAB_CACHE": str(tmp_path / "cache")}
    (tmp_path / "one").mkdir()
    reference, one = tmp_path / "one" / "run", _sets(tiny_bert, tmp_path / "one", tmp_path / "one" / "run",
                                                     "train.precision=fp32")
    args = _sets(tiny_bert, tmp_path, out, "train.precision=fp32", "data.cache=true")
    log = _train(args, "--nproc", "2", pause="step:6", paused=tmp_path / "paused", processes=2, env=cache,
                 meanwhile=lambda: _in_process(one))
    assert (out / "checkpoints" / "step-00000004").is_dir()
    assert log.count("58 tokenised training rows cached in") == 1  # (the first process says so; the other maps it)
    assert max(_losses(out)) == 6  # steps 5 and 6 were logged after checkpoint 4: the resume replaces them
    assert len(list((tmp_path / "cache" / "features").iterdir())) == 1
    log = _two_nodes([*args, "--resume"], cache)
    assert log.count("58 tokenised training rows reused from") == 2, log[-3000:]  # (each machine's first process)
    # logged every 3 steps: the resume at 4 restores the loss of step 4 summed over both processes into the line of 6
    _same_curve(_losses(out), _losses(reference), [3, 6, 9, 12, 15, 16])
    _same_model(out, reference)
    metrics, want = json.loads((out / "metrics.json").read_text()), json.loads((reference / "metrics.json").read_text())
    assert metrics["train"]["real_tokens"] == want["train"]["real_tokens"]  # both processes' tokens, not the first's
    assert metrics["train"]["hardware"]["processes"] == 2 and metrics["train"]["steps"] == 16
    assert metrics["validation"]["accuracy"] == json.loads((reference / "metrics.json").read_text())[
        "validation"]["accuracy"]
    state = __import__("torch").load(out / "checkpoints" / "step-00000016" / "state.pt", weights_only=True)
    assert len(state["rng_ranks"]) == 2  # every process's RNG states are kept


def _sft_sets(model: Path, tmp: Path, out: Path, *extra: str) -> list[str]:
    # 29 conversations, global batch 4: 8 steps in one epoch, the last batch of 1 row (the other process runs it with
    # weight 0); the loss is a mean over reply tokens, so each process's share is weighted by its tokens (an
    # all-reduce), not its rows
    words = [f"{a} {b}" for a, b in zip(WORDS[:29], WORDS[5:34], strict=True)]
    train = write_jsonl(tmp / "chat.jsonl", say_rows(words))
    val = write_jsonl(tmp / "chat_val.jsonl", say_rows(WORDS[:6]))
    sets = [f"model={model}", "task=sft", f"data.train={train}", f"data.validation={val}", f"output_dir={out}",
            "method=lora", "method.r=4", "train.epochs=1", "train.batch_size=4", "train.log_steps=1",
            "train.save_steps=4", "train.save_total_limit=5", "train.dropout=0", "train.lr=5e-3",
            "train.report=false", "train.precision=fp32", *extra]
    return [x for s in sets for x in ("--set", s)]


def test_fsdp_lora_sft_killed_and_resumed_on_one_process(tiny_llama: Path, tmp_path: Path) -> None:
    ref, out = tmp_path / "one", tmp_path / "fsdp"
    one = _sft_sets(tiny_llama, tmp_path, ref)
    args = _sft_sets(tiny_llama, tmp_path, out, "train.distributed.strategy=fsdp")
    # the one-process reference runs here while the launch starts
    _train(args, "--nproc", "2", pause="step:5", paused=tmp_path / "paused", processes=2,
           meanwhile=lambda: _in_process(one))
    # the LoRA tensors of the checkpoint are whole (gathered from the two shards), as the one-process run's
    got = load_file(str(out / "checkpoints" / "step-00000004" / "trainable.safetensors"))
    want = load_file(str(ref / "checkpoints" / "step-00000004" / "trainable.safetensors"))
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in want.items()}
    assert any("lora_A" in k for k in got) and all(bool((v != 0).any()) for k, v in got.items() if "lora_A" in k)
    assert max(float((got[k] - want[k]).abs().max()) for k in want) < 1e-4
    _train(args, "--nproc", "1", "--resume")  # the sharded optimizer state re-sharded for one process
    _same_curve(_losses(out), _losses(ref), list(range(1, 9)))
    _same_model(out, ref)
    adapter = Path("adapter") / "adapter_model.safetensors"
    assert (out / adapter).stat().st_size == (ref / adapter).stat().st_size


def test_launcher_and_schema_import_no_model_code(tiny_bert: Path, tmp_path: Path) -> None:
    """`tunelab train CONFIG --nproc 2 --dry-run` (the launcher, before torchrun) and `tunelab schema` check configs
    with every task's and method's settings, without transformers' model code, peft, accelerate or scipy (~4 s the
    launched processes import again themselves); and `tunelab train` refuses an output_dir that holds a run of
    another config without them (it imported the training stack first: ~7 s for the line instead of ~3 s)."""
    heavy = ["transformers.modeling_utils", "peft", "accelerate", "scipy"]
    config = Path(__file__).parents[1] / "examples" / "configs" / "sms-spam-minilm.yaml"
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("task: {name: classification}\nmodel: other\n")
    (out / "metrics.json").write_text("{}")
    refused = _sets(tiny_bert, tmp_path, out)
    code = ("import sys\nfrom tunelab.cli import app\n"
            f"app(['train', {str(config)!r}, '--nproc', '2', '--dry-run'], standalone_mode=False)\n"
            "app(['schema'], standalone_mode=False)\n"
            f"print('refused:', app(['train', *{refused!r}], standalone_mode=False), file=sys.stderr)\n"
            f"print('loaded:', *[m for m in {heavy!r} if m in sys.modules], file=sys.stderr)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert res.returncode == 0 and "torch.distributed.run" in res.stdout, res.stderr
    said = [line for line in res.stderr.splitlines() if line.startswith(("error:", "refused:", "loaded:"))]
    assert said[0].startswith("error: output_dir: ") and "holds a run of another config" in said[0], res.stderr
    assert said[1:] == ["refused: 2", "loaded:"], res.stderr


def test_launcher_dry_run_and_refusals(tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    sets = ["--set", "task=classification", "--set", f"model={tiny_bert}",
            "--set", f"data.train={tmp_path / 't.jsonl'}", "--set", f"output_dir={tmp_path / 'runs'}"]
    write_jsonl(tmp_path / "t.jsonl", sentiment_rows(4))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # then the launch sets it: printed, as a shell would run it
    res = runner.invoke(app, ["train", *sets, "--nproc", "4", "--nnodes", "2", "--node-rank", "1",
                              "--master-addr", "10.0.0.1", "--dry-run"])
    assert res.exit_code == 0, res.output
    threads = max(1, (os.cpu_count() or 1) // 4)
    assert res.output.split()[0] == f"OMP_NUM_THREADS={threads}"
    assert res.output.split()[2:] == ["-m", "torch.distributed.run", "--nproc-per-node", "4", "--nnodes", "2",
                                      "--node-rank", "1", "--master-addr", "10.0.0.1", "--master-port", "29500",
                                      "-m", "tunelab", "train", *sets]
    # flags that would be ignored (no launch, or one machine) or fail inside torchrun: one line each, nothing run
    busy = socket.socket()
    busy.bind(("", 0))
    busy.listen()
    for flags, said in ((["--node-rank", "1"], "--node-rank: a launch setting"), (["--dry-run"], "--dry-run: a launch"),
                        (["--master-port", "1234"], "--master-port: a launch setting"),
                        (["--nproc", "2", "--master-addr", "10.0.0.1"], "--master-addr: for several machines"),
                        (["--nproc", "1", "--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port",
                          str(busy.getsockname()[1])], "--master-port: cannot listen on *:")):
        res = runner.invoke(app, ["train", *sets, *flags])
        assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and said in res.output, res.output
    busy.close()
    res = runner.invoke(app, ["train", *sets, "--nproc", "2", "--nnodes", "2"])
    assert res.exit_code == 2 and "--master-addr" in res.output and len(res.output.strip().splitlines()) == 1
    res = runner.invoke(app, ["train", *sets, "--nproc", "2", "--set", "train.distributed.strategy=deepspeed"])
    if not __import__("torch").cuda.is_available():
        assert res.exit_code == 2 and "deepspeed needs CUDA GPUs" in res.output
    res = runner.invoke(app, ["train", *sets, "--nproc", "2", "--set", "train.distributed.strategy=fsdp",
                              "--set", "method=qlora"])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1  # on a CPU: qlora needs CUDA first
    # a strategy without a launch: one plain process, said (the missing file then stops it before any work)
    res = runner.invoke(app, ["train", *sets, "--set", "train.distributed.strategy=fsdp",
                              "--set", "data.train=no.jsonl"])
    assert res.exit_code == 2 and res.output.splitlines()[0] == (
        "note: train.distributed.strategy fsdp applies to a launch (--nproc N, or torchrun); this run is one process "
        "without it")
    assert not (tmp_path / "runs").exists()
    from tunelab.cli.launch import _ended
    from tunelab.cli.train import interrupted_line  # Ctrl-C under the launch: the command that resumes has its flags

    assert _ended(-9) == "was killed by SIGKILL" and _ended(1) == "ended with exit code 1"  # (torchrun's report off)
    monkeypatch.setenv("LOCAL_RANK", "1")  # no launch (no WORLD_SIZE; a Slurm script's variable): said
    res = runner.invoke(app, ["train", *sets, "--dry-run"])
    assert res.exit_code == 2 and res.output.startswith("error: --dry-run")
    monkeypatch.setenv("WORLD_SIZE", "2")  # a machine's second process: its first says the error (and each machine's)
    res = runner.invoke(app, ["train", *sets, "--dry-run"])
    assert res.exit_code == 2 and res.output == ""
    monkeypatch.setenv("LOCAL_RANK", "0")

    for key, value in {"RANK": "2", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "4", "GROUP_RANK": "1",
                       "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29501"}.items():
        monkeypatch.setenv(key, value)
    assert interrupted_line(tmp_path / "runs", None, []).endswith(
        "--nproc 2 --nnodes 2 --node-rank 1 --master-addr 10.0.0.1 --master-port 29501 --overwrite")


def test_a_user_error_under_the_launcher_is_one_line(tiny_bert: Path, tmp_path: Path) -> None:
    """A mistake only the main process checks (an output_dir holding a run of another config: the others waited on a
    collective and died with a traceback) — or one every process meets, each saying it — is one `error:` line from
    the first process, exit code 2, no traceback of torchrun's or of a worker's."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("task: {name: classification}\nmodel: other\n")
    (out / "metrics.json").write_text("{}")
    cmd = [sys.executable, "-m", "tunelab", "train", *_sets(tiny_bert, tmp_path, out), "--nproc", "2"]
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 2 and len(errors) == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert "holds a run of another config" in errors[0], errors
