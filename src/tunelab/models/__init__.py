"""Model names → local directories: the embedded alias table, GGUF materialisation, hub ids."""

from tunelab.models.aliases import ALIASES, load_named, resolve_model

__all__ = ["ALIASES", "load_named", "resolve_model"]
