"""Real human label errors: ChaosNLI items trained on their *original* label, scored against 100 votes.

ChaosNLI (Nie et al. 2020) re-annotated SNLI / MNLI items with 100 votes each. The original dataset's label
(``old_label``, the majority of 5 annotators) disagrees with the 100-vote majority on about 25% (SNLI) and
32% (MNLI-matched) of them: real annotation errors, or real ambiguity, not planted flips (docs/spec.md §2).
:func:`chaosnli_human_labels` gives, for the training split a config selects (``data.source: chaosnli``), the
labels to train on (``old_label``), the 100-vote majority and which rows have one, aligned with that split's
order; :func:`~kss_lora.detect.pipeline.detect_label_issues` takes them as ``given_labels``, ``true_labels``
and ``scored``. Validation (and test) keep the file's majority label: the best label there is.

Trained on the ChaosNLI items alone, MiniLM learns only the label prior (results/noise_detection), so the
items are pooled with bulk NLI rows first, as in the entropy study (``kss entropy-data``: its ``train.jsonl``
marks each line's ``kss_role``). Bulk rows are trained on with their gold label and scored like every row, but
their truth is unknown (5 votes, no 100-vote check): only the ChaosNLI items (role ``tracked``) are scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kss_lora.config import RunConfig
from kss_lora.errors import ConfigError, DataError

__all__ = ["HumanLabels", "chaosnli_human_labels"]


@dataclass(frozen=True)
class HumanLabels:
    """Labels of one ChaosNLI training split, aligned with its order.

    ``given``: the label trained on (an item's original label; a bulk row's gold label). ``true``: the
    100-vote majority where known, else the given label. ``scored``: the rows with a 100-vote majority
    (the truth mask is ``(given != true) & scored``). ``info``: ``n`` (scored rows), ``n_train``,
    ``error_rate`` (among scored rows) and ``tied_share`` (errors whose 100-vote top count is shared, i.e.
    where the "truth" itself is a coin flip). ``bucket``: each scored item's entropy bucket over its 100
    votes (``clean``, ``ambiguous``, ``contested``: :func:`~kss_lora.dynamics.entropy.entropy_bucket`),
    ``bulk`` for the rows not scored; :meth:`DetectionResult.evaluation_per_group
    <kss_lora.detect.options.DetectionResult.evaluation_per_group>` takes it to ask whether a detector finds
    the clear errors or only the ambiguous ones.
    """

    given: np.ndarray
    true: np.ndarray
    scored: np.ndarray
    info: dict[str, float]
    bucket: np.ndarray

    def detect_kwargs(self) -> dict[str, np.ndarray]:
        """The keyword arguments of :func:`~kss_lora.detect.pipeline.detect_label_issues` that carry them."""
        return {"given_labels": self.given, "true_labels": self.true, "scored": self.scored}


def chaosnli_human_labels(cfg: RunConfig) -> HumanLabels:
    """:class:`HumanLabels` over the training split of ``cfg``.

    The split is the one every run of ``cfg`` sees (the loader's validation split and subsample, by
    ``data.split_seed``); ids are row numbers in the file. Rows whose ``kss_role`` is ``bulk`` (a pooled file
    from ``kss entropy-data``) are not scored; in ChaosNLI's own files every row is.
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
    scored = items["role"].to_numpy(dtype=object)[ids] != "bulk"
    if not scored.any():
        raise DataError(f"data.train: {path} has only bulk rows, no ChaosNLI item to score")
    old = items["old_label"].to_numpy(dtype=np.int64)[ids]
    missing = scored & (old < 0)
    if missing.any():
        raise DataError(f"data.train: {int(missing.sum())} items of {path} have no original label (old_label)")
    given = np.where(old < 0, majority, old)  # a bulk row without an old label trains on its gold label
    truth = (given != majority) & scored
    tied = items["majority_tied"].to_numpy(dtype=bool)[ids]
    info = {
        "n": float(scored.sum()),
        "n_train": float(ids.size),
        "error_rate": float(truth[scored].mean()),
        "tied_share": float(tied[truth].mean()) if truth.any() else 0.0,
    }
    true = np.where(scored, majority, given)
    bucket = np.where(scored, items["bucket"].to_numpy(dtype=object)[ids], "bulk").astype(str)
    return HumanLabels(given=given, true=true, scored=scored, info=info, bucket=bucket)
