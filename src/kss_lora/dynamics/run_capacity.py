"""A run's LoRA capacity ``sum r(d + k - r)`` against its training-set size (``kss dynamics`` prints it).

The adapted matrices' shapes come from a weightless (meta-device) copy of the run's model, built from its
config through the one model map in :mod:`kss_lora.models`.
"""

from __future__ import annotations

import math
from typing import Any

from kss_lora.errors import ConfigError

from .capacity import lora_capacity, lora_target_shapes
from .runs import RunInfo

__all__ = ["run_capacity"]


def _skeleton(run: RunInfo, *, trust_remote_code: bool = False) -> Any:
    """The run's base model with no weights (meta device): enough to read the adapted matrices' shapes.

    ``trust_remote_code`` comes from the analysing command's own flag, never from the run's config.yaml:
    analysing someone else's run directory must not run code it names.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from ..models import model_config

    # Tiny models get the default vocabulary: its size does not change the attention shapes.
    config = model_config(str(run.get("model.name")), trust_remote_code=trust_remote_code)
    classification = run.get("model.task", "classification") == "classification"
    if classification:
        config.num_labels = int(run.dynamics.arrays["ckpt_logits"].shape[-1])
    auto = AutoModelForSequenceClassification if classification else AutoModelForCausalLM
    with torch.device("meta"):
        return auto.from_config(config)


def run_capacity(run: RunInfo, *, trust_remote_code: bool = False) -> dict[str, Any]:
    """LoRA capacity ``sum r(d + k - r)`` over the run's adapted matrices vs its training-set size.

    The shapes come from a weightless (meta-device) copy of the model built from its config, so this costs
    a second, not a model load. Full fine-tuning has no rank bound: ``capacity`` is then None.
    """
    n_train = len(run.dynamics.labels)
    out: dict[str, Any] = {
        "method": run.method,
        "n_train": n_train,
        "capacity": None,
        "rank": None,
        "matrices": 0,
        "line": "",
    }
    if not run.uses_lora:
        out["line"] = (
            f"LoRA capacity: n/a ({run.get('method.name')} updates full matrices, no rank bound); "
            f"{n_train} training examples"
        )
        return out
    rank = int(run.get("method.rank", 8))
    try:
        model = _skeleton(run, trust_remote_code=trust_remote_code)
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

        from ..methods import default_targets

        targets = (
            run.get("method.target_modules")
            or default_targets(model)
            or PEFT_TARGETS.get(getattr(model.config, "model_type", ""))
        )
        if not targets:
            raise ConfigError("method.target_modules", "unknown for this architecture")
        shapes = lora_target_shapes(model, target_modules=targets if isinstance(targets, str) else list(targets))
    except Exception as exc:  # capacity is a side note: never fail the table for it
        out["line"] = f"LoRA capacity: unavailable ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        return out
    cap = lora_capacity(shapes.values(), rank)
    binds = "exceeds" if n_train > cap else "is below"
    out.update(
        capacity=cap,
        rank=rank,
        matrices=len(shapes),
        targets=targets if isinstance(targets, str) else list(targets),
        ratio=cap / n_train if n_train else math.inf,
        line=(
            f"LoRA capacity: sum r(d+k-r) = {cap:,} over {len(shapes)} adapted matrices (r={rank}); "
            f"training set {n_train:,} examples {binds} it (capacity/N = {cap / n_train:.1f})"
        ),
    )
    return out
