"""Verdict logic of the claims table: holds / does not hold / inconclusive / not measured here."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kss_lora.lab.claims import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    NOT_MEASURED,
    claim_all_separate,
    claim_antifragile,
    claim_five_config_gap,
    claim_matched_gamma,
    claim_negative_gap,
    claim_noise_gap,
    combine,
    evaluate_claims,
    judge_at_most,
    judge_below,
    judge_ratio,
)


def test_judge_ratio():
    claimed = 0.03  # the seed's κ_rel
    assert judge_ratio((0.01, 0.05), claimed) == HOLDS  # significant, and as large as claimed is possible
    assert judge_ratio((0.2, 0.4), claimed) == FAILS  # significant but far weaker than claimed
    assert judge_ratio((0.9, 1.3), claimed) == FAILS  # no effect at all
    assert judge_ratio((0.02, 1.2), claimed) == INCONCLUSIVE  # too noisy to say
    assert judge_ratio((float("nan"), 1.0), claimed) == INCONCLUSIVE


def test_judge_bounds_and_combine():
    assert judge_at_most((-0.01, 0.003), 0.004) == HOLDS
    assert judge_at_most((0.01, 0.03), 0.004) == FAILS
    assert judge_at_most((-0.01, 0.01), 0.004) == INCONCLUSIVE
    assert judge_below((-0.02, -0.001)) == HOLDS and judge_below((0.001, 0.02)) == FAILS
    assert judge_below((-0.01, 0.01)) == INCONCLUSIVE
    assert combine([HOLDS, HOLDS]) == HOLDS
    assert combine([HOLDS, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([HOLDS, FAILS, INCONCLUSIVE]) == FAILS
    assert combine([]) == NOT_MEASURED


def make_runs(groups: dict[tuple, list[float]], noise_shift: bool = False) -> pd.DataFrame:
    """groups: (preset or None, method, gamma, sparsity, noise) -> gaps (one run each)."""
    rows = []
    for (preset, method, gamma, rho, noise), gaps in groups.items():
        for seed, g in enumerate(gaps):
            rows.append(
                {
                    "status": "ok",
                    "preset": preset,
                    "method": method,
                    "gamma": gamma,
                    "sparsity": rho,
                    "rank": 8,
                    "noise_rate": noise,
                    "precision": "fp32",
                    "seed": seed,
                    "val_loss": 1.0,
                    "train_loss": 1.0 - g + (noise if noise_shift else 0.0),
                    "gap": g - (noise if noise_shift else 0.0),
                    "gap_clean": g,
                    "arm": preset or f"dense {gamma}",
                }
            )
    return pd.DataFrame(rows)


BASE = [0.50, 0.52, 0.55, 0.49, 0.51]


def test_five_config_gap_verdicts():
    big = make_runs(
        {
            ("standard", "kss", 0.5, 0.0, 0.0): BASE,
            ("kss-default", "kss", 1.0, 0.1, 0.0): [0.012, 0.016, 0.015, 0.018, 0.02],
        }
    )
    assert claim_five_config_gap(big).verdict == HOLDS
    small = make_runs(
        {
            ("standard", "kss", 0.5, 0.0, 0.0): BASE,
            ("kss-default", "kss", 1.0, 0.1, 0.0): [0.30, 0.32, 0.29, 0.31, 0.33],
        }
    )
    r = claim_five_config_gap(small)
    assert r.verdict == FAILS and "far less than 33×" in r.note
    none = make_runs({("standard", "kss", 0.5, 0.0, 0.0): BASE})
    assert claim_five_config_gap(none).verdict == NOT_MEASURED
    failed = big.assign(status="failed")
    assert claim_five_config_gap(failed).verdict == NOT_MEASURED  # failed runs never count


def test_matched_gamma_control():
    groups = {
        ("standard", "kss", 0.5, 0.0, 0.0): BASE,
        ("kss-default", "kss", 1.0, 0.1, 0.0): [0.10, 0.11, 0.09, 0.12, 0.10],
    }
    assert claim_matched_gamma(make_runs(groups)).verdict == NOT_MEASURED
    same = make_runs({**groups, (None, "lora", 1.0, 0.0, 0.0): [0.10, 0.12, 0.11, 0.09, 0.10]})
    r = claim_matched_gamma(same)
    assert r.verdict in (FAILS, INCONCLUSIVE) and "not significantly smaller: kss-default" in r.note
    worse_dense = make_runs({**groups, (None, "lora", 1.0, 0.0, 0.0): [0.30, 0.31, 0.29, 0.33, 0.30]})
    assert claim_matched_gamma(worse_dense).verdict == HOLDS


def test_noise_claims_use_gap_clean():
    groups = {}
    for noise, kss_gap in ((0.0, 0.10), (0.2, 0.06), (0.5, 0.01)):
        groups[("standard", "kss", 0.5, 0.0, noise)] = list(np.array(BASE) - noise / 2)
        groups[("kss-default", "kss", 1.0, 0.1, noise)] = list(np.array([0.1, 0.11, 0.09, 0.1, 0.12]) * kss_gap * 10)
    runs = make_runs(groups, noise_shift=True)  # the noisy-label gap is shifted; gap_clean is not
    r = claim_noise_gap(runs)
    assert "20%" in r.measured and "50%" in r.measured and r.verdict != NOT_MEASURED
    a = claim_antifragile(runs)
    assert a.verdict == HOLDS, a  # κ_rel(gap_clean) falls with noise here
    flat = {k: (v if k[0] == "standard" else [0.05] * 5) for k, v in groups.items()}
    assert claim_antifragile(make_runs(flat, noise_shift=True)).verdict == FAILS  # κ_rel rises: not antifragile


def test_all_separate_and_negative_gap():
    apart = make_runs(
        {("standard", "kss", 0.5, 0.0, 0.0): BASE, ("kss-sparse", "kss", 1.0, 0.3, 0.0): [0.01, 0.02, 0.03, 0.02, 0.01]}
    )
    assert claim_all_separate(apart).verdict == HOLDS
    touching = make_runs(
        {("standard", "kss", 0.5, 0.0, 0.0): BASE, ("kss-sparse", "kss", 1.0, 0.3, 0.0): [0.01, 0.02, 0.49, 0.02, 0.01]}
    )
    assert claim_all_separate(touching).verdict == FAILS
    assert claim_negative_gap(apart).verdict == NOT_MEASURED
    neg = make_runs({(None, "kss", 0.1, 0.3, 0.0): [-0.01, -0.008, -0.012, -0.009, -0.011]})
    assert claim_negative_gap(neg).verdict == HOLDS
    assert claim_negative_gap(neg).note == ""  # no control to compare with
    with_control = make_runs(
        {
            (None, "kss", 0.1, 0.3, 0.0): [-0.01, -0.008, -0.012, -0.009, -0.011],
            (None, "lora", 0.1, 0.0, 0.0): [-0.011, -0.009, -0.013, -0.010, -0.012],
        }
    )
    note = claim_negative_gap(with_control).note
    assert (
        note.startswith("dense LoRA at γ = 0.1: gap -0.0110; KSS − dense +0.0010 [") and "val loss KSS 1.0000" in note
    )


def test_evaluate_claims_lists_every_claim():
    results = evaluate_claims(make_runs({("standard", "kss", 0.5, 0.0, 0.0): BASE}))
    ids = [r.id for r in results]
    assert ids[:2] == ["five-config-gap", "quality-cost"]
    assert {"truthfulqa", "hardware", "entropy-aulc", "ract", "fp8", "noise-gap", "antifragile"} <= set(ids)
    assert all(r.verdict == NOT_MEASURED for r in results if r.id in ("truthfulqa", "ract"))


def test_matched_gamma_rule_makes_gamma_effects_not_specific():
    """The negative gap at γ = 0.1 and the val-loss gain of γ = 1 appear in dense LoRA too: not the mask's."""
    from kss_lora.lab.claims import NOT_SPECIFIC, claim_quality_cost

    with_control = make_runs(
        {
            (None, "kss", 0.1, 0.3, 0.0): [-0.01, -0.008, -0.012, -0.009, -0.011],
            (None, "lora", 0.1, 0.0, 0.0): [-0.011, -0.009, -0.013, -0.010, -0.012],
        }
    )
    r = claim_negative_gap(with_control)
    assert r.verdict == NOT_SPECIFIC and [c.role for c in r.comparisons][1:] == [
        "matched-γ control: dense gap < 0",
        "matched-γ control: KSS vs dense",
    ]
    runs = make_runs(
        {
            ("standard", "kss", 0.5, 0.0, 0.0): BASE,
            ("kss-default", "kss", 1.0, 0.1, 0.0): [0.1] * 5,
            (None, "lora", 1.0, 0.0, 0.0): [0.1] * 5,
        }
    )
    lower = {"standard": 1.0, "kss-default": 0.96, "dense 1.0": 0.96}
    runs["val_loss"] = [lower[a] + 0.002 * (s % 3) for a, s in zip(runs["arm"], runs["seed"])]
    q = claim_quality_cost(runs)
    assert q.verdict == NOT_SPECIFIC, q
    without = runs[runs["method"] != "lora"]
    q = claim_quality_cost(without)
    assert q.verdict == HOLDS and "not run" in q.note  # the control is named as missing


def test_family_claims_need_every_preset_and_three_runs():
    one = make_runs({("standard", "kss", 0.5, 0.0, 0.0): BASE, ("kss-default", "kss", 1.0, 0.1, 0.0): BASE})
    from kss_lora.lab.claims import claim_presets_gap

    r = claim_presets_gap(one)
    assert r.verdict == INCONCLUSIVE and "only 1 of 4 presets measured" in r.note
    two = make_runs(
        {("standard", "kss", 0.5, 0.0, 0.0): BASE[:2], ("kss-default", "kss", 1.0, 0.1, 0.0): [0.01, 0.012]}
    )
    assert claim_five_config_gap(two).verdict == "too few runs"  # never holds from n = 2
