"""Low-precision emulation (FP8 E4M3/E5M2, FP4 E2M1) as pure torch functions, runnable on CPU.

Layers, bottom up:
- :mod:`.formats`: :class:`FloatFormat`, :data:`FORMATS`, :func:`get_format`, :func:`quantize` (raw cast).
- :mod:`.scaling`: :func:`fake_quant` with none / per-tensor amax / MX or NVFP4 block scaling.
- :mod:`.ste`: :func:`fake_quant_ste` (straight-through) and :func:`quantize_grad` (gradient only).
- :mod:`.config`: :class:`EmulationConfig`, validated, with help strings.
- :mod:`.emulate`: :func:`apply_emulation` on a model's Linear layers (PEFT LoRA aware), reversible.
- :mod:`.diagnostics`: :func:`underflow_stats`, :func:`gamma_sweep`.
- :mod:`.runtime` / :mod:`.fp8`: what the runner asks of a run's precision (torchao FP8, emulation, autocast).

This package sits below the runner. What trains runs and judges them (the probe, the shipped precision
experiment, its verdicts and report, ``kss precision``) sits above it, in :mod:`kss_lora.precision_lab`.

Real FP8 training on Hopper GPUs goes through torchao instead; this package is the CPU emulation.
"""

from kss_lora.precision.config import EmulationConfig
from kss_lora.precision.diagnostics import gamma_sweep, underflow_stats
from kss_lora.precision.emulate import EmulationHandle, apply_emulation, module_role
from kss_lora.precision.formats import (
    FORMATS,
    ROUNDING_MODES,
    FloatFormat,
    get_format,
    quantize,
    representable_values,
)
from kss_lora.precision.scaling import BLOCK_FORMATS, SCALING_MODES, QuantSpec, apply_spec, fake_quant
from kss_lora.precision.ste import FakeQuant, QuantizeGrad, fake_quant_ste, quantize_grad

__all__ = [
    "BLOCK_FORMATS",
    "FORMATS",
    "ROUNDING_MODES",
    "SCALING_MODES",
    "EmulationConfig",
    "EmulationHandle",
    "FakeQuant",
    "FloatFormat",
    "QuantSpec",
    "QuantizeGrad",
    "apply_emulation",
    "apply_spec",
    "fake_quant",
    "fake_quant_ste",
    "gamma_sweep",
    "get_format",
    "module_role",
    "quantize",
    "quantize_grad",
    "representable_values",
    "underflow_stats",
]
