"""The `tunelab` command line: a thin typer shell over the library. `common` holds the app; each module registers
its commands on import, in the order `tunelab --help` lists them: `train` (train, tune, cv, curve, compare,
baseline), `model` (eval, predict, chat, export), `info` (models, env, schema, report, data check / augment),
`config_import` (config import)."""

# isort: off
from tunelab.cli import train  # noqa: F401 - imported for its command registrations
from tunelab.cli import model  # noqa: F401
from tunelab.cli import info  # noqa: F401
from tunelab.cli import serve  # noqa: F401
from tunelab.cli import ui  # noqa: F401
from tunelab.cli import config_import  # noqa: F401
from tunelab.cli.common import app

# isort: on

__all__ = ["app"]
