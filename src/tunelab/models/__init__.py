"""Model names → local directories: the embedded alias table, GGUF materialisation, hub ids."""

from tunelab.models.aliases import ALIASES, check_model_name, resolve_model

__all__ = ["ALIASES", "check_model_name", "resolve_model"]
