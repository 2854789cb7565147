"""Scaled fake quantization: raw cast, per-tensor amax scaling, and MX / NVFP4 block scaling.

Why scaling matters for this project: the published claims state a "Gamma theorem" (the LoRA scale gamma
must be large enough or updates underflow at low precision). That is only true of *raw* casting. With amax
scaling the tensor is divided by a scale derived from its own maximum before the cast, so multiplying
the tensor by gamma multiplies the scale by gamma and the cast sees the same values. Block scaling
(MX, NVFP4) does the same per block of the last dimension, which also rescues tensors whose blocks
have very different magnitudes. :mod:`kss_lora.precision.diagnostics` measures all of this.

The scale itself is kept in high precision, except where the format prescribes otherwise:
MX uses a power-of-two (E8M0) scale, NVFP4 an E4M3-quantized scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The modes by name and QuantSpec live in the torch-free catalog (the config layer validates with them).
from kss_lora.precision.catalog import (
    BLOCK_FORMATS,
    DEFAULT_BLOCK_SIZE,
    FORMATS,
    SCALING_MODES,
    FloatFormat,
    QuantSpec,
    get_format,
)
from kss_lora.precision.formats import exp2_int, quantize, work_dtype

__all__ = [
    "BLOCK_FORMATS",
    "DEFAULT_BLOCK_SIZE",
    "SCALING_MODES",
    "QuantSpec",
    "apply_spec",
    "fake_quant",
    "scale_tensor",
]

# E8M0 can encode 2**-127 .. 2**127; 2**-127 is a float32 subnormal, so the emulation stops at 2**-126.
_E8M0_MIN_EXP, _E8M0_MAX_EXP = -126, 127


def _finite_abs(x: torch.Tensor) -> torch.Tensor:
    """|x| with NaN/inf replaced by 0, so one bad value does not poison a whole scale."""
    return torch.nan_to_num(x.abs(), nan=0.0, posinf=0.0)  # one pass; isfinite + where took three


def _to_blocks(x: torch.Tensor, block_size: int) -> tuple[torch.Tensor, int]:
    """Zero-pad the last dim to a multiple of ``block_size`` and reshape to ``(..., n_blocks, block)``.

    Zero padding never changes a block's amax, so padded blocks quantize like unpadded ones.
    """
    pad = (-x.shape[-1]) % block_size
    if pad:
        x = F.pad(x, (0, pad))
    return x.reshape(*x.shape[:-1], -1, block_size), pad


def scale_tensor(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Return ``(x_scaled, scale, pad)``: the values the element cast sees, and how to undo it.

    ``x_scaled`` is in the work dtype (float32/float64). For block scaling it has shape
    ``(..., n_blocks, block_size)`` with ``pad`` zeros appended to the last dim; ``scale`` broadcasts
    against it. Where a scale is zero (all-zero block, or an NVFP4 scale that underflowed E4M3) the
    scaled values are set to zero and the scale to one, so nothing divides by zero: zero blocks stay
    zero and never produce NaN. Exposed for :mod:`diagnostics`, which counts saturation on ``x_scaled``.
    """
    wd = work_dtype(x)
    xf = x.to(wd)
    fmt = spec.fmt
    one = torch.ones((), dtype=wd, device=x.device)
    if spec.scaling == "none":
        return xf, one, 0
    if spec.scaling == "tensor":
        amax = _finite_abs(xf).amax() if xf.numel() else one * 0
        scale = torch.where(amax > 0, amax / fmt.max_value, one)
        return xf / scale, scale, 0

    xb, pad = _to_blocks(xf if xf.dim() else xf.reshape(1), spec.effective_block_size)
    amax = _finite_abs(xb).amax(dim=-1, keepdim=True)
    if spec.block_format == "mx":
        # OCP MX v1.0: shared exponent = floor(log2(amax)) - emax_elem, stored as E8M0 (a power of two).
        _, e = torch.frexp(amax)
        shared = torch.clamp(e.to(torch.int32) - 1 - fmt.emax, _E8M0_MIN_EXP, _E8M0_MAX_EXP)
        scale = torch.where(amax > 0, exp2_int(shared, wd), one)
        return xb / scale, scale, pad

    # NVFP4: block scale = amax / fmt.max, stored in E4M3 (optionally relative to a float32 tensor scale).
    e4m3 = FORMATS["e4m3"]
    tensor_scale = one
    if spec.two_level:
        t_amax = amax.amax()
        tensor_scale = torch.where(t_amax > 0, t_amax / (fmt.max_value * e4m3.max_value), one)
    block_scale = quantize(amax / fmt.max_value / tensor_scale, e4m3) * tensor_scale
    alive = block_scale > 0
    scale = torch.where(alive, block_scale, one)
    x_scaled = torch.where(alive, xb / scale, torch.zeros((), dtype=wd, device=x.device))
    # NaN inputs stay visible even in a dead block.
    x_scaled = torch.where(torch.isnan(xb), xb, x_scaled)
    return x_scaled, scale, pad


def _from_blocks(y: torch.Tensor, like: torch.Tensor, pad: int) -> torch.Tensor:
    y = y.reshape(*y.shape[:-2], -1)
    if pad:
        y = y[..., : y.shape[-1] - pad]
    return y.reshape(like.shape)


def apply_spec(x: torch.Tensor, spec: QuantSpec, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fake-quantize ``x`` according to ``spec`` (scale, cast, unscale); same shape and dtype as ``x``."""
    if x.numel() == 0:
        return x.clone()
    x_scaled, scale, pad = scale_tensor(x, spec)
    q = quantize(x_scaled, spec.fmt, rounding=spec.rounding, generator=generator, saturate=spec.saturate)
    y = q * scale
    if spec.scaling == "block":
        y = _from_blocks(y, x, pad)
    return y.to(x.dtype)


def fake_quant(
    x: torch.Tensor,
    fmt: str | FloatFormat,
    *,
    scaling: str = "none",
    block_format: str = "mx",
    block_size: int | None = None,
    rounding: str = "nearest",
    generator: torch.Generator | None = None,
    saturate: bool = True,
    two_level: bool = True,
) -> torch.Tensor:
    """Fake-quantize ``x`` to ``fmt`` with the given scaling; returns a tensor of the same dtype.

    - ``scaling="none"``: raw cast, :func:`quantize` on ``x`` itself (the only mode where the absolute
      magnitude of ``x``, and thus the LoRA scale gamma, decides what underflows).
    - ``scaling="tensor"``: ``scale = amax / fmt.max_value`` (float32), cast ``x / scale``, multiply back.
    - ``scaling="block"``: blocks along the last dim. ``block_format="mx"``: 32 values, power-of-two
      scale ``2**(floor(log2(block_amax)) - emax_elem)`` (OCP MX); values above the format max after
      scaling saturate. ``block_format="nvfp4"``: 16 values, scale ``block_amax / fmt.max_value``
      quantized to E4M3 (``two_level`` adds NVIDIA's float32 per-tensor scale, see :class:`QuantSpec`).
      A last dim that is not a multiple of the block size is zero-padded internally.

    Not differentiable in a useful way (rounding has zero gradient); use :func:`fake_quant_ste` in models.
    """
    spec = QuantSpec(get_format(fmt), scaling, block_format, block_size, rounding, saturate, two_level)
    return apply_spec(x, spec, generator)
