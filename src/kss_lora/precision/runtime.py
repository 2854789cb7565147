"""Precision of a training run: the three points where the runner asks for it.

- :meth:`PrecisionRuntime.before_adapters`: real FP8 (``torchao``) converts the base model's linear layers
  *before* LoRA is injected (torchao's known LoRA issue: converting afterwards swaps PEFT's wrappers).
- :meth:`PrecisionRuntime.after_adapters`: emulated FP8/FP4 (``emu-fp8``/``emu-fp4``) fake-quantizes the
  chosen tensors of the finished model (base and LoRA layers), on any device.
- :meth:`PrecisionRuntime.autocast`: bf16 autocast for ``bf16`` and ``fp8`` (torchao's recipe keeps the
  non-linear ops in bf16); for emulation only with ``emulation.compute_dtype: bfloat16`` (the default,
  float32, measures the format alone, not bf16); a no-op for fp32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

# The mode defaults and emulation_config live with EmulationConfig (torch-free); re-exported for callers here.
from .config import EMULATION_DEFAULTS, emulation_config

__all__ = ["EMULATION_DEFAULTS", "PrecisionRuntime", "emulation_config"]


class PrecisionRuntime:
    def __init__(self, precision: Any, device: torch.device):
        self.precision = precision
        self.mode: str = precision.mode
        self.device = device
        self.handle: Any = None

    def before_adapters(self, base: nn.Module) -> nn.Module:
        if self.mode != "fp8":
            return base
        from .fp8 import convert_base_to_float8

        return convert_base_to_float8(base, device=self.device)

    def after_adapters(self, model: nn.Module) -> nn.Module:
        if self.mode.startswith("emu-"):
            from .emulate import apply_emulation

            self.handle = apply_emulation(model, emulation_config(self.precision))
        return model

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.mode in ("bf16", "fp8") or (self.handle is not None and self.handle.config.compute_dtype == "bfloat16"):
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                yield
        else:
            yield
