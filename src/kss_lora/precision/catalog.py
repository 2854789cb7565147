"""The low-precision formats and modes by name: the torch-free half of :mod:`.formats` and :mod:`.scaling`.

:class:`FloatFormat` and :data:`FORMATS` (E4M3, E5M2, E2M1), the rounding, scaling and block-format names,
and :class:`QuantSpec` (one fake quantizer's settings) are plain data. They live here, without torch, so
that :class:`~kss_lora.precision.config.EmulationConfig`, and through it the run config's precision block,
validate without loading torch. :mod:`.formats` and :mod:`.scaling` re-export them next to the quantizers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kss_lora.errors import ConfigError

ROUNDING_MODES: tuple[str, ...] = ("nearest", "stochastic")


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format with an implicit leading 1, subnormals and round-to-nearest-even.

    ``max_value`` is stored explicitly rather than derived because formats differ in how they spend the
    top exponent: E4M3FN keeps it for finite values (only mantissa ``111`` is NaN, so max = 448), E5M2
    reserves it for inf/NaN like IEEE (max = 57344), E2M1 has no specials at all (max = 6).
    """

    name: str
    exp_bits: int
    man_bits: int
    bias: int
    max_value: float
    min_normal: float
    min_subnormal: float
    has_inf: bool

    def __post_init__(self) -> None:
        # Catch inconsistent hand-written specs early: the quantizer relies on these relations.
        if self.min_normal != 2.0**self.min_exponent:
            raise ValueError(f"{self.name}: min_normal must be 2^(1 - bias) = {2.0**self.min_exponent}")
        if self.min_subnormal != 2.0 ** (self.min_exponent - self.man_bits):
            raise ValueError(f"{self.name}: min_subnormal must be 2^(1 - bias - man_bits)")
        top = 2.0**self.emax * (2.0 - 2.0**-self.man_bits)
        if not (2.0**self.emax <= self.max_value <= top):
            raise ValueError(f"{self.name}: max_value {self.max_value} is not in the top binade")

    @property
    def min_exponent(self) -> int:
        """Unbiased exponent of the smallest normal number (also the exponent of subnormals)."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        """Unbiased exponent of the largest finite value: ``floor(log2(max_value))``.

        The OCP MX spec calls this ``emax_elem``; MX block scaling subtracts it from the block's
        exponent so the block maximum lands in the format's top binade.
        """
        return math.floor(math.log2(self.max_value))

    @property
    def bits(self) -> int:
        """Total storage bits (sign + exponent + mantissa)."""
        return 1 + self.exp_bits + self.man_bits


FORMATS: dict[str, FloatFormat] = {
    "e4m3": FloatFormat("e4m3", 4, 3, 7, 448.0, 2.0**-6, 2.0**-9, has_inf=False),
    "e5m2": FloatFormat("e5m2", 5, 2, 15, 57344.0, 2.0**-14, 2.0**-16, has_inf=True),
    "e2m1": FloatFormat("e2m1", 2, 1, 1, 6.0, 1.0, 0.5, has_inf=False),
}


def get_format(fmt: str | FloatFormat, field: str = "precision.format") -> FloatFormat:
    """Return the :class:`FloatFormat` for a name (or pass a FloatFormat through).

    ``field`` names the config field in the error so a user sees which setting is wrong.
    """
    if isinstance(fmt, FloatFormat):
        return fmt
    if isinstance(fmt, str) and fmt.lower() in FORMATS:
        return FORMATS[fmt.lower()]
    raise ConfigError(field, f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")


def check_rounding(rounding: str, field: str = "precision.rounding") -> None:
    """Raise :class:`ConfigError` unless ``rounding`` is one of :data:`ROUNDING_MODES`."""
    if rounding not in ROUNDING_MODES:
        raise ConfigError(field, f"unknown rounding {rounding!r}; allowed: {', '.join(ROUNDING_MODES)}")


SCALING_MODES: tuple[str, ...] = ("none", "tensor", "block")
BLOCK_FORMATS: tuple[str, ...] = ("mx", "nvfp4")
DEFAULT_BLOCK_SIZE: dict[str, int] = {"mx": 32, "nvfp4": 16}


@dataclass(frozen=True)
class QuantSpec:
    """Everything that defines one fake quantizer, bundled so hooks and autograd can carry it around.

    ``two_level`` only affects NVFP4: like NVIDIA's recipe, a float32 per-tensor scale first maps the
    tensor so that block scales use the E4M3 range (``amax_tensor / (fmt.max * 448)``); without it
    block scales of tiny tensors (e.g. gradients around 1e-6) underflow E4M3 and whole blocks vanish.
    """

    fmt: FloatFormat
    scaling: str = "none"
    block_format: str = "mx"
    block_size: int | None = None
    rounding: str = "nearest"
    saturate: bool = True
    two_level: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.fmt, FloatFormat):
            object.__setattr__(self, "fmt", get_format(self.fmt))
        if self.scaling not in SCALING_MODES:
            raise ConfigError(
                "precision.scaling", f"unknown scaling {self.scaling!r}; allowed: {', '.join(SCALING_MODES)}"
            )
        if self.block_format not in BLOCK_FORMATS:
            raise ConfigError(
                "precision.block_format",
                f"unknown block format {self.block_format!r}; allowed: {', '.join(BLOCK_FORMATS)}",
            )
        bs = self.block_size
        if bs is not None and (isinstance(bs, bool) or not isinstance(bs, int) or bs < 1):
            raise ConfigError("precision.block_size", f"must be a positive integer or null, got {bs!r}")
        check_rounding(self.rounding)

    @property
    def effective_block_size(self) -> int:
        """The block size in use: the explicit one, else 32 for MX and 16 for NVFP4."""
        return self.block_size if self.block_size is not None else DEFAULT_BLOCK_SIZE[self.block_format]
