"""Every fine-tuning method by name: how it wraps a model and which tensors (if any) get a KSS mask.

| name           | adapter                               | mask                                      |
|----------------|---------------------------------------|-------------------------------------------|
| lora           | PEFT LoRA, scale α/r                   | none                                      |
| rslora         | PEFT LoRA, scale α/√r (use_rslora)     | none                                      |
| lora-dropout   | PEFT LoRA with lora_dropout (def. 0.1) | none                                      |
| dora           | PEFT DoRA (use_dora)                   | none                                      |
| kss            | PEFT LoRA, lora_alpha = γ·r            | Bernoulli(1−ρ) on LoRA tensors            |
| childtuning-f  | none: full fine-tuning                 | Bernoulli(1−ρ) on every trainable tensor  |
| full-ft        | none: full fine-tuning                 | none                                      |

A KSS preset name (``standard``, ``kss-default``, ...) is also accepted as a method name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError
from .kss.config import MASK_MODES, PRESETS, KSSConfig
from .kss.masking import lora_parameters, trainable_parameters

METHODS = ("lora", "rslora", "lora-dropout", "dora", "kss", "childtuning-f", "full-ft")
LORA_METHODS = ("lora", "rslora", "lora-dropout", "dora", "kss")
DEFAULT_CHILDTUNING_SPARSITY = 0.3

# Modules adapted when the config names none: attention query/value for encoders (Hu et al.; Steele's
# protocol), q/k/v/o for decoders. Other architectures fall back to PEFT's own per-model defaults.
DEFAULT_TARGETS = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
}


@dataclass(frozen=True)
class ResolvedMethod:
    """A method config with presets and defaults applied: what will actually be trained."""

    name: str
    preset: str | None
    rank: int
    gamma: float
    sparsity: float
    mask_mode: str
    dropout: float
    target_modules: list[str] | None

    @property
    def uses_lora(self) -> bool:
        return self.name in LORA_METHODS

    @property
    def lora_alpha(self) -> float:
        return self.gamma * (math.sqrt(self.rank) if self.name == "rslora" else self.rank)

    @property
    def masked(self) -> bool:
        return self.name in ("kss", "childtuning-f") and self.sparsity > 0.0

    def kss_config(self, seed: int) -> KSSConfig | None:
        if self.name not in ("kss", "childtuning-f"):
            return None
        return KSSConfig(sparsity=self.sparsity, gamma=self.gamma, mask_mode=self.mask_mode, seed=seed)

    def label(self) -> str:
        return self.preset or self.name


def resolve_method(cfg: object) -> ResolvedMethod:
    """Apply presets and defaults to a ``MethodConfig`` (or anything with the same attributes)."""
    name, preset = cfg.name, cfg.preset
    if name in PRESETS:  # `method.name: kss-default` is shorthand for kss + preset
        if preset not in (None, name):
            raise ConfigError("method.preset", f"conflicts with method.name={name!r}")
        name, preset = "kss", name
    if name not in METHODS:
        allowed = ", ".join(METHODS + tuple(PRESETS))
        raise ConfigError("method.name", f"unknown method {cfg.name!r}; allowed: {allowed}")
    if preset is not None:
        if name != "kss":
            raise ConfigError("method.preset", f"presets apply to method kss only, not {name!r}")
        if preset not in PRESETS:
            raise ConfigError("method.preset", f"unknown preset {preset!r}; allowed: {', '.join(PRESETS)}")
    if cfg.rank < 1:
        raise ConfigError("method.rank", f"must be an integer >= 1, got {cfg.rank}")
    if cfg.gamma is not None and cfg.alpha is not None:
        raise ConfigError("method.gamma", "give either method.gamma or method.alpha, not both")

    base = PRESETS[preset] if preset else None
    if cfg.gamma is not None:
        gamma = cfg.gamma
    elif cfg.alpha is not None:
        gamma = cfg.alpha / (math.sqrt(cfg.rank) if name == "rslora" else cfg.rank)
    else:
        gamma = base.gamma if base else 1.0
    if not gamma > 0:
        raise ConfigError("method.gamma", f"must be > 0, got {gamma}")

    if cfg.sparsity is not None:
        sparsity = cfg.sparsity
    elif base is not None:
        sparsity = base.sparsity
    else:
        sparsity = {"kss": KSSConfig().sparsity, "childtuning-f": DEFAULT_CHILDTUNING_SPARSITY}.get(name, 0.0)
    if not 0.0 <= sparsity < 1.0:
        raise ConfigError("method.sparsity", f"must be in [0, 1), got {sparsity}")
    if sparsity > 0 and name not in ("kss", "childtuning-f"):
        raise ConfigError("method.sparsity", f"only kss and childtuning-f mask gradients, not {name!r}")
    if cfg.mask_mode not in MASK_MODES:
        raise ConfigError("method.mask_mode", f"unknown value {cfg.mask_mode!r}; allowed: {', '.join(MASK_MODES)}")
    if name == "childtuning-f" and cfg.mask_mode == "rank":
        raise ConfigError("method.mask_mode", "rank mode needs LoRA rank components; use grad or update")

    dropout = cfg.dropout if cfg.dropout is not None else (0.1 if name == "lora-dropout" else 0.0)
    if not 0.0 <= dropout < 1.0:
        raise ConfigError("method.dropout", f"must be in [0, 1), got {dropout}")
    return ResolvedMethod(name, preset, cfg.rank, gamma, sparsity, cfg.mask_mode, dropout, cfg.target_modules)


def validate_method(cfg: object) -> None:
    resolve_method(cfg)


def default_targets(model: nn.Module) -> list[str] | None:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return DEFAULT_TARGETS.get(model_type)


def wrap_model(model: nn.Module, method: ResolvedMethod, *, task_type: str) -> nn.Module:
    """Return the model to train: a PEFT model for LoRA methods, the model itself for full fine-tuning."""
    if not method.uses_lora:
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
        use_rslora=method.name == "rslora",
        use_dora=method.name == "dora",
    )
    try:
        return get_peft_model(model, lora_config)
    except ValueError as exc:  # e.g. target modules not found in the model
        raise ConfigError("method.target_modules", str(exc).splitlines()[0]) from None


def masked_parameters(model: nn.Module, method: ResolvedMethod) -> dict[str, nn.Parameter]:
    """The tensors a KSS mask acts on: LoRA A/B for kss, everything trainable for childtuning-f."""
    if method.name == "childtuning-f":
        return trainable_parameters(model)
    return lora_parameters(model)
