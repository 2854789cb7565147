"""Real FP8 training of the base model's linear layers through ``torchao.float8``.

On Hopper/Ada GPUs this runs real FP8 matmuls; elsewhere torchao's emulation runs the same code path in
higher precision (``emulate=True``), which is how it is tested on CPU.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError


def require_torchao() -> Any:
    from ..optional_imports import allow_torchao

    allow_torchao()  # the kss command keeps it off the default path (kss_lora.optional_imports)
    try:
        import torchao  # noqa: F401
        from torchao.float8 import convert_to_float8_training
    except ImportError:
        raise ConfigError("precision.mode", "fp8 needs torchao: pip install 'kss-lora[fp8]'") from None
    return convert_to_float8_training


def fp8_eligible(module: nn.Module, fqn: str) -> bool:
    """torchao's FP8 matmuls need both dims divisible by 16; classification heads stay in high precision."""
    if not isinstance(module, nn.Linear):
        return False
    out_f, in_f = module.weight.shape
    return out_f % 16 == 0 and in_f % 16 == 0 and not any(k in fqn for k in ("classifier", "score", "lm_head"))


def has_native_fp8(device: torch.device) -> bool:
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device) >= (8, 9)


def convert_base_to_float8(base: nn.Module, *, device: torch.device) -> nn.Module:
    convert = require_torchao()
    from torchao.float8 import Float8LinearConfig

    config = Float8LinearConfig(emulate=not has_native_fp8(device))
    return convert(base, module_filter_fn=fp8_eligible, config=config)
