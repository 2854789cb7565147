"""Measure what a low-precision cast does to a tensor: underflow, saturation, error, and the role of gamma.

Why: the published claims' "Gamma theorem" says the LoRA scale gamma must exceed ``2**-(b-4)`` at b bits or the
update underflows. Whether gamma matters depends on the scaling mode, and docs/spec.md §3 asks us to
measure it rather than assume it. :func:`gamma_sweep` multiplies a tensor by each gamma and reports
the statistics under each scaling mode, so the claim can be checked on real LoRA updates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from kss_lora.precision.formats import FloatFormat, get_format, quantize
from kss_lora.precision.scaling import QuantSpec, apply_spec, scale_tensor


def underflow_stats(
    x: torch.Tensor,
    fmt: str | FloatFormat,
    *,
    scaling: str = "none",
    block_format: str = "mx",
    block_size: int | None = None,
    two_level: bool = True,
) -> dict[str, Any]:
    """Statistics of fake-quantizing ``x`` (round to nearest, saturating) to ``fmt``.

    Returns a dict with
    - ``count``: finite elements; ``nonzero``: finite nonzero elements;
    - ``underflow_frac``: fraction of the nonzero elements that quantize to zero (the update is lost);
    - ``subnormal_frac``: fraction of nonzero elements whose scaled magnitude is below the smallest
      normal (kept, but with reduced relative precision);
    - ``saturate_frac``: fraction of finite elements whose scaled value would round beyond
      ``max_value`` without the clamp (with MX this happens by design for E4M3: the block max is
      scaled into [256, 512) and values above 464 clamp to 448);
    - ``rel_error``: ``||q(x) - x|| / ||x||`` over finite elements (0 for an all-zero tensor).
    """
    spec = QuantSpec(get_format(fmt), scaling, block_format, block_size, two_level=two_level)
    xf = x.detach().to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    finite = torch.isfinite(xf)
    nonzero = finite & (xf != 0)
    q = apply_spec(xf, spec)

    x_scaled, _, pad = scale_tensor(xf, spec)
    if scaling == "block":
        x_scaled = x_scaled.reshape(*x_scaled.shape[:-2], -1)
        if pad:
            x_scaled = x_scaled[..., : x_scaled.shape[-1] - pad]
        x_scaled = x_scaled.reshape(xf.shape)
    mag = x_scaled.abs()
    # Saturated = the clamp changed the result: without it the rounded value would overflow. Comparing
    # |x_scaled| > max directly would count the amax element itself under tensor scaling whenever
    # float32 rounding of the scale puts it a hair above max, although it still rounds to max.
    overflow = ~torch.isfinite(quantize(x_scaled, spec.fmt, saturate=False))

    n_finite = int(finite.sum())
    n_nonzero = int(nonzero.sum())
    diff = torch.where(finite, q - xf, torch.zeros_like(xf))
    norm = torch.linalg.vector_norm(torch.where(finite, xf, torch.zeros_like(xf)))
    return {
        "format": spec.fmt.name,
        "scaling": scaling if scaling != "block" else f"block-{block_format}",
        "count": n_finite,
        "nonzero": n_nonzero,
        "underflow_frac": _frac(nonzero & (q == 0), n_nonzero),
        "subnormal_frac": _frac(nonzero & (mag < spec.fmt.min_normal), n_nonzero),
        "saturate_frac": _frac(finite & overflow, n_finite),
        "rel_error": float(torch.linalg.vector_norm(diff) / norm) if norm > 0 else 0.0,
    }


def _frac(mask: torch.Tensor, denom: int) -> float:
    return float(mask.sum()) / denom if denom else 0.0


def gamma_sweep(
    x: torch.Tensor,
    fmt: str | FloatFormat,
    gammas: Iterable[float],
    scalings: Sequence[str] = ("none", "tensor"),
    *,
    block_format: str = "mx",
    block_size: int | None = None,
) -> list[dict[str, Any]]:
    """One row of :func:`underflow_stats` per (gamma, scaling) for the tensor ``gamma * x``.

    Under raw casting (``none``) the underflow fraction falls as gamma grows. Under ``tensor`` scaling
    it is invariant up to float32 rounding of the scale. Under MX block scaling it is exactly
    invariant for power-of-two gammas; other gammas move the block maximum within its binade, which
    shifts the power-of-two scale and can change a few borderline elements.
    """
    rows = []
    for gamma in gammas:
        scaled = x * gamma
        for scaling in scalings:
            row = {"gamma": float(gamma)}
            row.update(underflow_stats(scaled, fmt, scaling=scaling, block_format=block_format, block_size=block_size))
            rows.append(row)
    return rows
