"""The training data of Steele's annotation-entropy study: bulk NLI rows pooled with 80% of the ChaosNLI items.

Why (docs/spec.md §2, Steele's ``scripts/08_expanded_experiments.py``): the tracked items must be *in the
training set*. Steele splits a ChaosNLI subset 80/20 stratified by entropy bucket (scikit-learn's
``StratifiedShuffleSplit``, ``random_state=42``), trains on bulk SNLI/MNLI rows plus the 80% part (labels: the
100-vote majority), tracks the 80% part and validates on the 20% part. A model trained on the ChaosNLI items
alone learns only the label prior, and its per-example losses say nothing about entropy.

:func:`build_study_data` writes the pooled files in ChaosNLI's JSONL format, so ``data.source: chaosnli`` reads
them unchanged; each line carries ``kss_role``:

- ``train.jsonl``: the bulk rows (``bulk``) then the 80% items (``tracked``);
- ``heldout.jsonl``: the 20% items (``heldout``), Steele's validation set; a run tracks them as held-out items
  and reports their accuracy (against the majority label) as its test accuracy;
- ``validation.jsonl`` (when ``bulk_val > 0``): bulk rows kept out of training (``validation``), ordinary SNLI
  rows whose majority-class rate is near 1/3: the run's validation set and the accuracy gate's (a model that
  learned only the label prior scores that rate). Not the 20% items: they are chosen for disagreement and 54% of
  them have the majority label "neutral", which class-weighted training deliberately does not favour, so their
  majority-class rate is no test of "learned NLI" (pilot: 0.34 on them, 0.55 on SNLI rows, rates 0.54 / 0.35);
- ``manifest.json``: counts, label shares, majority-class rates, the source files' sha256 and every setting.

Bulk rows are SNLI-format JSONL (``gold_label, sentence1, sentence2, annotator_labels, pairID``; MultiNLI's
files have the same fields). A row is dropped when its ``pairID`` is a ChaosNLI uid (the item itself), its gold
label is ``-`` (no majority among the 5 annotators), its pairID repeats, or its premise is the premise of a
held-out item (SNLI splits by premise; a held-out item's premise seen in training with another hypothesis
would leak). Validation rows are whole premise groups whose premise is no ChaosNLI item's, so no validation
premise is trained on.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kss_lora.errors import DataError

from .entropy import BUCKETS, NLI_LABELS, annotation_entropy, entropy_bucket, jsonl_objects

__all__ = ["ROLE_FIELD", "bulk_rows", "build_study_data", "stratified_item_split"]

ROLE_FIELD = "kss_role"
"""The JSONL field naming each line's part of the study (bulk, tracked, heldout, validation)."""
GOLD = {"entailment": "e", "neutral": "n", "contradiction": "c"}


def stratified_item_split(buckets: Sequence[str], fraction: float, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) row numbers: ``fraction`` of the items held out, stratified by entropy bucket.

    scikit-learn's ``StratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)`` over the items
    in file order, the call Steele's code makes, so seed 42 on the same file gives his split. Both parts sorted.
    """
    from sklearn.model_selection import StratifiedShuffleSplit

    if not 0 < fraction < 1:
        raise DataError(f"the held-out fraction must be in (0, 1), got {fraction}")
    codes = np.array([BUCKETS.index(b) for b in buckets])
    counts = np.bincount(codes, minlength=len(BUCKETS))
    if np.any((counts > 0) & (counts < 2)):
        raise DataError(
            f"a stratified split needs at least 2 items per entropy bucket, got {dict(zip(BUCKETS, counts))}"
        )
    splitter = StratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    kept, held = next(splitter.split(np.zeros(len(codes)), codes))
    return np.sort(kept), np.sort(held)


OUTPUT_FILES = ("train.jsonl", "heldout.jsonl", "validation.jsonl", "manifest.json")


def _check_ours(target: Path) -> None:
    """The output files are rewritten (validation.jsonl removed when not built) on every call: only where an
    earlier call wrote them, i.e. beside a manifest.json of ours; a user's files there are never touched."""
    if not any((target / name).exists() for name in OUTPUT_FILES):
        return
    try:
        manifest = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = None
    if not (isinstance(manifest, dict) and {"chaosnli", "split", "files"} <= set(manifest)):
        raise DataError(f"--out: {target} holds files kss did not write ({', '.join(OUTPUT_FILES)}); use a new folder")


