"""Real human label errors: ChaosNLI items trained on their *original* label, scored against 100 votes.

ChaosNLI (Nie et al. 2020) re-annotated SNLI / MNLI items with 100 votes each. The original dataset's label
(``old_label``, the majority of 5 annotators) disagrees with the 100-vote majority on about 25% (SNLI) and
32% (MNLI-matched) of them: real annotation errors, or real ambiguity, not planted flips (docs/spec.md §2).
:func:`chaosnli_human_labels` gives, for the training split a config selects (``data.source: chaosnli``), the
labels to train on (``old_label``) and the truth mask (``old_label != majority_label``), aligned with that
split's order; :func:`~kss_lora.detect.pipeline.detect_label_issues` takes them as ``given_labels`` and
``true_labels``. Validation (and test) keep the 100-vote majority: the best label there is.
"""

from __future__ import annotations

import numpy as np

from kss_lora.config import RunConfig
from kss_lora.errors import ConfigError, DataError

__all__ = ["chaosnli_human_labels"]


def chaosnli_human_labels(cfg: RunConfig) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """``(given, majority, info)`` over the training split of ``cfg``.

    ``given``: the original label of each training item; ``majority``: its 100-vote majority (the truth
    mask is ``given != majority``); ``info``: ``n``, ``error_rate`` and ``tied_share`` (errors whose 100-vote top count is
    shared, i.e. where the "truth" itself is a coin flip). The split is the one every run of ``cfg`` sees
    (the loader's validation split and subsample, by ``data.split_seed``); ids are row numbers in the file.
    """
    from kss_lora.data.files import resolve_path
    from kss_lora.data.loading import load_classification_data
    from kss_lora.dynamics.entropy import load_chaosnli

    if cfg.data.source != "chaosnli":
        raise ConfigError("data.source", f"human label errors need data.source=chaosnli, got {cfg.data.source!r}")
    data = load_classification_data(cfg.data)
    path, _ = resolve_path(cfg.data, str(cfg.data.train), "data.train")
    items = load_chaosnli(path)
    ids = np.asarray(data.train.ids, dtype=np.int64)
    majority = items["majority_label"].to_numpy(dtype=np.int64)[ids]
    if not np.array_equal(majority, data.train.labels):
        raise DataError(f"data.train: {path} rows do not line up with the loaded training split")
    old = items["old_label"].to_numpy(dtype=np.int64)[ids]
    if (old < 0).any():
        raise DataError(f"data.train: {int((old < 0).sum())} items of {path} have no original label (old_label)")
    truth = old != majority
    tied = items["majority_tied"].to_numpy(dtype=bool)[ids]
    info = {
        "n": float(ids.size),
        "error_rate": float(truth.mean()),
        "tied_share": float(tied[truth].mean()) if truth.any() else 0.0,
    }
    return old, majority, info
