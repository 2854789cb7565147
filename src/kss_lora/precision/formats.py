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

import torch

# The formats by name live in the torch-free catalog (the config layer validates with them); re-exported here.
from kss_lora.precision.catalog import FORMATS, ROUNDING_MODES, FloatFormat, check_rounding, get_format

__all__ = [
    "FORMATS",
    "ROUNDING_MODES",
    "FloatFormat",
    "check_rounding",
    "exp2_int",
    "get_format",
    "quantize",
    "representable_values",
    "work_dtype",
]


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
