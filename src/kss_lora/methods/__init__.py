"""Fine-tuning methods: KSS-LoRA (``methods/kss``) and its baselines (``registry``)."""

from .registry import (
    METHODS,
    ResolvedMethod,
    default_targets,
    masked_parameters,
    resolve_method,
    validate_method,
    wrap_model,
)

__all__ = [
    "METHODS",
    "ResolvedMethod",
    "default_targets",
    "masked_parameters",
    "resolve_method",
    "validate_method",
    "wrap_model",
]
