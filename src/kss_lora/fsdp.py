"""FSDP2 (``torch.distributed.fsdp.fully_shard``): sharded parameters for data-parallel runs.

What the runner needs to train under FSDP2 and still compute exactly what one process computes:

- :func:`shard_model` wraps each transformer block (the model's ``_no_split_modules``, or the profile's
  ``fsdp_transformer_layer_cls_to_wrap``) and then the root. Parameter names do not change (FSDP2 keeps
  fully-qualified names), so KSS masks — a function of (seed, step, name) — are the single-process masks.
- The runner divides each rank's loss sum by the *global* batch size, so gradients must be **summed**
  across ranks: every unit's gradient divide factor is set to 1 (FSDP2 would average by default).
- Gradients arrive as sharded DTensors; :func:`local_part` cuts this rank's shard out of a full-size KSS
  mask, so every rank masks its shard with the matching part of the same mask (see ``methods/kss/masking``).
- :func:`full_trainable_state` gathers the (small) trainable tensors on every rank for saving a plain
  PEFT adapter; the frozen base model is never gathered.

Options come from the accelerate profile (``fsdp_config``) or, when the user runs ``accelerate launch``
with an FSDP config themselves, from the ``FSDP_*`` variables accelerate exports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import ConfigError


@dataclass(frozen=True)
class FSDPOptions:
    """The parts of an accelerate FSDP profile that ``kss run`` honours."""

    reshard_after_forward: bool = True
    offload_params: bool = False
    layer_classes: tuple[str, ...] = ()  # empty: the model's own _no_split_modules

    @classmethod
    def from_profile(cls, fsdp_config: dict[str, Any]) -> FSDPOptions:
        version = int(fsdp_config.get("fsdp_version", 1))
        if version != 2:
            raise ConfigError(
                "launcher.profile", f"fsdp_version {version} is not supported; set fsdp_version: 2 (FSDP2)"
            )
        classes = fsdp_config.get("fsdp_transformer_layer_cls_to_wrap") or ()
        if isinstance(classes, str):
            classes = tuple(c.strip() for c in classes.split(",") if c.strip())
        return cls(
            reshard_after_forward=_bool(fsdp_config.get("fsdp_reshard_after_forward", True)),
            offload_params=_bool(fsdp_config.get("fsdp_offload_params", False)),
            layer_classes=tuple(classes),
        )

    @classmethod
    def from_accelerate_env(cls) -> FSDPOptions | None:
        """Options from ``accelerate launch`` with an FSDP config (None when accelerate did not ask for FSDP)."""
        env = os.environ
        if env.get("ACCELERATE_USE_FSDP", "").lower() != "true":
            return None
        return cls.from_profile(
            {
                "fsdp_version": env.get("FSDP_VERSION", "1"),
                "fsdp_reshard_after_forward": env.get("FSDP_RESHARD_AFTER_FORWARD", "true"),
                "fsdp_offload_params": env.get("FSDP_OFFLOAD_PARAMS", "false"),
                "fsdp_transformer_layer_cls_to_wrap": env.get("FSDP_TRANSFORMER_CLS_TO_WRAP", ""),
            }
        )


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def block_classes(model: nn.Module, wanted: tuple[str, ...] = ()) -> set[str]:
    """Class names of the modules that become FSDP units (transformer blocks)."""
    if wanted:
        return set(wanted)
    for module in model.modules():  # the PEFT wrapper has none; the HF model inside does
        names = getattr(module, "_no_split_modules", None)
        if names:
            return set(names)
    return set()


def shard_model(model: nn.Module, world_size: int, device: torch.device, options: FSDPOptions) -> nn.Module:
    """Shard ``model`` in place over a 1-D mesh of ``world_size`` ranks; returns it (now an FSDPModule)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world_size,))
    kwargs: dict[str, Any] = {
        "mesh": mesh,
        "reshard_after_forward": options.reshard_after_forward,
        "offload_policy": CPUOffloadPolicy() if options.offload_params else OffloadPolicy(),
    }
    classes = block_classes(model, options.layer_classes)
    blocks = [m for m in model.modules() if type(m).__name__ in classes]
    if options.layer_classes and not blocks:
        raise ConfigError(
            "launcher.profile", f"fsdp_transformer_layer_cls_to_wrap {sorted(classes)} matches no module of this model"
        )
    for block in reversed(blocks):  # inner blocks before the blocks that contain them, as FSDP2 requires
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    sum_gradients(model)
    return model


def sum_gradients(model: nn.Module) -> None:
    """Make every FSDP unit *sum* gradients over ranks instead of averaging them (FSDP2's default).

    The runner already scales each rank's loss by 1/(global batch), as in the DDP path. The factor is per
    unit (not inherited from the root), and plain SUM also works on gloo, which has no PREMUL_SUM.
    """
    from torch.distributed.fsdp import FSDPModule

    for unit in model.modules():
        if isinstance(unit, FSDPModule):
            unit.set_gradient_divide_factor(1.0)
            unit.set_force_sum_reduction_for_comms(True)


def is_sharded(tensor: Any) -> bool:
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor itself, or this rank's shard of a sharded (FSDP2) tensor (a view: in-place changes stick)."""
    return tensor.to_local() if is_sharded(tensor) else tensor


def local_part(full: torch.Tensor, like: Any) -> torch.Tensor:
    """This rank's part of ``full`` (a tensor of ``like``'s global shape), laid out as ``like``'s shard.

    Local only (``src_data_rank=None``): every rank holds the same ``full``, so nothing is communicated.
    """
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full, like.device_mesh, like.placements, src_data_rank=None).to_local()


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor, gathered from every rank's shard (a collective: call it on every rank)."""
    return tensor.full_tensor() if is_sharded(tensor) else tensor


def full_trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable tensor, whole and on CPU, by state-dict name (collective: every rank calls it)."""
    return {name: full_tensor(p.detach()).cpu() for name, p in model.named_parameters() if p.requires_grad}


def resident_parameter_mb(model: nn.Module) -> float:
    """Megabytes of parameters this rank holds at rest: its shards under FSDP2, everything otherwise."""
    total = 0
    for p in model.parameters():
        local = local_tensor(p)
        total += local.numel() * local.element_size()
    return round(total / 2**20, 3)
