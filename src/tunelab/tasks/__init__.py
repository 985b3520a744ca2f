"""The tasks: one module each, registering a `Task` subclass in `TASKS`. Importing this package imports every
module (a task module registers itself; the others are its helpers: report parts, chat templates, losses)."""

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
