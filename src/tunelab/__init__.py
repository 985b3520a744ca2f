"""tunelab: fine-tune pretrained language models, from data to production.

    import tunelab
    run = tunelab.train("run.yaml", **{"train.epochs": 1})   # or a dict / RunConfig
    model = tunelab.load(run.dir)                            # any task
    model.predict(["great film", "dull"])                   # -> the rows of `tunelab predict`
    model.evaluate("validation.jsonl")                      # -> metrics dict
    tunelab.check_data("train.jsonl", task="ner")           # -> the report of `tunelab data check --json`
    tunelab.export_model(run.dir, "onnx", quantize="int8")  # -> the folder written (`tunelab export`)
    tunelab.compress_model(run.dir, "heads:0.3")            # -> the folder written (`tunelab compress`)

The names load on first use (PEP 562), so `import tunelab` stays light until a model is needed.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from typing import TYPE_CHECKING, Any

from tunelab import errors  # `tunelab.errors.TunelabError` after a bare `import tunelab` (light: no torch)

__version__ = "0.1.0"

# peft calls this transformers 5 property on every LoRA model; the message is theirs to fix, not the user's
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
# transformers imports torchao whenever it is installed (the torchao extra); on a CPU its CUDA kernels fail to load and
# it registers enums torch now handles itself — four warnings on every command that are about nothing the user does
logging.getLogger("torchao").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)

# (`export_model`, not `export`: importing the subpackage tunelab.export sets `tunelab.export` to it)
_API = {name: "tunelab.api" for name in ("train", "load", "make_config", "Run", "Model", "check_data", "export_model",
                                         "compress_model")} | {"RunConfig": "tunelab.config.run"}
__all__ = ["Model", "Run", "RunConfig", "__version__", "check_data", "compress_model", "errors", "export_model", "load",
           "make_config", "train"]

if TYPE_CHECKING:
    from tunelab.api import Model, Run, check_data, compress_model, export_model, load, make_config, train
    from tunelab.config.run import RunConfig


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'tunelab' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The lazy names too: a REPL's or notebook's completion of `tunelab.` lists the API."""
    return sorted(set(globals()) | set(__all__))
