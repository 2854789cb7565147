"""Every fine-tuning method as data: one frozen :class:`MethodSpec` per method, registered by name.

In the spirit of peft's ``tuners/`` registry (``register_peft_method``): what a method *is* (does it train a
LoRA adapter, which tensors get a KSS mask, its defaults, the PEFT arguments it sets) is declared here once;
code asks the spec instead of comparing names. Adding a method is one :func:`register_method` call.

| name           | adapter                               | mask                                      |
|----------------|---------------------------------------|-------------------------------------------|
| lora           | PEFT LoRA, scale α/r                   | none                                      |
| rslora         | PEFT LoRA, scale α/√r (use_rslora)     | none                                      |
| lora-dropout   | PEFT LoRA with lora_dropout (def. 0.1) | none                                      |
| dora           | PEFT DoRA (use_dora)                   | none                                      |
| kss            | PEFT LoRA, lora_alpha = γ·r            | Bernoulli(1−ρ) on LoRA tensors            |
| childtuning-f  | none: full fine-tuning                 | Bernoulli(1−ρ) on every trainable tensor  |
| full-ft        | none: full fine-tuning                 | none                                      |

Torch-free, so the config layer validates method blocks without loading a model library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError
from .kss.config import MASK_MODES, PRESETS, KSSConfig

MASK_TARGETS = ("none", "lora", "trainable")
"""What a method's KSS mask acts on: nothing, the LoRA A/B tensors, or every trainable tensor."""
ALPHA_CONVENTIONS = ("rank", "sqrt-rank")
"""How PEFT turns lora_alpha into the update scale γ: α / r (plain LoRA) or α / √r (rsLoRA)."""
LORA_ONLY_MASK_MODES = ("rank",)
"""Mask modes that drop LoRA rank components, so they need a mask on LoRA tensors."""


@dataclass(frozen=True)
class MethodSpec:
    """What one fine-tuning method is: its adapter, its mask and its defaults."""

    name: str
    summary: str
    uses_lora: bool
    masks: str = "none"
    default_sparsity: float = 0.0
    default_dropout: float = 0.0
    use_rslora: bool = False
    use_dora: bool = False
    alpha_convention: str = "rank"

    def __post_init__(self) -> None:
        # A spec is written by hand once; catch an inconsistent one at import, not in the middle of a run.
        if self.masks not in MASK_TARGETS:
            raise ValueError(f"{self.name}: masks must be one of {MASK_TARGETS}, got {self.masks!r}")
        if self.alpha_convention not in ALPHA_CONVENTIONS:
            raise ValueError(f"{self.name}: alpha_convention must be one of {ALPHA_CONVENTIONS}")
        if self.masks == "lora" and not self.uses_lora:
            raise ValueError(f"{self.name}: a mask on LoRA tensors needs uses_lora")
        if self.masks == "none" and self.default_sparsity:
            raise ValueError(f"{self.name}: a method without a mask has no sparsity")
        if not self.uses_lora and (self.use_rslora or self.use_dora or self.default_dropout):
            raise ValueError(f"{self.name}: PEFT arguments need uses_lora")
        if self.use_rslora != (self.alpha_convention == "sqrt-rank"):  # PEFT scales by α/√r exactly under rsLoRA
            raise ValueError(f"{self.name}: use_rslora and alpha_convention='sqrt-rank' go together")

    @property
    def masked(self) -> bool:
        """Whether the method applies a KSS mask at all (at a sparsity above zero)."""
        return self.masks != "none"

    @property
    def mask_modes(self) -> tuple[str, ...]:
        """The KSS mask modes this method can use: rank modes need LoRA rank components to drop."""
        if self.masks == "trainable":
            return tuple(m for m in MASK_MODES if m not in LORA_ONLY_MASK_MODES)
        return MASK_MODES  # unmasked methods ignore the mode

    def alpha_divisor(self, rank: int) -> float:
        """γ = lora_alpha / divisor: r for LoRA, √r for rsLoRA."""
        return math.sqrt(rank) if self.alpha_convention == "sqrt-rank" else float(rank)

    def lora_alpha(self, gamma: float, rank: int) -> float:
        """The PEFT ``lora_alpha`` that gives update scale γ at this rank."""
        return gamma * self.alpha_divisor(rank)


METHOD_SPECS: dict[str, MethodSpec] = {}
"""Registered methods by name, in registration order."""


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add a method to :data:`METHOD_SPECS`; a name already taken (or a KSS preset's name) is an error."""
    if spec.name in METHOD_SPECS or spec.name in PRESETS:
        raise ValueError(f"method {spec.name!r} is already registered")
    METHOD_SPECS[spec.name] = spec
    return spec


register_method(MethodSpec("lora", "PEFT LoRA, scale α/r", uses_lora=True))
register_method(
    MethodSpec("rslora", "PEFT LoRA, scale α/√r", uses_lora=True, use_rslora=True, alpha_convention="sqrt-rank")
)
register_method(MethodSpec("lora-dropout", "PEFT LoRA with input dropout", uses_lora=True, default_dropout=0.1))
register_method(MethodSpec("dora", "PEFT DoRA", uses_lora=True, use_dora=True))
register_method(
    MethodSpec(
        "kss",
        "PEFT LoRA, lora_alpha = γ·r, Bernoulli(1−ρ) mask on LoRA tensors",
        uses_lora=True,
        masks="lora",
        default_sparsity=KSSConfig().sparsity,
    )
)
register_method(
    MethodSpec(
        "childtuning-f",
        "full fine-tuning, Bernoulli(1−ρ) mask on every trainable tensor",
        uses_lora=False,
        masks="trainable",
        default_sparsity=0.3,
    )
)
register_method(MethodSpec("full-ft", "full fine-tuning", uses_lora=False))


def method_names() -> tuple[str, ...]:
    return tuple(METHOD_SPECS)


def lora_method_names() -> tuple[str, ...]:
    return tuple(name for name, spec in METHOD_SPECS.items() if spec.uses_lora)


def masking_method_names() -> tuple[str, ...]:
    return tuple(name for name, spec in METHOD_SPECS.items() if spec.masked)


def get_method_spec(name: str, field: str = "method.name") -> MethodSpec:
    """The spec of a method name; a KSS preset name stands for ``kss``. Unknown names are a ConfigError."""
    spec = METHOD_SPECS.get("kss" if name in PRESETS else name)
    if spec is None:
        allowed = ", ".join(method_names() + tuple(PRESETS))
        raise ConfigError(field, f"unknown method {name!r}; allowed: {allowed}")
    return spec


def recorded_uses_lora(name: object) -> bool:
    """Whether a method name read back from a run record trains a LoRA adapter.

    Records are read, not validated: a name this version does not know (an older or newer method) is
    taken as LoRA, as the analyses always did, rather than failing a whole table.
    """
    spec = METHOD_SPECS.get("kss" if name in PRESETS else str(name))
    return True if spec is None else spec.uses_lora
