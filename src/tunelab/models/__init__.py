"""Model names → local directories: the embedded alias table, GGUF materialisation, hub ids."""

from tunelab.models.aliases import ALIASES, resolve_model

__all__ = ["ALIASES", "resolve_model"]
