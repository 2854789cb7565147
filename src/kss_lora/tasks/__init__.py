"""Training tasks: what differs between classification and causal-LM fine-tuning (see :mod:`.base`)."""

from __future__ import annotations

from ..config import RunConfig
from .base import EvalOutput, Task, loss_to_pseudo_logits


def make_task(cfg: RunConfig) -> Task:
    """The task object for ``cfg.model.task``."""
    from .memory import check_quantization

    check_quantization(cfg)
    if cfg.model.task == "causal-lm":
        from .causal_lm import CausalLMTask

        return CausalLMTask(cfg)
    from .classification import ClassificationTask

    return ClassificationTask(cfg)


__all__ = ["EvalOutput", "Task", "loss_to_pseudo_logits", "make_task"]
