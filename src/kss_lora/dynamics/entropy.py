"""Annotation entropy from ChaosNLI's 100 human labels per item, and the loader for ChaosNLI JSONL.

Why: Steele's claim is that human disagreement (annotation entropy) predicts how an example is learned.
Testing it needs the entropy in one unit everywhere. docs/spec.md §2 defines ``H_i = -sum_k p_ik ln p_ik`` in
**nats** (buckets: clean < 0.4 <= ambiguous < 0.7 <= contested). ChaosNLI's own ``entropy`` field is in
**bits** (log base 2): counts ``[30, 70, 0]`` give 0.8813 in the file, 0.6109 nats. Mixing the two moves
items between buckets, so :func:`load_chaosnli` recomputes ``entropy_nats`` from ``label_count`` and keeps
the file's value as ``entropy_file`` (checked and reported in ``df.attrs["entropy_file_unit"]``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kss_lora.errors import DataError

__all__ = [
    "AMBIGUOUS_MIN",
    "BUCKETS",
    "CONTESTED_MIN",
    "annotation_entropy",
    "entropy_bucket",
    "load_chaosnli",
]

AMBIGUOUS_MIN = 0.4
"""Entropy (nats) at and above which an item is 'ambiguous' (docs/spec.md §2)."""
CONTESTED_MIN = 0.7
"""Entropy (nats) at and above which an item is 'contested' (docs/spec.md §2)."""
BUCKETS = ("clean", "ambiguous", "contested")

NLI_LABELS = ("e", "n", "c")
ALPHANLI_LABELS = ("1", "2")


def annotation_entropy(label_counts: Any) -> np.ndarray | float:
    """Entropy in nats of the empirical label distribution, ``-sum_k p_k ln p_k`` with ``0 ln 0 = 0``.

    Args:
        label_counts: ``[K]`` counts for one item or ``[N, K]`` for many (non-negative, each row > 0).

    Returns:
        A float for 1-D input, an ``[N]`` array for 2-D input. Maximum is ``ln K`` (1.0986 for K = 3).
    """
    c = np.asarray(label_counts, dtype=np.float64)
    if c.ndim not in (1, 2) or c.shape[-1] < 1:
        raise DataError(f"label_counts must be [K] or [N, K], got shape {c.shape}")
    if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise DataError("label_counts must be finite and non-negative")
    tot = c.sum(axis=-1, keepdims=True)
    if np.any(tot <= 0):
        raise DataError("every item needs at least one annotation (a row of label_counts sums to 0)")
    p = c / tot
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    h = terms.sum(axis=-1)
    return float(h) if c.ndim == 1 else h


def entropy_bucket(h: Any) -> str | np.ndarray:
    """Map entropy in nats to 'clean' (< 0.4), 'ambiguous' (0.4 <= h < 0.7) or 'contested' (>= 0.7).

    A scalar gives a str; an array gives an object array of str of the same shape.
    """
    arr = np.asarray(h, dtype=np.float64)
    if np.any(np.isnan(arr)) or np.any(arr < 0):
        raise DataError("entropy values must be non-negative numbers (nats), got NaN or a negative value")
    out = np.where(arr < AMBIGUOUS_MIN, "clean", np.where(arr < CONTESTED_MIN, "ambiguous", "contested"))
    out = out.astype(object)
    return str(out) if arr.ndim == 0 else out


def _label_index(value: Any, names: tuple[str, ...], what: str, line: int) -> int:
    key = str(value)
    if key not in names:
        raise DataError(f"ChaosNLI line {line}: {what} {value!r} is not one of {list(names)}")
    return names.index(key)


def _row(rec: dict[str, Any], line: int) -> tuple[str, dict[str, Any]]:
    ex = rec.get("example")
    if not isinstance(ex, dict):
        raise DataError(f"ChaosNLI line {line}: missing the 'example' object")
    if "premise" in ex and "hypothesis" in ex:
        task, names = "nli", NLI_LABELS
        texts = {"premise": str(ex["premise"]), "hypothesis": str(ex["hypothesis"])}
    elif all(k in ex for k in ("obs1", "obs2", "hyp1", "hyp2")):
        task, names = "alphanli", ALPHANLI_LABELS
        texts = {k: str(ex[k]) for k in ("obs1", "obs2", "hyp1", "hyp2")}
    else:
        raise DataError(f"ChaosNLI line {line}: example has neither premise/hypothesis nor obs1/obs2/hyp1/hyp2")
    try:
        counts = [int(x) for x in rec["label_count"]]
        majority = rec["majority_label"]
        file_h = float(rec["entropy"])
        uid = str(rec["uid"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"ChaosNLI line {line}: missing or malformed field ({exc})") from None
    if len(counts) != len(names):
        raise DataError(f"ChaosNLI line {line}: label_count has {len(counts)} entries, expected {len(names)}")
    maj = _label_index(majority, names, "majority_label", line)
    old = rec.get("old_label")
    old_idx = -1 if old in (None, "") else _label_index(old, names, "old_label", line)
    joined = " ".join(texts.values())
    row: dict[str, Any] = {"uid": uid, **texts}
    row.update(
        majority_label=maj,
        majority_tied=sum(c == max(counts) for c in counts) > 1,
        label_count=counts,
        n_annotations=sum(counts),
        entropy_nats=float(annotation_entropy(counts)),
        entropy_file=file_h,
        old_label=old_idx,
        old_labels=list(rec.get("old_labels") or []),
        majority_matches_old=(old_idx == maj) if old_idx >= 0 else False,
        source=str(ex.get("source", "")),
        role=str(rec.get("kss_role", "")),
        text_chars=len(joined),
        text_words=len(joined.split()),
    )
    return task, row


def _file_unit(nats: np.ndarray, file_h: np.ndarray) -> str:
    if np.allclose(file_h, nats / math.log(2.0), atol=1e-6):
        return "bits"
    if np.allclose(file_h, nats, atol=1e-6):
        return "nats"
    return "unknown"


def jsonl_objects(path: Path, what: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a JSON-lines file; a line that is not a JSON object
    is a :class:`DataError` naming ``what``, the line and the file."""
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{what} line {line_no} of {path.name} is not JSON: {exc.msg}") from None
            if not isinstance(rec, dict):
                raise DataError(f"{what} line {line_no} of {path.name} is not a JSON object")
            yield line_no, rec


