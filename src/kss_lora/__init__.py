"""kss-lora: LoRA fine-tuning that generalises, and honest measurement of whether it does.

Public API (the method)::

    from kss_lora import KSSConfig, attach_kss, KSSCallback
    kss = KSSConfig.from_preset("kss-default")          # ρ = 0.10, γ = 1.0
    lora = LoraConfig(r=8, lora_alpha=kss.lora_alpha(8), ...)
    masker = attach_kss(peft_model, optimizer, kss)      # plain PyTorch loop
    Trainer(..., callbacks=[KSSCallback(kss)])           # HF Trainer / TRL

    model, tokenizer, label_names = load_run_model("runs/quickstart/<run>")   # use what a run trained

The lab (``kss run``, ``kss sweep``, ``kss report``) lives behind the ``kss`` command. The method's names
are imported lazily, so ``import kss_lora.noise`` or ``kss_lora.dynamics`` does not pay for torch.
"""

from importlib import import_module
from typing import Any

from .errors import ConfigError, DataError, KSSError

__version__ = "0.1.0"
__all__ = [
    "PRESETS",
    "ConfigError",
    "DataError",
    "KSSCallback",
    "KSSConfig",
    "KSSError",
    "KSSMasker",
    "attach_kss",
    "load_run_model",
]

_LAZY = {
    "PRESETS": ".methods.kss.config",
    "KSSConfig": ".methods.kss.config",
    "KSSMasker": ".methods.kss.masking",
    "attach_kss": ".methods.kss.masking",
    "KSSCallback": ".methods.kss.callback",  # imports transformers
    "load_run_model": ".predict",  # a trained run's (model, tokenizer, label names)
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'kss_lora' has no attribute {name!r}")
