"""Detection metrics equal scikit-learn's on fixed inputs; noise-rate estimation; stratified folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score

from kss_lora.detect import (
    cross_fit_folds,
    estimate_noise_rate,
    evaluate_detection,
    evaluate_per_class,
    evaluate_per_group,
    noise_joint,
    prf,
)
from kss_lora.errors import KSSError

TRUTH = np.array([1, 0, 1, 1, 0, 0, 0, 1, 0, 0, 1, 0], dtype=bool)
SCORES = np.array([0.9, 0.1, 0.8, 0.3, 0.35, 0.2, 0.7, 0.6, 0.05, 0.4, 0.95, 0.5])
FLAGS = np.array([1, 0, 1, 0, 0, 0, 1, 1, 0, 0, 1, 1], dtype=bool)
LABELS = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2, 0, 1, 2])


def sk_prf(truth, flags):
    p, r, f, _ = precision_recall_fscore_support(truth, flags, average="binary", zero_division=0)
    return p, r, f


@pytest.mark.parametrize("flags", [FLAGS, np.zeros_like(FLAGS), np.ones_like(FLAGS), ~TRUTH, TRUTH])
def test_prf_matches_sklearn(flags):
    assert prf(TRUTH, flags) == pytest.approx(sk_prf(TRUTH, flags))


def test_evaluate_detection_matches_sklearn():
    out = evaluate_detection(TRUTH, SCORES, FLAGS)
    k = int(TRUTH.sum())
    top_k = np.zeros_like(TRUTH)
    top_k[np.argsort(-SCORES)[:k]] = True
    p, r, f = sk_prf(TRUTH, top_k)
    assert (out["precision_at_k"], out["recall_at_k"], out["f1_at_k"]) == pytest.approx((p, r, f))
    assert out["precision_at_k"] == pytest.approx(out["recall_at_k"])  # at k = true count, P = R = F1
    assert (out["precision_flags"], out["recall_flags"], out["f1_flags"]) == pytest.approx(sk_prf(TRUTH, FLAGS))
    assert out["auroc"] == pytest.approx(roc_auc_score(TRUTH, SCORES))
    assert out["auprc"] == pytest.approx(average_precision_score(TRUTH, SCORES))
    assert out["n"] == 12 and out["n_noisy"] == k and out["n_flagged"] == FLAGS.sum()


def test_evaluate_detection_without_flags_and_degenerate_truth():
    out = evaluate_detection(TRUTH, SCORES)
    assert np.isnan(out["f1_flags"]) and np.isfinite(out["auroc"])
    none = evaluate_detection(np.zeros(5, bool), np.arange(5.0), np.zeros(5, bool))
    assert none["f1_at_k"] == 0.0 and np.isnan(none["auroc"]) and np.isnan(none["auprc"])


def test_per_class_rows_equal_evaluating_each_class_alone():
    table = evaluate_per_class(TRUTH, SCORES, LABELS, FLAGS)
    assert table["class"].tolist() == [0, 1, 2]
    for c in (0, 1, 2):
        m = LABELS == c
        row = table[table["class"] == c].iloc[0]
        ref = evaluate_detection(TRUTH[m], SCORES[m], FLAGS[m])
        for key in ("f1_at_k", "f1_flags", "auroc", "auprc"):
            assert row[key] == pytest.approx(ref[key], nan_ok=True), (c, key)


def test_per_group_rows_are_sorted_named_and_judge_each_group_on_its_own_errors():
    groups = np.array(["b", "a"] * 6)
    table = evaluate_per_group(TRUTH, SCORES, groups, column="bucket")
    assert table.columns[0] == "bucket" and table["bucket"].tolist() == ["a", "b"]
    for g in ("a", "b"):
        m = groups == g
        row = table[table["bucket"] == g].iloc[0]
        assert row["n"] == 6 and row["n_noisy"] == TRUTH[m].sum()
        assert row["auroc"] == pytest.approx(roc_auc_score(TRUTH[m], SCORES[m]))
    # scores that rank a's errors first and b's last: AUROC 1 and 0, though pooled they would blur
    split = np.where(groups == "a", TRUTH, ~TRUTH).astype(float)
    assert evaluate_per_group(TRUTH, split, groups)["auroc"].tolist() == [1.0, 0.0]
    only_errors = evaluate_per_group(TRUTH, SCORES, np.where(TRUTH, "wrong", "right"))
    assert only_errors["auroc"].isna().all()  # one class inside each group: AUROC undefined, not 0.5
    with pytest.raises(KSSError, match="bucket shape"):
        evaluate_per_group(TRUTH, SCORES, groups[:-1], column="bucket")


def test_metric_inputs_are_checked():
    with pytest.raises(KSSError, match="shape"):
        evaluate_detection(TRUTH, SCORES[:-1])
    with pytest.raises(KSSError, match="NaN"):
        evaluate_detection(TRUTH, np.where(TRUTH, np.nan, 0.0))
    with pytest.raises(KSSError, match="boolean"):
        prf(np.array([0, 2, 1]), np.array([0, 1, 1]))


def noisy_probs(n=4000, k=4, rate=0.25, seed=0):
    """Given labels with symmetric noise and probabilities from a good, calibrated-ish model of the truth."""
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, k, n)
    flip = rng.random(n) < rate
    given = np.where(flip, (clean + rng.integers(1, k, n)) % k, clean)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), clean] += 3.0
    p = np.exp(logits)
    return given, p / p.sum(1, keepdims=True), flip


def test_noise_rate_estimates_are_close_to_the_truth():
    given, probs, flip = noisy_probs()
    for method in ("confident-joint", "num-issues"):
        est = estimate_noise_rate(given, probs, method=method)
        assert est == pytest.approx(flip.mean(), abs=0.05), method
    q = noise_joint(given, probs)
    from cleanlab.count import estimate_joint

    assert q == pytest.approx(estimate_joint(given, probs))
    assert q.sum() == pytest.approx(1.0)
    with pytest.raises(KSSError, match="unknown"):
        estimate_noise_rate(given, probs, method="oracle")


def test_noise_joint_tolerates_a_class_absent_from_the_labels():
    given, probs, _ = noisy_probs(n=600, k=4)
    given = np.where(given == 3, 0, given)  # class 3 never given
    q = noise_joint(given, probs)
    assert q.shape == (4, 4) and np.all(q[3] == 0) and q.sum() == pytest.approx(1.0)


def test_cross_fit_folds_are_stratified_and_seeded():
    labels = np.repeat(np.arange(3), [30, 31, 32])
    folds = cross_fit_folds(labels, folds=3, seed=0)
    assert set(folds) == {0, 1, 2}
    assert np.bincount(folds).max() - np.bincount(folds).min() <= 1
    for c in range(3):
        counts = np.bincount(folds[labels == c], minlength=3)
        assert counts.max() - counts.min() <= 1
    assert np.array_equal(folds, cross_fit_folds(labels, folds=3, seed=0))
    assert not np.array_equal(folds, cross_fit_folds(labels, folds=3, seed=1))


def test_detection_claims_leave_out_rows_that_read_a_run_near_the_label_prior(tmp_path):
    from kss_lora.detect.evaluate import write_detection_claims

    rows = [
        {"setting": "sym20", "seed": s, "detector": d, "f1_at_k": f1, "auroc": 0.3, "runs_near_prior": near}
        for s in (0, 1, 2)
        for d, f1, near in (("ract", 0.1 + 0.01 * s, 0), ("ract-curriculum", 0.8, 0), ("aum", 0.7, int(s == 2)))
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "detection.csv", index=False)
    write_detection_claims(tmp_path)
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert runs.loc[runs["status"] == "near prior", ["detector", "seed"]].values.tolist() == [["aum", 2]]
    claims = pd.read_csv(tmp_path / "claims.csv").set_index("claim")
    # the paired curriculum-vs-AUM comparison keeps only the seeds whose AUM runs learned: 2, so too few runs
    assert claims.loc["curriculum-vs-aum", "n_treatment"] == 2
    assert claims.loc["curriculum-vs-aum", "verdict"] == "too few runs"
    assert claims.loc["ract-f1", "n_treatment"] == 3


def test_a_partial_truth_is_judged_on_its_rows_only_and_left_empty_in_the_tables(tmp_path):
    # Rows 0-3 have a known truth (1 and 2 wrong), rows 4-5 do not: their "truth" must not count either way.
    from kss_lora.detect.cli import write_outputs
    from kss_lora.detect.options import DetectionResult

    labels = np.array([0, 1, 0, 1, 0, 1])
    scores = np.array([0.1, 0.9, 0.8, 0.2, 0.95, 0.05])  # row 4 scores highest but has no known truth
    res = DetectionResult(
        ids=np.arange(6),
        texts=[f"t{i}" for i in range(6)],
        text_pairs=None,
        labels=labels,
        label_names=["a", "b"],
        scores={"small-loss": scores},
        flags={"small-loss": scores > 0.5},
        suggested_labels=labels,
        rate_estimate=0.5,
        rate_source="given",
        primary="small-loss",
        is_noisy=np.array([False, True, True, False, False, False]),
        clean_labels=np.array([0, 0, 1, 1, 0, 1]),
        scored=np.array([True, True, True, True, False, False]),
    )
    ev = res.evaluation().iloc[0]
    assert (ev["n"], ev["n_noisy"], ev["f1_at_k"], ev["auroc"]) == (4, 2, 1.0, 1.0)
    assert (ev["n_flagged"], ev["precision_flags"]) == (2, 1.0)  # row 4's flag is not counted as a false alarm
    assert res.noise_rate_true == 0.5
    summary = write_outputs(res, tmp_path)
    assert summary["n_scored"] == 4 and summary["noise_rate_true"] == 0.5
    table = pd.read_csv(tmp_path / "scores.csv")
    assert table["is_noisy"].isna().tolist() == [False] * 4 + [True] * 2
    assert table["clean_label"].isna().tolist() == [False] * 4 + [True] * 2
    ranked = pd.read_csv(tmp_path / "suspected_label_errors.csv")
    assert ranked["id"].tolist() == [4, 1, 2] and pd.isna(ranked["is_noisy"].iloc[0])
