"""kss-lora: LoRA fine-tuning that generalises, and honest measurement of whether it does."""

__version__ = "0.1.0"
