"""The method registry: how a model is trained (which parameters, which adapters)."""

from tunelab.methods.base import Method
from tunelab.registry import Registry

METHODS: Registry[Method] = Registry("method")

__all__ = ["METHODS", "Method"]