def load_chaosnli(path: str | Path) -> pd.DataFrame:
    """Read a ChaosNLI JSONL file (SNLI, MNLI or alphaNLI subset) into one row per item.

    Columns (all subsets): ``uid``, the text fields, ``majority_label`` (int), ``majority_tied`` (bool:
    the top count is shared; ChaosNLI then picks one, and we keep the file's choice), ``label_count``
    (list of int), ``n_annotations``, ``entropy_nats`` (recomputed from ``label_count``, SPEC unit),
    ``entropy_file`` (the file's ``entropy`` field, which is in bits), ``bucket``, ``old_label`` (int,
    the original dataset's gold label; -1 if absent), ``old_labels`` (list of the original annotators'
    labels, empty for alphaNLI), ``majority_matches_old``, ``source``, ``role`` (the study part a file written by
    :func:`kss_lora.dynamics.entropy_data.build_study_data` gives each line: bulk, tracked, validation,
    bulk_test; empty in ChaosNLI's own files), ``text_chars``, ``text_words``
    (length of all text fields joined by spaces; a length confounder for partial correlations).

    Text fields and label order:
        * SNLI / MNLI: ``premise``, ``hypothesis``; labels ``e=0, n=1, c=2`` (the order of ``label_count``).
        * alphaNLI: ``obs1``, ``obs2``, ``hyp1``, ``hyp2``; labels ``'1'=0, '2'=1`` (which hypothesis
          is more plausible). Supported rather than rejected because its entropy (K = 2, max ln 2 =
          0.693 nats) is still meaningful; note that with K = 2 the 'contested' bucket is unreachable.

    ``df.attrs`` holds ``task`` ('nli' or 'alphanli'), ``label_names`` and ``entropy_file_unit``
    ('bits' for the released files; checked, not assumed).

    Raises:
        DataError: the file is missing, a line is not JSON, a field is missing or a label is unknown,
            or the file mixes NLI and alphaNLI items.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"ChaosNLI file not found: {p}")
    rows: list[dict[str, Any]] = []
    tasks: set[str] = set()
    for line_no, rec in jsonl_objects(p, "ChaosNLI"):
        task, row = _row(rec, line_no)
        tasks.add(task)
        rows.append(row)
    if not rows:
        raise DataError(f"ChaosNLI file {p} has no items")
    if len(tasks) > 1:
        raise DataError(f"ChaosNLI file {p} mixes NLI and alphaNLI items; load them separately")
    df = pd.DataFrame(rows)
    df.insert(df.columns.get_loc("entropy_file") + 1, "bucket", entropy_bucket(df["entropy_nats"].to_numpy()))
    task = tasks.pop()
    df.attrs["task"] = task
    df.attrs["label_names"] = list(NLI_LABELS if task == "nli" else ALPHANLI_LABELS)
    df.attrs["entropy_file_unit"] = _file_unit(df["entropy_nats"].to_numpy(), df["entropy_file"].to_numpy())
    return df
