"""Every example config is valid, and the data it names is there: shipped in examples/data (with a NOTICE.md) or,
for sets the repo may not redistribute, under ../shared/data, which `examples/get_data.py` builds (the files are
read where a checkout has them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import example_data_builder
from tunelab.config.run import load_config
from tunelab.data.readers import read_table

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "examples" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_example_config(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the configs' paths are relative to the repository root
    cfg = load_config(path)
    files = [f for f in (cfg.data.train, cfg.data.validation, cfg.data.test) if f]
    assert files, "an example names its data"
    shipped = [f for f in files if f.startswith("examples/data/")]
    for f in shipped:
        assert read_table(f).records, f
        assert (Path(f).parent / "NOTICE.md").is_file(), f"{f}: shipped data needs its NOTICE.md"
    shared = [f for f in files if f.startswith("../shared/data/")]
    assert len(shipped) + len(shared) == len(files), f"data outside examples/data and ../shared/data: {files}"
    for f in shared:  # ../shared/data/SET/SPLIT.jsonl: a set and split that examples/get_data.py builds
        name, split = Path(f).parent.name, Path(f).stem
        builds = name in example_data_builder().SOURCES and split in ("train", "validation")
        assert builds, f"{f}: get_data.py does not build it"
    missing = [f for f in shared if not (ROOT / f).is_file()]
    if missing:
        pytest.skip(f"{missing[0]} is not in this checkout")
