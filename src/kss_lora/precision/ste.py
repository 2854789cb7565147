"""Autograd wrappers: straight-through fake quantization and gradient-only quantization.

Why a straight-through estimator (STE): rounding has zero derivative almost everywhere, so a model
trained through a plain quantizer would get no gradient. Low-precision training keeps full-precision
"master" weights, computes the forward pass with their quantized copies, and applies the gradient to
the masters as if the quantizer were the identity. :func:`fake_quant_ste` does exactly that.

:func:`quantize_grad` is the other half of the usual FP8 recipe (E4M3 forward, E5M2 backward): the
forward value is untouched and the gradient flowing back through this point is fake-quantized,
emulating the low-precision ``grad_output`` that the backward GEMMs consume.
"""

from __future__ import annotations

from typing import Any

import torch

from kss_lora.precision.formats import FloatFormat, get_format
from kss_lora.precision.scaling import QuantSpec, apply_spec


class FakeQuant(torch.autograd.Function):
    """Forward: fake-quantize with a :class:`QuantSpec`. Backward: pass the gradient through unchanged."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, spec: QuantSpec, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return apply_spec(x, spec, generator)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        return grad_output, None, None


class QuantizeGrad(torch.autograd.Function):
    """Forward: identity. Backward: fake-quantize the incoming gradient with a :class:`QuantSpec`."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, spec: QuantSpec, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        ctx.spec = spec
        ctx.generator = generator
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        return apply_spec(grad_output, ctx.spec, ctx.generator), None, None


def _spec(fmt: str | FloatFormat | QuantSpec, options: dict[str, Any]) -> QuantSpec:
    if isinstance(fmt, QuantSpec):
        if options:
            raise TypeError("pass either a QuantSpec or a format with keyword options, not both")
        return fmt
    return QuantSpec(get_format(fmt), **options)


def fake_quant_ste(
    x: torch.Tensor,
    fmt: str | FloatFormat | QuantSpec,
    *,
    generator: torch.Generator | None = None,
    **options: Any,
) -> torch.Tensor:
    """:func:`~kss_lora.precision.scaling.fake_quant` with an identity gradient (straight-through).

    ``fmt`` is a format name / :class:`FloatFormat` plus the keyword options of ``fake_quant``
    (``scaling``, ``block_format``, ``block_size``, ``rounding``, ``saturate``, ``two_level``), or a
    ready :class:`QuantSpec`.
    """
    return FakeQuant.apply(x, _spec(fmt, options), generator)


def quantize_grad(
    x: torch.Tensor,
    fmt: str | FloatFormat | QuantSpec = "e5m2",
    *,
    generator: torch.Generator | None = None,
    **options: Any,
) -> torch.Tensor:
    """Return ``x`` unchanged; in backward, fake-quantize the gradient w.r.t. ``x`` to ``fmt``.

    Same arguments as :func:`fake_quant_ste`; the default format is E5M2, the usual gradient format
    (wider range, less precision than E4M3).
    """
    return QuantizeGrad.apply(x, _spec(fmt, options), generator)