def _read_jsonl(path: Path, what: str) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"{what}: no such file {path}")
    return [rec for _, rec in jsonl_objects(path, what)]


def _bulk_record(row: dict[str, Any], where: str) -> dict[str, Any]:
    """An SNLI/MNLI row as a ChaosNLI-format line: the gold label as majority, its annotators' votes as counts."""
    try:
        gold, premise, hypothesis, uid = row["gold_label"], row["sentence1"], row["sentence2"], str(row["pairID"])
    except KeyError as exc:
        raise DataError(f"{where}: bulk row without field {exc} (SNLI jsonl: gold_label, sentence1, ...)") from None
    votes = [GOLD[v] for v in row.get("annotator_labels") or [gold] if v in GOLD]
    counts = [votes.count(k) for k in NLI_LABELS]
    if not sum(counts):
        counts = [int(GOLD[gold] == k) for k in NLI_LABELS]
    return {
        "uid": uid,
        "label_count": counts,
        "majority_label": GOLD[gold],
        "entropy": float(annotation_entropy(counts)) / math.log(2.0),  # bits, like ChaosNLI's own field
        "example": {"uid": uid, "premise": str(premise), "hypothesis": str(hypothesis), "source": "bulk"},
        "old_label": GOLD[gold],
        "old_labels": list(row.get("annotator_labels") or []),
    }


def bulk_rows(paths: Sequence[str | Path], exclude_uids: set[str]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Bulk rows of SNLI-format files as ChaosNLI-format records, and how many were dropped for what.

    Dropped: gold label ``-`` or unknown, a pairID in ``exclude_uids`` (ChaosNLI items), a repeated pairID.
    """
    out, seen = [], set()
    dropped = {"chaosnli_item": 0, "no_gold_label": 0, "duplicate": 0}
    for raw in paths:
        path = Path(raw)
        for row in _read_jsonl(path, "--bulk"):
            uid = str(row.get("pairID", ""))
            if row.get("gold_label") not in GOLD:
                dropped["no_gold_label"] += 1
            elif uid in exclude_uids:
                dropped["chaosnli_item"] += 1
            elif uid in seen:
                dropped["duplicate"] += 1
            else:
                seen.add(uid)
                out.append(_bulk_record(row, str(path)))
    return out, dropped


def _premise(rec: dict[str, Any]) -> str:
    return str(rec["example"]["premise"])


def _validation_split(
    bulk: list[dict[str, Any]], n_val: int, chaos_premises: set[str], seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, validation) bulk rows; validation = whole premise groups (no ChaosNLI premise), >= ``n_val`` rows."""
    if n_val <= 0:
        return bulk, []
    groups: dict[str, list[int]] = {}
    for i, rec in enumerate(bulk):
        if _premise(rec) not in chaos_premises:
            groups.setdefault(_premise(rec), []).append(i)
    names = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(names))
    val: set[int] = set()
    for j in order:
        if len(val) >= n_val:
            break
        val.update(groups[names[j]])
    if len(val) < n_val:
        raise DataError(f"--bulk-val {n_val}: only {len(val)} bulk rows have a premise outside ChaosNLI")
    return [r for i, r in enumerate(bulk) if i not in val], [r for i, r in enumerate(bulk) if i in val]


def _shares(records: list[dict[str, Any]]) -> dict[str, float]:
    labels = [r["majority_label"] for r in records]
    return {k: labels.count(k) / len(labels) for k in NLI_LABELS} if labels else {}


