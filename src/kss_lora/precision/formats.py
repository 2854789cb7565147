"""Small floating-point formats (FP8 E4M3 / E5M2, FP4 E2M1) and an exact emulated cast to them.

Why emulate instead of calling ``x.to(torch.float8_e4m3fn)``: the experiments in docs/spec.md §3 need
(a) FP4, which torch cannot cast to elementwise, (b) saturation and stochastic rounding, which the
native cast does not offer, and (c) to run on CPU for any dtype. The emulation works from the format's
bit layout (exponent bits, mantissa bits, bias), so one code path serves every format, and it agrees
bit for bit with torch's native FP8 casts inside the representable range (the tests check this).

A "fake-quantized" tensor keeps its original dtype; it simply holds only values the small format can
represent. Scaling (per tensor or per block) lives in :mod:`kss_lora.precision.scaling`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

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


def exp2_int(k: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Exact ``2**k`` for an integer tensor ``k`` inside the normal range of ``dtype``.

    Built from the bit pattern because ``torch.pow(2, k)`` / ``torch.ldexp`` may go through a
    vectorised ``pow`` that is not guaranteed exact, and exactness is the whole point here.
    """
    if dtype == torch.float64:
        return ((k.to(torch.int64) + 1023) << 52).view(torch.float64)
    return ((k.to(torch.int32) + 127) << 23).view(torch.float32)


def work_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64 (no double rounding); every other float dtype is computed in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def quantize(
    x: torch.Tensor,
    fmt: str | FloatFormat,
    *,
    rounding: str = "nearest",
    generator: torch.Generator | None = None,
    saturate: bool = True,
) -> torch.Tensor:
    """Fake-quantize ``x`` to ``fmt`` (no scaling): return the nearest representable values, same dtype.

    - ``rounding="nearest"``: round to nearest, ties to even (matches torch's FP8 casts bit for bit).
    - ``rounding="stochastic"``: round up with probability equal to the distance to the lower
      neighbour in units of the spacing, so ``E[quantize(x)] == x`` for in-range ``x``. Draws from
      ``generator`` (seeded generator -> reproducible); the generator may live on another device.
    - Subnormals are kept; magnitudes below half the smallest subnormal flush to (signed) zero.
    - Overflow (the rounded magnitude exceeds ``max_value``) and infinite inputs: ``saturate=True``
      clamps to ``±max_value`` (the usual "saturated cast" of FP8 training). ``saturate=False`` gives
      ``±inf`` for formats with inf (E5M2) and NaN otherwise (E4M3FN's only special; E2M1 has no
      encoding for it, NaN there marks an invalid value).
    - NaN stays NaN.

    Computed in float32 (float64 for float64 inputs); bf16/fp16 inputs are exact in float32, and all
    values of these formats are exact in bf16/fp16, so the result is cast back without loss.
    """
    fmt = get_format(fmt)
    check_rounding(rounding)
    if not x.is_floating_point():
        raise TypeError(f"quantize expects a floating-point tensor, got {x.dtype}")
    wd = work_dtype(x)
    xf = x.to(wd)
    if rounding == "nearest" and saturate:
        return _quantize_nearest_saturating(xf, fmt).to(x.dtype)
    finite = torch.isfinite(xf)
    a = torch.where(finite, xf.abs(), torch.zeros((), dtype=wd, device=x.device))

    # a = m * 2**e with m in [0.5, 1), so floor(log2(a)) = e - 1. Below the normal range the spacing
    # stays that of the smallest binade, which is exactly what gives subnormals.
    _, e = torch.frexp(a)
    exp = torch.clamp(e.to(torch.int32) - 1, min=fmt.min_exponent)
    ulp_exp = exp - fmt.man_bits
    scaled = a * exp2_int(-ulp_exp, wd)  # exact: multiplication by a power of two, result < 2**(m+1)
    if rounding == "nearest":
        r = torch.round(scaled)  # round-half-to-even
    else:
        floor = torch.floor(scaled)
        dev = generator.device if generator is not None else x.device
        u = torch.rand(scaled.shape, generator=generator, dtype=wd, device=dev).to(x.device)
        r = floor + (u < scaled - floor).to(wd)
    q = r * exp2_int(ulp_exp, wd)

    overflow = (q > fmt.max_value) | torch.isinf(xf)
    if saturate:
        over_value = fmt.max_value
    else:
        over_value = math.inf if fmt.has_inf else math.nan
    q = torch.where(overflow, torch.full_like(q, over_value), q)
    q = torch.copysign(q, xf)
    q = torch.where(torch.isnan(xf), xf, q)
    return q.to(x.dtype)


def _quantize_nearest_saturating(xf: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """The common case of :func:`quantize` (nearest, saturating) in a handful of cheap elementwise ops.

    Why a second path: emulated training quantizes every activation, weight and gradient, and the
    general path's ``frexp``/``where``/``isfinite`` passes made an emulated run several times slower than
    the matmuls it wraps. Here rounding is done by the hardware's own round-to-nearest-even addition:
    with ``p`` the power of two of ``|x|``'s binade (read off the float's exponent bits) and
    ``C = max(p, min_normal) * 2**(t - man_bits)`` (``t`` = mantissa bits of the work dtype), the sum
    ``|x| + C`` lies in ``C``'s binade, whose spacing is exactly the target format's spacing at ``|x|``
    (``min_subnormal`` below the normal range), so ``(|x| + C) - C`` is ``|x|`` rounded to the format,
    ties to even. Clamping to ``max_value`` first gives the saturating overflow (and maps inf to max);
    NaN propagates through every op. Tests check it agrees bit for bit with the general path.
    """
    if xf.dtype == torch.float64:
        int_dtype, exp_mask, t = torch.int64, 0x7FF0000000000000, 52
    else:
        int_dtype, exp_mask, t = torch.int32, 0x7F800000, 23
    a = xf.abs().clamp(max=fmt.max_value)
    p = (a.view(int_dtype) & exp_mask).view(xf.dtype)
    c = p.clamp(min=fmt.min_normal) * 2.0 ** (t - fmt.man_bits)
    q = (a + c) - c
    return torch.copysign(q, xf)


def representable_values(fmt: str | FloatFormat) -> torch.Tensor:
    """All non-negative finite values of ``fmt`` in increasing order (float64), for tests and plots."""
    fmt = get_format(fmt)
    vals = [0.0]
    vals += [k * fmt.min_subnormal for k in range(1, 2**fmt.man_bits)]
    e = fmt.min_exponent
    while True:
        binade = [2.0**e * (1 + k / 2**fmt.man_bits) for k in range(2**fmt.man_bits)]
        vals += [v for v in binade if v <= fmt.max_value]
        if binade[-1] >= fmt.max_value:
            break
        e += 1
    return torch.tensor(vals, dtype=torch.float64)
