"""A method config with presets and defaults applied: :class:`ResolvedMethod`, built by :func:`resolve_method`.

Torch-free: ``MethodConfig.validate`` calls :func:`validate_method` at config load, before any model library
is imported. What a method is comes from its :class:`~kss_lora.methods.specs.MethodSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from .kss.config import PRESETS, KSSConfig, check_mask_mode
from .specs import METHOD_SPECS, MethodSpec, get_method_spec, masking_method_names


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
    def spec(self) -> MethodSpec:
        return METHOD_SPECS[self.name]

    @property
    def uses_lora(self) -> bool:
        return self.spec.uses_lora

    @property
    def lora_alpha(self) -> float:
        return self.spec.lora_alpha(self.gamma, self.rank)

    @property
    def masked(self) -> bool:
        """Whether a KSS mask runs during training (a masking method at a sparsity above zero)."""
        return self.spec.masked and self.sparsity > 0.0

    def kss_config(self, seed: int) -> KSSConfig | None:
        """The masker's settings for a masking method (also at ρ = 0, e.g. ``standard``); None otherwise."""
        if not self.spec.masked:
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
    spec = get_method_spec(name)
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
        gamma = cfg.alpha / spec.alpha_divisor(cfg.rank)
    else:
        gamma = base.gamma if base else 1.0
    if not gamma > 0:
        raise ConfigError("method.gamma", f"must be > 0, got {gamma}")

    if cfg.sparsity is not None:
        sparsity = cfg.sparsity
    elif base is not None:
        sparsity = base.sparsity
    else:
        sparsity = spec.default_sparsity
    if not 0.0 <= sparsity < 1.0:
        raise ConfigError("method.sparsity", f"must be in [0, 1), got {sparsity}")
    if sparsity > 0 and not spec.masked:
        masking = " and ".join(masking_method_names())
        raise ConfigError("method.sparsity", f"only {masking} mask gradients, not {name!r}")
    check_mask_mode(cfg.mask_mode, "method.mask_mode", allowed=spec.mask_modes)

    dropout = cfg.dropout if cfg.dropout is not None else spec.default_dropout
    if not 0.0 <= dropout < 1.0:
        raise ConfigError("method.dropout", f"must be in [0, 1), got {dropout}")
    return ResolvedMethod(name, preset, cfg.rank, gamma, sparsity, cfg.mask_mode, dropout, cfg.target_modules)


def validate_method(cfg: object) -> None:
    resolve_method(cfg)
