"""Memory settings of the base model: storage dtype, gradient checkpointing, 4-bit quantization (QLoRA).

- ``model.dtype`` bfloat16/float16: the base weights are stored in that dtype; the trainable tensors stay float32
  (PEFT keeps LoRA weights in float32 over a half-precision base; the classification head is kept float32 here,
  and its input is cast up to it, so the loss and its gradients are computed in float32).
- ``train.gradient_checkpointing``: activations are recomputed in the backward pass (non-reentrant, which
  needs no input gradients; ``enable_input_require_grads`` is still set so PEFT's frozen embeddings never cut
  the graph).
- ``model.quantization: 4bit``: QLoRA (NF4 base through bitsandbytes, compute in bfloat16), causal-LM only,
  with bitsandbytes and a CUDA GPU; refused with one line everywhere else.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

HEAD_NAMES = ("classifier", "score")  # the sequence-classification heads of transformers' models


def check_quantization(cfg: Any) -> None:
    """Refuse ``model.quantization`` where it cannot work, before any model is loaded."""
    q = cfg.model.quantization
    if q is None:
        return
    if cfg.model.task != "causal-lm":
        raise ConfigError("model.quantization", f"4-bit QLoRA is for model.task causal-lm, not {cfg.model.task!r}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("model.quantization", "4bit needs the bitsandbytes package (pip install bitsandbytes)")
    if not torch.cuda.is_available() or cfg.train.device == "cpu":
        raise ConfigError("model.quantization", "4bit needs a CUDA GPU (bitsandbytes kernels); none is in use here")


def quantization_config() -> Any:
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def prepare_quantized(model: nn.Module, gradient_checkpointing: bool) -> nn.Module:
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )


def enable_gradient_checkpointing(model: nn.Module) -> nn.Module:
    if not getattr(model, "supports_gradient_checkpointing", False):
        name = type(model).__name__
        raise ConfigError("train.gradient_checkpointing", f"{name} does not support gradient checkpointing")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    return model


def half_base_float_head(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Store a classifier's body in ``dtype`` and keep its head float32, casting the head's input up to it."""
    if dtype == torch.float32:
        return model
    heads = [getattr(model, n) for n in HEAD_NAMES if isinstance(getattr(model, n, None), nn.Module)]
    if not heads:
        raise ConfigError("model.dtype", f"{type(model).__name__} has no classification head named {HEAD_NAMES}")
    model.to(dtype)
    for head in heads:
        head.float()
        head.register_forward_pre_hook(_cast_inputs_to_float32)
    return model


def _cast_inputs_to_float32(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)
