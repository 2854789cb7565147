"""KSS-LoRA in a plain PyTorch loop: one extra call, ``attach_kss``, after the optimizer is built.

Run: python examples/plain_pytorch_loop.py   (a tiny random BERT on a toy task, a few seconds on CPU)
"""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model
from transformers import BertConfig, BertForSequenceClassification

from kss_lora import KSSConfig, attach_kss


def train(steps: int = 20, seed: int = 0, kss: KSSConfig | None = None) -> list[float]:
    torch.manual_seed(seed)
    base = BertForSequenceClassification(
        BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    )
    kss = kss or KSSConfig.from_preset("kss-default", seed=seed)
    rank = 8
    # γ lives in the adapter as lora_alpha = γ·r: the saved adapter is plain PEFT.
    model = get_peft_model(
        base, LoraConfig(task_type="SEQ_CLS", r=rank, lora_alpha=kss.lora_alpha(rank), target_modules=["query", "value"])
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    masker = attach_kss(model, optimizer, kss)  # masks LoRA gradients inside optimizer.step()

    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 100, (64, 12), generator=gen)
    y = (x[:, 0] % 2).long()  # label = parity of the first token
    losses = []
    for step in range(steps):
        idx = torch.arange(step * 16, step * 16 + 16) % 64
        loss = torch.nn.functional.cross_entropy(model(input_ids=x[idx]).logits, y[idx])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    masker.detach()
    return losses


if __name__ == "__main__":
    losses = train()
    print(f"first loss {losses[0]:.4f}  last loss {losses[-1]:.4f}")
