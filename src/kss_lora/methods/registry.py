"""Putting a method on a model: the PEFT wrapper and the tensors a KSS mask acts on.

What each method is (adapter, mask, defaults, PEFT arguments) is data in :mod:`.specs`; presets and defaults
are applied in :mod:`.resolve`. This module holds the torch side: :func:`wrap_model`, :func:`masked_parameters`
and the per-architecture default target modules.
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from .kss.masking import lora_parameters, trainable_parameters
from .resolve import ResolvedMethod, resolve_method, validate_method
from .specs import lora_method_names, method_names

# Kept under their old names for callers that import them from here (derived from the method table).
METHODS = method_names()
LORA_METHODS = lora_method_names()

__all__ = [
    "DEFAULT_TARGETS",
    "LORA_METHODS",
    "METHODS",
    "ResolvedMethod",
    "default_targets",
    "masked_parameters",
    "resolve_method",
    "validate_method",
    "wrap_model",
]

# Modules adapted when the config names none: attention query/value for encoders (Hu et al.; Steele's
# protocol), q/k/v/o for decoders. Other architectures fall back to PEFT's own per-model defaults.
DEFAULT_TARGETS = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
}


def default_targets(model: nn.Module) -> list[str] | None:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return DEFAULT_TARGETS.get(model_type)


def wrap_model(model: nn.Module, method: ResolvedMethod, *, task_type: str) -> nn.Module:
    """Return the model to train: a PEFT model for LoRA methods, the model itself for full fine-tuning."""
    spec = method.spec
    if not spec.uses_lora:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    targets = method.target_modules or default_targets(model)
    lora_config = LoraConfig(
        task_type=task_type,
        r=method.rank,
        lora_alpha=method.lora_alpha,
        lora_dropout=method.dropout,
        target_modules=targets,
        use_rslora=spec.use_rslora,
        use_dora=spec.use_dora,
    )
    try:
        return get_peft_model(model, lora_config)
    except ValueError as exc:  # e.g. target modules not found in the model
        raise ConfigError("method.target_modules", str(exc).splitlines()[0]) from None


def masked_parameters(model: nn.Module, method: ResolvedMethod) -> dict[str, nn.Parameter]:
    """The tensors a KSS mask acts on, as the method's spec says: LoRA A/B, or everything trainable."""
    if method.spec.masks == "trainable":
        return trainable_parameters(model)
    return lora_parameters(model)
