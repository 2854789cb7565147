"""KSS-LoRA: LoRA with stochastic sparse gradient masking and an explicit update scale γ."""

from .config import KSS_CONFIG_NAME, MASK_MODES, PRESETS, KSSConfig
from .masking import KSSMasker, attach_kss, keep_mask, lora_parameters, mask_seed

__all__ = [
    "KSS_CONFIG_NAME",
    "MASK_MODES",
    "PRESETS",
    "KSSConfig",
    "KSSMasker",
    "attach_kss",
    "keep_mask",
    "lora_parameters",
    "mask_seed",
]
