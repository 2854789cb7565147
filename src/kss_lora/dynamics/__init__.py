"""Per-example training dynamics, annotation entropy, correlation statistics and LoRA capacity.

Pure functions on numpy arrays (torch is imported only by :func:`model_lora_capacity`). Trajectories are
``[T checkpoints, N examples]``; results are per-example arrays of length N.
"""

from kss_lora.dynamics.capacity import (
    TemporalSeparation,
    lora_capacity,
    lora_target_shapes,
    model_lora_capacity,
    temporal_separation,
)
from kss_lora.dynamics.entropy import annotation_entropy, entropy_bucket, load_chaosnli
from kss_lora.dynamics.metrics import (
    Cartography,
    ExampleOutputs,
    Forgetting,
    aulc,
    aum,
    cartography,
    example_table,
    forgetting_events,
    learning_time,
    margin_from_logits,
    per_example_from_logits,
    unlearning,
)
from kss_lora.dynamics.stats import (
    HierarchicalR2,
    PartialSpearman,
    SpearmanCI,
    delta_by_bucket,
    hierarchical_r2,
    partial_spearman,
    spearman_with_ci,
)

__all__ = [
    "Cartography",
    "ExampleOutputs",
    "Forgetting",
    "HierarchicalR2",
    "PartialSpearman",
    "SpearmanCI",
    "TemporalSeparation",
    "annotation_entropy",
    "aulc",
    "aum",
    "cartography",
    "delta_by_bucket",
    "entropy_bucket",
    "example_table",
    "forgetting_events",
    "hierarchical_r2",
    "learning_time",
    "load_chaosnli",
    "lora_capacity",
    "lora_target_shapes",
    "margin_from_logits",
    "model_lora_capacity",
    "partial_spearman",
    "per_example_from_logits",
    "spearman_with_ci",
    "temporal_separation",
    "unlearning",
]
