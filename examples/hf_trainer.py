"""KSS-LoRA inside Hugging Face ``Trainer``: add ``KSSCallback`` to the callbacks, nothing else changes.

Run: python examples/hf_trainer.py   (a tiny random BERT on a toy task, a few seconds on CPU)
"""

from __future__ import annotations

import tempfile

import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from kss_lora import KSSCallback, KSSConfig


def build_trainer(kss: KSSConfig, *, output_dir: str, max_steps: int = 10, optim: str = "adamw_torch") -> Trainer:
    torch.manual_seed(kss.seed)
    base = BertForSequenceClassification(
        BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    )
    rank = 8
    model = get_peft_model(
        base, LoraConfig(task_type="SEQ_CLS", r=rank, lora_alpha=kss.lora_alpha(rank), target_modules=["query", "value"])
    )
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 100, (64, 12), generator=gen)
    data = Dataset.from_dict({"input_ids": x.tolist(), "labels": (x[:, 0] % 2).tolist()})
    args = TrainingArguments(
        output_dir=output_dir, max_steps=max_steps, per_device_train_batch_size=16, learning_rate=1e-2,
        optim=optim, report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, seed=kss.seed,
    )
    return Trainer(model=model, args=args, train_dataset=data, callbacks=[KSSCallback(kss)])


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(KSSConfig.from_preset("kss-default"), output_dir=tmp)
        out = trainer.train()
        print(f"trained {out.global_step} steps, mean train loss {out.training_loss:.4f}")
        trainer.model.save_pretrained(f"{tmp}/adapter")  # a plain PEFT adapter
