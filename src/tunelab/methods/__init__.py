"""The methods: how a model is trained (which parameters, which adapters), one module each, registering a `Method`
subclass in `METHODS`. Importing this package imports every method module."""

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
