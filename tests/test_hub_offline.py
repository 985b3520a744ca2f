"""A hub model on a machine that cannot reach the hub: read from the Hugging Face cache at once, not after minutes of
huggingface_hub's retries (1 + 2 + 4 + 8 + 8 s for each of a dozen files: a tiny cached BERT took 3 min 18 s to start
training, with 40 "Retrying" lines); one not in the cache fails at once, in one line; a hub data set (`hf:org/name`)
alike (it took 24 s of retries to fail)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from conftest import make_tiny_bert


def _closed_port() -> int:
    with socket.socket() as s:  # bound, never listening: a connection to it is refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_cached_hub_model_loads_at_once_when_the_hub_cannot_be_reached(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets
    from huggingface_hub import constants
    from typer.testing import CliRunner

    from tunelab.cli import app
    from tunelab.models import hub

    repo = tmp_path / "hub" / "models--someorg--tiny-bert"
    make_tiny_bert(repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "good film", "label": "pos"}\n{"text": "bad film", "label": "neg"}\n')
    # what a machine without a route to the hub has (the suite runs offline: HF_HUB_OFFLINE, tests/conftest.py)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setattr(hub, "_turned_offline", False)
    monkeypatch.setattr(hub, "_probed", {})
    said = []
    for args in (["hf:someorg/some-data"], *([str(rows), "--model", m, "--json"]
                                             for m in ("someorg/tiny-bert", "someorg/not-cached"))):
        res = CliRunner().invoke(app, ["data", "check", *args])
        said.append((res.exit_code, res.stdout, res.stderr.strip().splitlines()))
    # a hub data set first (datasets keeps an offline flag of its own; it took 24 s of retries to fail)
    assert said[0][0] == 2 and said[0][2] == [
        "note: 127.0.0.1 cannot be reached: hf:someorg/some-data is read from the Hugging Face cache only (as with "
        "HF_HUB_OFFLINE=1)", *[x for x in said[0][2][1:] if x.startswith("error: hf:someorg/some-data: cannot load the "
                                                                        "hub dataset: ")]], said[0]
    assert said[1][0] == 0 and json.loads(said[1][1])["files"][str(rows)]["rows"] == 2, said[1]
    assert said[2][0] == 2 and said[2][2][-1].startswith("error: --model: cannot load someorg/not-cached: "), said[2]
    assert constants.HF_HUB_OFFLINE is True and datasets.config.HF_HUB_OFFLINE is True
    assert not [x for _, _, err in said for x in err if "Retrying" in x or "Traceback" in x]


def test_offline_mode_is_left_to_a_proxy_and_turned_off_when_the_hub_answers(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A proxy carries huggingface_hub's requests where this machine has no route (a cluster node behind one): the
    probe, a direct connection, would have turned offline mode on and refused downloads the proxy allows. And offline
    mode tunelab turned on is turned off when the host answers again (a long-lived process: the API, a server)."""
    from huggingface_hub import constants

    from tunelab.models import hub

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_turned_offline", False)
    monkeypatch.setattr(hub, "_probed", {})
    port = _closed_port()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("http_proxy", "http://proxy.example:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    hub.reach_hub("someorg/m")
    assert constants.HF_HUB_OFFLINE is False and not hub._probed  # not probed: the proxy's to reach
    monkeypatch.delenv("http_proxy")
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    hub.reach_hub("someorg/m")
    hub.reach_hub("someorg/m")  # said once
    assert constants.HF_HUB_OFFLINE is True
    assert capsys.readouterr().err.count("note: 127.0.0.1 cannot be reached: someorg/m is read from the Hugging Face "
                                         "cache only") == 1
    with socket.socket() as listening:  # the host answers again, a minute later
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{listening.getsockname()[1]}")
        hub.reach_hub("someorg/m")
    assert constants.HF_HUB_OFFLINE is False
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # the user's HF_HUB_OFFLINE: never turned off
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{listening.getsockname()[1]}")
        hub.reach_hub("someorg/m")
    assert constants.HF_HUB_OFFLINE is True
