"""Model cards, the built-in model registry and the packaged model files."""

from photosift.models.registry import ModelCard, ResolvedModel, list_models, resolve_model

__all__ = ["ModelCard", "ResolvedModel", "list_models", "resolve_model"]
