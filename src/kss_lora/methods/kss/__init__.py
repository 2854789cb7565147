"""KSS-LoRA: LoRA with stochastic sparse gradient masking and an explicit update scale γ.

Names are imported lazily: :mod:`.config` is torch-free (the config layer uses it), :mod:`.masking` is not.
"""

from importlib import import_module
from typing import Any

_WHERE = {
    "KSS_CONFIG_NAME": ".config",
    "MASK_MODES": ".config",
    "PRESETS": ".config",
    "KSSConfig": ".config",
    "check_mask_mode": ".config",
    "KSSMasker": ".masking",
    "attach_kss": ".masking",
    "keep_mask": ".masking",
    "lora_parameters": ".masking",
    "mask_seed": ".masking",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
