"""Low-precision emulation (FP8 E4M3/E5M2, FP4 E2M1) as pure torch functions, runnable on CPU.

Layers, bottom up:
- :mod:`.formats`: :class:`FloatFormat`, :data:`FORMATS`, :func:`get_format`, :func:`quantize` (raw cast).
- :mod:`.scaling`: :func:`fake_quant` with none / per-tensor amax / MX or NVFP4 block scaling.
- :mod:`.ste`: :func:`fake_quant_ste` (straight-through) and :func:`quantize_grad` (gradient only).
- :mod:`.config`: :class:`EmulationConfig`, validated, with help strings.
- :mod:`.emulate`: :func:`apply_emulation` on a model's Linear layers (PEFT LoRA aware), reversible.
- :mod:`.diagnostics`: :func:`underflow_stats`, :func:`gamma_sweep`.
- :mod:`.probe`: :func:`probe_run` (statistics per layer and tensor over real training steps, the gamma
  sweep of the LoRA update, :func:`merge_loss`); :mod:`.report` writes its tables and plot; ``kss precision``
  (:mod:`.cli`) puts both behind the command line. :mod:`.experiment` / :mod:`.verdict`: the shipped
  precision experiment (precision conditions x methods x seeds) and its report.

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
from kss_lora.precision.probe import ProbeResult, TensorProbe, merge_loss, probe_run
from kss_lora.precision.scaling import BLOCK_FORMATS, SCALING_MODES, QuantSpec, apply_spec, fake_quant
from kss_lora.precision.ste import FakeQuant, QuantizeGrad, fake_quant_ste, quantize_grad

__all__ = [
    "BLOCK_FORMATS",
    "FORMATS",
    "ROUNDING_MODES",
    "SCALING_MODES",
    "TensorProbe",
    "EmulationConfig",
    "EmulationHandle",
    "FakeQuant",
    "FloatFormat",
    "ProbeResult",
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
    "merge_loss",
    "probe_run",
    "representable_values",
    "underflow_stats",
]
