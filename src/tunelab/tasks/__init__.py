"""The tasks: one module each, registering a `Task` subclass in `TASKS`. Importing this package imports every
task module (a new module here is a new task)."""

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
