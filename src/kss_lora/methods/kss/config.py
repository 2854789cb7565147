"""KSS-LoRA settings: sparsity ρ, update scale γ, mask mode, seed; and the published claims' named presets.

Torch-free (the config layer validates method blocks with it).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import ConfigError

MASK_MODES = ("grad", "update", "rank")
KSS_CONFIG_NAME = "kss_config.json"


def check_mask_mode(mode: str, field: str = "mask_mode", allowed: tuple[str, ...] = MASK_MODES) -> None:
    """The one check of a mask mode: known at all, and usable by the method (``allowed``, a subset)."""
    if mode not in MASK_MODES:
        raise ConfigError(field, f"unknown value {mode!r}; allowed: {', '.join(MASK_MODES)}")
    if mode not in allowed:  # only rank is ever left out: it drops LoRA rank components
        raise ConfigError(field, f"{mode} mode needs LoRA rank components; use {' or '.join(allowed)}")


@dataclass(frozen=True)
class KSSConfig:
    """Stochastic sparse gradient masking on LoRA tensors, plus the LoRA update scale γ.

    γ is carried by the adapter itself as ``lora_alpha = γ · r`` (see :meth:`lora_alpha`), so the saved
    artefact is a plain PEFT LoRA adapter; the mask only acts during training.
    """

    sparsity: float = field(
        default=0.10, metadata={"help": "ρ: fraction of gradient entries dropped per step, in [0, 1)."}
    )
    gamma: float = field(default=1.0, metadata={"help": "γ > 0: LoRA update scale, h = W0 x + γ B A x."})
    mask_mode: str = field(
        default="grad",
        metadata={
            "help": "grad: mask gradients; update: also freeze masked entries that step; rank: DropConnect on rank."
        },
    )
    seed: int = field(default=0, metadata={"help": "Masks are a function of (seed, optimizer step, parameter name)."})

    def __post_init__(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise ConfigError("sparsity", f"must be in [0, 1), got {self.sparsity}")
        if not self.gamma > 0.0:
            raise ConfigError("gamma", f"must be > 0, got {self.gamma}")
        check_mask_mode(self.mask_mode)

    @classmethod
    def from_preset(cls, name: str, **overrides: object) -> KSSConfig:
        if name not in PRESETS:
            raise ConfigError("preset", f"unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)

    def lora_alpha(self, rank: int) -> float:
        """The PEFT ``lora_alpha`` that gives scale γ at this rank (PEFT scales by lora_alpha / r)."""
        return self.gamma * rank

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / KSS_CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> KSSConfig:
        data = json.loads((Path(directory) / KSS_CONFIG_NAME).read_text())
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


# The published claims' five configurations (docs/spec.md §1). `standard` is dense LoRA at γ = 0.5: the
# published claims' baseline.
PRESETS: dict[str, KSSConfig] = {
    "standard": KSSConfig(sparsity=0.0, gamma=0.5),
    "kss-default": KSSConfig(sparsity=0.10, gamma=1.0),
    "kss-highgamma": KSSConfig(sparsity=0.10, gamma=1.5),
    "kss-sparse": KSSConfig(sparsity=0.30, gamma=1.0),
    "kss-verysparse": KSSConfig(sparsity=0.50, gamma=1.0),
}
