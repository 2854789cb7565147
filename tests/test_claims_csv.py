"""claims.csv is machine-readable: every row is recomputed here from the runs.csv beside it, with scipy directly."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from kss_lora.lab.verdicts import CI_LEVEL, CLAIM_COLUMNS, MIN_RUNS, VERDICTS

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _arm(ok: pd.DataFrame, label: str, metric: str) -> np.ndarray:
    conditions = label.split(" + ")
    assert set(conditions) <= set(ok["condition"].astype(str)), (label, sorted(set(ok["condition"])))
    v = pd.to_numeric(ok.loc[ok["condition"].astype(str).isin(conditions), metric], errors="coerce").to_numpy(float)
    return v[np.isfinite(v)]


def _close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-6, abs=1e-9)


def _hand_holm(p: list[float]) -> list[float]:
    m, order, out, running = len(p), np.argsort(p), [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def recompute(claims_csv: Path, runs_csv: Path) -> int:
    """Check every row of ``claims_csv`` against ``runs_csv``; return how many rows had arms to check."""
    rows = pd.read_csv(claims_csv, keep_default_na=True)
    assert list(rows.columns[: len(CLAIM_COLUMNS)]) == list(CLAIM_COLUMNS)
    runs = pd.read_csv(runs_csv)
    ok = runs[runs["status"] == "ok"]
    checked = 0
    for _, r in rows.iterrows():
        assert r["verdict"] in VERDICTS, r["verdict"]
        if not isinstance(r["treatment"], str) or not r["treatment"]:
            assert r["verdict"] == "not measured" or r["claim_verdict"] in VERDICTS
            continue
        test, metric, direction = str(r["test"]), r["metric"], r["direction"]
        if test.startswith("delta-method"):
            (tn, td), (cn, cd) = (str(r[k]).split(" / ") for k in ("treatment", "control"))
            means = [_arm(ok, a, metric).mean() for a in (tn, td, cn, cd)]
            if all(m > 0 for m in means):
                assert _close(r["effect"], math.log(means[0] / means[1]) - math.log(means[2] / means[3]))
            checked += 1
            continue
        if test.startswith("paired t"):
            key = test.split("over ")[1].split(",")[0]
            wide = ok.pivot_table(index=key, columns="condition", values=metric)
            d = (wide[r["treatment"]] - wide[r["control"]]).dropna().to_numpy(float)
            assert int(r["n_treatment"]) == len(d) and _close(r["effect"], d.mean())
            if len(d) >= 2:
                assert _close(r["p_value"], sps.ttest_1samp(d, 0.0, alternative=direction).pvalue)
                ci = sps.ttest_1samp(d, 0.0).confidence_interval(CI_LEVEL)
                assert _close(r["ci_low"], ci.low) and _close(r["ci_high"], ci.high)
            checked += 1
            continue
        t = _arm(ok, r["treatment"], metric)
        assert int(r["n_treatment"]) == len(t)
        if test.startswith("one-sample"):
            value = float(test.split(" vs ")[1].split(",")[0])
            assert _close(r["effect"], t.mean() - value)
            if len(t) >= 2 and np.ptp(t) == 0:  # no spread: the engine gives no test (scipy would say p = 0)
                assert math.isnan(r["p_value"]) and math.isnan(r["ci_low"]) and r["verdict"] == "inconclusive"
            elif len(t) >= 2:
                res = sps.ttest_1samp(t, value, alternative=direction)
                assert _close(r["p_value"], res.pvalue)
                ci = sps.ttest_1samp(t - value, 0.0).confidence_interval(CI_LEVEL)
                assert _close(r["ci_low"], ci.low) and _close(r["ci_high"], ci.high)
            checked += 1
            continue
        c = _arm(ok, r["control"], metric)
        assert int(r["n_control"]) == len(c)
        assert _close(r["effect"], t.mean() - c.mean())
        if test.startswith("ranges overlap"):
            few = len(t) < MIN_RUNS or len(c) < MIN_RUNS
            expected = "too few runs" if few else "does not hold" if t.max() >= c.min() else "holds"
            assert r["verdict"] == expected
        elif test.startswith("Welch"):
            res = sps.ttest_ind(t, c, equal_var=False, alternative=direction)
            assert _close(r["p_value"], res.pvalue)
            ci = sps.ttest_ind(t, c, equal_var=False).confidence_interval(CI_LEVEL)
            assert _close(r["ci_low"], ci.low) and _close(r["ci_high"], ci.high)
            assert _close(r["p_mwu"], sps.mannwhitneyu(t, c, alternative="two-sided").pvalue)
            if len(t) < MIN_RUNS or len(c) < MIN_RUNS:
                assert r["verdict"] == "too few runs"
            elif r["scale"] == "difference" and not np.isfinite(r["claimed"]):
                reaches = ci.low <= 0 if direction == "less" else ci.high >= 0
                holds = r["p_adjusted"] < 0.05 and reaches
                assert (r["verdict"] == "holds") == holds, r.to_dict()
        else:
            raise AssertionError(f"unknown test {test!r}")
        checked += 1
    # Holm within each family (one claim's comparisons in one role).
    for _, family in rows.groupby(["claim", "role"], dropna=False):
        p = family["p_value"].to_numpy(float)
        keep = np.isfinite(p) & (family["verdict"] != "too few runs").to_numpy()
        if keep.sum() > 1:
            expected = _hand_holm(list(p[keep]))
            assert family["p_adjusted"].to_numpy(float)[keep] == pytest.approx(expected)
    return checked


COMMITTED = sorted(p for p in RESULTS.glob("*/claims.csv") if (p.parent / "runs.csv").is_file())


@pytest.mark.parametrize("claims_csv", COMMITTED, ids=[p.parent.name for p in COMMITTED])
def test_committed_claims_csv_recomputes_from_runs_csv(claims_csv: Path) -> None:
    recompute(claims_csv, claims_csv.parent / "runs.csv")


def test_committed_results_have_claims_csv() -> None:
    for folder in (
        "five_config",
        "noise_sweep",
        "low_gamma",
        "sparsity_sweep",
        "precision",
        "truthfulqa",
        "truthfulqa_one_adapter",
        "noise_detection",
        "overfit_encoder",
        "overfit_encoder_noise",
        "truthfulqa_sft",
        "truthfulqa_sft_noise",
        "rank_sweep",
        "optimal_rank",
        "annotation_entropy",
    ):
        assert (RESULTS / folder / "claims.csv").is_file(), folder
        assert (RESULTS / folder / "runs.csv").is_file(), folder
