"""KSS-LoRA inside Hugging Face ``Trainer`` (and TRL's trainers, which subclass it).

Usage::

    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=kss.lora_alpha(8), ...))
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[KSSCallback(kss)])

The callback attaches the masker to the optimizer that Trainer creates, at ``on_train_begin``; the mask
is applied inside ``optimizer.step()``, after Trainer's gradient clipping, exactly as in our runner.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from .config import KSSConfig
from .masking import KSSMasker, attach_kss


class KSSCallback(TrainerCallback):
    def __init__(self, config: KSSConfig):
        self.config = config
        self.masker: KSSMasker | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None, **kw: Any):
        if model is None or optimizer is None:
            raise RuntimeError("KSSCallback needs Trainer to pass the model and optimizer to callbacks")
        # Accelerate wraps the torch optimizer; its step() calls the inner one, where the hooks live.
        inner = getattr(optimizer, "optimizer", optimizer)
        self.masker = attach_kss(model, inner, self.config, start_step=state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any):
        if self.masker is not None:
            self.masker.detach()
