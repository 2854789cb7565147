"""KSS in other people's loops: a plain PyTorch loop and Hugging Face Trainer (examples/)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from kss_lora import KSSConfig  # noqa: E402
from kss_lora.methods.kss import keep_mask, lora_parameters  # noqa: E402


def test_plain_loop_example_is_reproducible_and_masked():
    import plain_pytorch_loop

    a = plain_pytorch_loop.train(steps=6, seed=1)
    b = plain_pytorch_loop.train(steps=6, seed=1)
    dense = plain_pytorch_loop.train(steps=6, seed=1, kss=KSSConfig(sparsity=0.0, gamma=1.0, seed=1))
    assert a == b
    assert a[0] == dense[0] and a[1:] != dense[1:]  # same start, masking changes the trajectory


def test_hf_trainer_callback_masks_inside_optimizer_step(tmp_path):
    import hf_trainer

    kss = KSSConfig(sparsity=0.5, mask_mode="update", seed=7)
    trainer = hf_trainer.build_trainer(kss, output_dir=str(tmp_path), max_steps=1, optim="sgd")
    with torch.no_grad():  # nonzero B so every LoRA tensor gets a gradient in step 0
        for name, p in lora_parameters(trainer.model).items():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    before = {n: p.detach().clone() for n, p in lora_parameters(trainer.model).items()}
    trainer.train()
    callback = next(cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == "KSSCallback")
    assert callback.masker.step == 1
    for name, p in lora_parameters(trainer.model).items():
        keep = keep_mask(p.shape, sparsity=0.5, seed=7, step=0, name=name, device=p.device)
        assert torch.equal(p.detach()[~keep], before[name][~keep]), name  # masked: frozen this step
        assert not torch.equal(p.detach()[keep], before[name][keep]), name  # kept: moved
    frac_kept = np.mean(
        [
            keep_mask(p.shape, sparsity=0.5, seed=7, step=0, name=n, device=p.device).float().mean().item()
            for n, p in lora_parameters(trainer.model).items()
        ]
    )
    assert 0.4 < frac_kept < 0.6
