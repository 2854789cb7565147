"""A method config with presets and defaults applied: :class:`ResolvedMethod`, built by :func:`resolve_method`.

Torch-free: ``MethodConfig.validate`` calls :func:`validate_method` at config load, before any model library
is imported. What a method is comes from its :class:`~kss_lora.methods.specs.MethodSpec`.
"""

from __future__ import annotations

import math
import re
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
    target_modules: list[str] | str | None
    """As PEFT takes it: module names, ``"all-linear"``, or a str regex matched against full module paths."""

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
    for field in ("gamma", "alpha", "sparsity", "dropout"):
        value = getattr(cfg, field)
        if value is not None and not math.isfinite(value):  # YAML .inf/.nan, overrides inf/nan
            raise ConfigError(f"method.{field}", f"must be a finite number, got {value}")

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
    targets = check_target_modules(cfg.target_modules)
    return ResolvedMethod(name, preset, cfg.rank, gamma, sparsity, cfg.mask_mode, dropout, targets)


ALL_LINEAR = "all-linear"
"""PEFT's keyword for every linear layer but the output head."""


def check_target_modules(targets: object) -> list[str] | str | None:
    """``method.target_modules`` as PEFT's ``LoraConfig`` takes it: None, a list of names, or a string.

    A string other than ``all-linear`` is a regular expression PEFT full-matches against each module's path;
    one that does not compile is refused here, at config load, not at model wrapping.
    """
    if targets is None:
        return None
    if isinstance(targets, str):
        if not targets:
            raise ConfigError("method.target_modules", "must not be empty: a list of names, all-linear or a regex")
        if targets != ALL_LINEAR:
            try:
                re.compile(targets)
            except re.error as exc:
                raise ConfigError(
                    "method.target_modules", f"{targets!r} is not a valid regular expression ({exc})"
                ) from None
        return targets
    if isinstance(targets, (list, tuple)) and targets and all(isinstance(t, str) and t for t in targets):
        return list(targets)
    raise ConfigError(
        "method.target_modules",
        f"must be a non-empty list of module names, {ALL_LINEAR!r} or a regular expression, got {targets!r}",
    )


def validate_method(cfg: object) -> None:
    resolve_method(cfg)
