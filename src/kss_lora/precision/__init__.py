"""Low-precision emulation (FP8 E4M3/E5M2, FP4 E2M1) as pure torch functions, runnable on CPU.

Layers, bottom up:
- :mod:`.catalog`: the formats and modes by name and :class:`QuantSpec`, torch-free (config validation).
- :mod:`.formats`: :class:`FloatFormat`, :data:`FORMATS`, :func:`get_format`, :func:`quantize` (raw cast).
- :mod:`.scaling`: :func:`fake_quant` with none / per-tensor amax / MX or NVFP4 block scaling.
- :mod:`.ste`: :func:`fake_quant_ste` (straight-through) and :func:`quantize_grad` (gradient only).
- :mod:`.config`: :class:`EmulationConfig`, validated, with help strings; torch-free.
- :mod:`.emulate`: :func:`apply_emulation` on a model's Linear layers (PEFT LoRA aware), reversible.
- :mod:`.diagnostics`: :func:`underflow_stats`, :func:`gamma_sweep`.
- :mod:`.runtime` / :mod:`.fp8`: what the runner asks of a run's precision (torchao FP8, emulation, autocast).

This package sits below the runner. What trains runs and judges them (the probe, the shipped precision
experiment, its verdicts and report, ``kss precision``) sits above it, in :mod:`kss_lora.precision_lab`.

Real FP8 training on Hopper GPUs goes through torchao instead; this package is the CPU emulation.

Names are imported lazily, so ``kss_lora.precision.config`` (and the run config) loads without torch.
"""

from importlib import import_module
from typing import Any

_WHERE = {
    "EmulationConfig": ".config",
    "gamma_sweep": ".diagnostics",
    "underflow_stats": ".diagnostics",
    "EmulationHandle": ".emulate",
    "apply_emulation": ".emulate",
    "module_role": ".emulate",
    "FORMATS": ".catalog",
    "ROUNDING_MODES": ".catalog",
    "FloatFormat": ".catalog",
    "get_format": ".catalog",
    "quantize": ".formats",
    "representable_values": ".formats",
    "BLOCK_FORMATS": ".catalog",
    "SCALING_MODES": ".catalog",
    "QuantSpec": ".catalog",
    "apply_spec": ".scaling",
    "fake_quant": ".scaling",
    "FakeQuant": ".ste",
    "QuantizeGrad": ".ste",
    "fake_quant_ste": ".ste",
    "quantize_grad": ".ste",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
