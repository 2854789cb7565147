"""kss-lora: LoRA fine-tuning that generalises, and honest measurement of whether it does.

Public API (the method)::

    from kss_lora import KSSConfig, attach_kss, KSSCallback
    kss = KSSConfig.from_preset("kss-default")          # ρ = 0.10, γ = 1.0
    lora = LoraConfig(r=8, lora_alpha=kss.lora_alpha(8), ...)
    masker = attach_kss(peft_model, optimizer, kss)      # plain PyTorch loop
    Trainer(..., callbacks=[KSSCallback(kss)])           # HF Trainer / TRL

The lab (``kss run``, ``kss sweep``, ``kss report``) lives behind the ``kss`` command.
"""

from typing import Any

from .errors import ConfigError, DataError, KSSError
from .methods.kss import PRESETS, KSSConfig, KSSMasker, attach_kss

__version__ = "0.1.0"
__all__ = ["PRESETS", "ConfigError", "DataError", "KSSCallback", "KSSConfig", "KSSError", "KSSMasker", "attach_kss"]


def __getattr__(name: str) -> Any:
    if name == "KSSCallback":  # imports transformers: only when asked for
        from .methods.kss.callback import KSSCallback

        return KSSCallback
    raise AttributeError(f"module 'kss_lora' has no attribute {name!r}")
