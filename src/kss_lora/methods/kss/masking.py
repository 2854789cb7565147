"""The KSS-LoRA core: deterministic Bernoulli masks applied at the optimizer step.

For every trainable LoRA tensor P, at every optimizer step::

    g = ∇P L;   M ~ Bernoulli(1 − ρ) elementwise;   ĝ = M ⊙ g / (1 − ρ)      (E[ĝ] = g)

The mask is drawn from a generator seeded by a hash of (seed, optimizer step, parameter name), so it is
the same on every data-parallel rank, reproducible, and independent of gradient accumulation (the step
counter only moves when the optimizer steps).

Hooks are registered on the optimizer itself (``register_step_pre_hook``/``register_step_post_hook``), so
the same code runs in our runner, in a plain PyTorch loop and inside HF ``Trainer``/Accelerate, whose
wrappers call the underlying ``optimizer.step()``. Gradient clipping, when used, happens before the mask.

Under FSDP2 parameters and gradients are sharded DTensors: the mask is still drawn at the parameter's full
shape, and each rank applies its own part of it to its shard, so the masks are those of one process.

How a mask is drawn, cheaply enough for 8B-scale adapters, is in :mod:`.draw`: 16-bit uniform draws per tensor
(ρ at a resolution of 2⁻¹⁶, rescaled by the exact 1 / P(keep)), applied to CPU gradients in numpy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from ...fsdp import is_sharded, local_part, local_tensor
from .config import KSSConfig
from .draw import (
    cpu_fast_path,
    device_fast_path,
    keep_from_draws,
    keep_scale,
    mask_cpu_gradients,
    mask_device_gradients,
    mask_seed,
    uniform16,
)


def keep_mask(
    shape: torch.Size | tuple[int, ...], *, sparsity: float, seed: int, step: int, name: str, device: torch.device
) -> torch.Tensor:
    """Boolean mask, True where the entry is kept (probability 1 − ρ, ρ at a resolution of 2⁻¹⁶)."""
    draws = uniform16(math.prod(shape), mask_seed(seed, step, name), torch.device(device))
    return keep_from_draws(draws, sparsity).view(shape)


def _local_mask(keep: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A full-size mask, cut to ``like``'s shard when ``like`` is sharded (the same cut on every call)."""
    return local_part(keep, like) if is_sharded(like) else keep


def lora_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Trainable LoRA tensors (``lora_A``/``lora_B``) of a PEFT model, by name. Heads are not masked."""
    return {
        name: p for name, p in model.named_parameters() if p.requires_grad and ("lora_A" in name or "lora_B" in name)
    }


class KSSMasker:
    """Applies KSS masks to named parameters at each step of an optimizer.

    ``grad``: rescaled Bernoulli mask on gradients, just before the optimizer update.
    ``update``: the same, and masked entries are restored after the update, so they do not move at all
    (Adam's moments and weight decay would otherwise still move them).
    ``rank``: DropConnect on rank components in the forward pass (see :meth:`attach_rank_dropout`).
    """

    def __init__(self, params: dict[str, nn.Parameter], config: KSSConfig, *, start_step: int = 0):
        self.params = params
        self.config = config
        self.step = start_step
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._frozen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # -- masks -------------------------------------------------------------------------------------
    def keep(self, name: str, shape: tuple[int, ...] | torch.Size, device: torch.device) -> torch.Tensor:
        c = self.config
        return keep_mask(shape, sparsity=c.sparsity, seed=c.seed, step=self.step, name=name, device=device)

    @property
    def active(self) -> bool:
        return self.config.sparsity > 0.0

    # -- optimizer hooks ---------------------------------------------------------------------------
    def attach(self, optimizer: torch.optim.Optimizer) -> KSSMasker:
        """Hook into ``optimizer.step()``. With ρ = 0 nothing but the step counter is hooked."""
        if self.active and self.config.mask_mode in ("grad", "update"):
            self._handles.append(optimizer.register_step_pre_hook(self._before_step))
        self._handles.append(optimizer.register_step_post_hook(self._after_step))
        return self

    def _before_step(self, optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        c = self.config
        update = c.mask_mode == "update"
        done: set[str] = set()
        # whole CPU gradients: masked in numpy, tensor by tensor; whole accelerator gradients: one foreach multiply
        for applies, mask_all in ((cpu_fast_path, mask_cpu_gradients), (device_fast_path, mask_device_gradients)):
            batch = {n: p for n, p in self.params.items() if p.grad is not None and n not in done and applies(p.grad)}
            if not batch:
                continue
            seeds = [mask_seed(c.seed, self.step, name) for name in batch]
            keeps = mask_all([p.grad for p in batch.values()], seeds, c.sparsity, want_keep=update)
            if update:
                for (name, p), keep in zip(batch.items(), keeps, strict=True):
                    self._frozen[name] = (keep, p.detach()[~keep].clone())
            done.update(batch)
        scale = keep_scale(c.sparsity)
        for name, p in self.params.items():  # the rest (sharded, bf16, strided): mask by mask
            if p.grad is None or name in done:
                continue
            keep = _local_mask(self.keep(name, p.shape, p.device), p.grad)
            local_tensor(p.grad).masked_fill_(~keep, 0.0).mul_(scale)
            if update:
                self._frozen[name] = (keep, local_tensor(p.detach())[~keep].clone())

    def _after_step(self, optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        with torch.no_grad():
            for name, (keep, values) in self._frozen.items():
                local_tensor(self.params[name].detach())[~keep] = values
        self._frozen.clear()
        self.step += 1

    # -- rank mode ---------------------------------------------------------------------------------
    def attach_rank_dropout(self, model: nn.Module) -> KSSMasker:
        """DropConnect on rank components: ΔW = γ/(1−ρ) · B diag(m) A, m ~ Bernoulli(1−ρ)^r.

        Implemented as a forward pre-hook on each ``lora_B`` linear that scales its input (the rank-r output
        of ``lora_A``) by m/(1−ρ). Only in training mode: eval passes and merged weights see no mask.
        """
        if not self.active:
            return self
        for name, module in model.named_modules():
            if ".lora_B." in f"{name}." and isinstance(module, nn.Linear):
                self._handles.append(module.register_forward_pre_hook(self._rank_hook(name)))
        return self

    def _rank_hook(self, name: str):  # noqa: ANN202 - a closure per module
        scale = keep_scale(self.config.sparsity)

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...] | None:
            if not module.training:
                return None
            (x, *rest) = inputs
            keep = self.keep(name, (x.shape[-1],), x.device).to(x.dtype) * scale
            return (x * keep, *rest)

        return hook

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def attach_kss(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: KSSConfig,
    *,
    params: dict[str, nn.Parameter] | None = None,
    start_step: int = 0,
) -> KSSMasker:
    """Attach KSS masking to a PEFT LoRA model's optimizer (one call in any training loop).

    The model must already carry a LoRA adapter with ``lora_alpha = config.lora_alpha(r)``; pass ``params``
    to mask other tensors (ChildTuning-F masks every trainable parameter of a full fine-tune).
    """
    masker = KSSMasker(params if params is not None else lora_parameters(model), config, start_step=start_step)
    if not masker.params:
        raise ValueError("attach_kss: the model has no trainable LoRA parameters (lora_A / lora_B)")
    masker.attach(optimizer)
    if config.mask_mode == "rank":
        masker.attach_rank_dropout(model)
    return masker


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def count(params: Iterable[nn.Parameter]) -> int:
    return sum(p.numel() for p in params)