def _write(path: Path, records: list[dict[str, Any]], role: str) -> None:
    path.write_text("".join(json.dumps({**r, ROLE_FIELD: role}) + "\n" for r in records), encoding="utf-8")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_study_data(
    chaosnli: str | Path,
    bulk: Sequence[str | Path],
    out: str | Path,
    *,
    split_seed: int = 42,
    val_fraction: float = 0.2,
    bulk_val: int = 300,
    bulk_max: int | None = None,
    bulk_seed: int = 42,
) -> dict[str, Any]:
    """Write train/heldout(/validation).jsonl and manifest.json into ``out`` (see the module docstring).

    ``bulk_val`` holds at least that many bulk rows (whole premise groups) out as the validation set;
    ``bulk_max`` then keeps a seeded random subset of the bulk training rows (Steele: 20,000). Returns the
    manifest.
    """
    from .entropy import load_chaosnli

    chaos_path = Path(chaosnli)
    items = load_chaosnli(chaos_path)
    if items.attrs.get("task") != "nli":
        raise DataError(f"--chaosnli: {chaos_path} is not an SNLI/MNLI ChaosNLI file")
    raw = _read_jsonl(chaos_path, "--chaosnli")
    kept, held = stratified_item_split(items["bucket"].tolist(), val_fraction, seed=split_seed)
    rows, dropped = bulk_rows(bulk, set(items["uid"]))
    held_premises = set(items["premise"].iloc[held])
    n0 = len(rows)
    rows = [r for r in rows if _premise(r) not in held_premises]
    dropped["shares_heldout_premise"] = n0 - len(rows)
    train_bulk, val_bulk = _validation_split(rows, bulk_val, set(items["premise"]), bulk_seed)
    if bulk_max is not None and len(train_bulk) > bulk_max:
        keep = np.sort(np.random.default_rng(bulk_seed).choice(len(train_bulk), bulk_max, replace=False))
        train_bulk = [train_bulk[i] for i in keep]
    if not train_bulk:
        raise DataError("--bulk: no bulk rows left for training")
    tracked = [raw[i] for i in kept]
    heldout = [raw[i] for i in held]
    target = Path(out)
    _check_ours(target)
    target.mkdir(parents=True, exist_ok=True)
    with (target / "train.jsonl").open("w", encoding="utf-8") as fh:
        for role, recs in (("bulk", train_bulk), ("tracked", tracked)):
            fh.writelines(json.dumps({**r, ROLE_FIELD: role}) + "\n" for r in recs)
    _write(target / "heldout.jsonl", heldout, "heldout")
    files = ["train.jsonl", "heldout.jsonl"]
    if val_bulk:
        _write(target / "validation.jsonl", val_bulk, "validation")
        files.append("validation.jsonl")
    elif (target / "validation.jsonl").exists():
        (target / "validation.jsonl").unlink()  # a stale split from an earlier call must not be read

    def bucket_counts(index: np.ndarray) -> dict[str, int]:
        b = list(entropy_bucket(items["entropy_nats"].to_numpy()[index]))
        return {k: b.count(k) for k in BUCKETS}

    parts = {"bulk": train_bulk, "tracked": tracked, "heldout": heldout, "validation": val_bulk}
    manifest: dict[str, Any] = {
        "chaosnli": str(chaos_path),
        "chaosnli_sha256": _sha256(chaos_path),
        "bulk": [str(p) for p in bulk],
        "bulk_sha256": [_sha256(Path(p)) for p in bulk],
        "split": "sklearn StratifiedShuffleSplit by entropy bucket (nats; clean < 0.4 <= ambiguous < 0.7)",
        "split_seed": split_seed,
        "val_fraction": val_fraction,
        "bulk_seed": bulk_seed,
        "bulk_max": bulk_max,
        "bulk_val": bulk_val,
        "rows": {k: len(v) for k, v in parts.items()},
        "train_rows": len(train_bulk) + len(tracked),
        "bulk_dropped": dropped,
        "buckets": {"tracked": bucket_counts(kept), "heldout": bucket_counts(held)},
        "label_shares": {k: _shares(v) for k, v in parts.items() if v},
        "majority_rate": {k: max(_shares(v).values()) for k, v in parts.items() if v},
        "files": {f: _sha256(target / f) for f in files},
    }
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
