"""Which fields a run id hashes, so that ids stay put when the config gains a field.

A run id names a run directory and is a sweep's "already done" check: it must change when anything that changes
the result changes, and never otherwise. Torch-free and independent of the config classes (it sees plain dicts).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Blocks that never change what is computed: where results go, free text, and how processes are started
# (DDP computes what one process would).
NOT_HASHED = ("output", "description", "launcher")

# The fields run ids hashed when ids were first published, whatever their value. Frozen: never add to it
# (a new field is hashed only when set away from its default, which is what keeps old ids put).
FIRST_ID_FIELDS: dict[str, tuple[str, ...]] = {
    "model": ("name", "task", "max_length", "trust_remote_code"),
    "data": (
        "source",
        "train",
        "validation",
        "test",
        "format",
        "header",
        "column_names",
        "text_column",
        "text_pair_column",
        "label_column",
        "label_names",
        "val_fraction",
        "max_train_examples",
        "max_eval_examples",
        "split_seed",
        "num_classes",
        "num_examples",
        "synthetic_ambiguity",
    ),
    "method": ("name", "preset", "rank", "gamma", "alpha", "sparsity", "mask_mode", "dropout", "target_modules"),
    "train": (
        "seed",
        "epochs",
        "batch_size",
        "grad_accum",
        "eval_batch_size",
        "lr",
        "weight_decay",
        "warmup_ratio",
        "scheduler",
        "grad_clip",
        "max_steps",
        "device",
        "threads",
        "progress",
    ),
    "noise": ("rate", "kind", "pairs", "transition", "seed"),
    "tracking": ("per_example", "free", "every_steps", "heldout"),
    "precision": ("mode", "emulation"),
}


# Fields that never change what is computed, only what is written or shown along the way: never hashed, so
# turning on checkpoints, step lines or a live tracker does not make a finished run look unfinished.
# (train.progress predates this list and stays in FIRST_ID_FIELDS: removing it would move every published id.)
NEVER_HASHED_FIELDS: dict[str, tuple[str, ...]] = {
    "train": ("checkpoint_every", "log_every_steps"),
    "tracking": ("stream",),
}


def run_id_of(blocks: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> str:
    """The id of a config given as ``{block: (values, defaults)}``.

    A field is hashed when it belongs to the first published id scheme (:data:`FIRST_ID_FIELDS`) or when it
    differs from its default. So a field added with a default never moves an id, and every id published before
    this scheme stays what it was.
    """
    hashed: dict[str, Any] = {}
    for name, (values, defaults) in blocks.items():
        if name in NOT_HASHED:
            continue
        always, never = FIRST_ID_FIELDS.get(name, ()), NEVER_HASHED_FIELDS.get(name, ())
        hashed[name] = {
            k: v for k, v in values.items() if k not in never and (k in always or k not in defaults or v != defaults[k])
        }
    blob = json.dumps(hashed, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
