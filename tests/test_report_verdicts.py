"""Precision, TruthfulQA and detection verdicts go through the same engine: checked on fabricated tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kss_lora.errors import DataError


def _precision_runs(shift: dict[tuple[str, str], float], seeds: int = 3) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for (method, precision), mean in shift.items():
        for s in range(seeds):
            rows.append(
                {"precision": precision, "method": method, "seed": s, "status": "ok",
                 "degradation": mean + rng.normal(0, 0.005)}
            )  # fmt: skip
    return rows


def test_precision_claims_standard_68_and_the_gamma_control():
    from kss_lora.precision_lab.verdict import precision_claims

    cells = {}
    for cond in ("emu-fp8", "emu-fp8-raw"):
        cells.update({("standard", cond): 0.10, ("kss-default", cond): 0.02, ("lora-g1", cond): 0.02})
    claims = {c.id: c for c in precision_claims(_precision_runs(cells))}
    assert claims["fp8-standard-68"].verdict == "does not hold"  # +10%, interval far below 68%
    kss = claims["fp8-kss-vs-standard"]
    assert kss.verdict == "does not hold"  # −8 points, far from the claimed −63
    assert {c.role for c in kss.comparisons} == {
        "claim",
        "matched-γ control: dense vs baseline",
        "matched-γ control: KSS vs dense",
    }
    two = precision_claims(_precision_runs(cells, seeds=2))
    assert all(c.verdict == "too few runs" for c in two)


def test_truthfulqa_paired_claims():
    from kss_lora.eval.truthfulqa import paired_claims

    rng = np.random.default_rng(1)
    base = pd.DataFrame(
        {"row": range(200), "mc1": rng.integers(0, 2, 200).astype(float), "mc2": rng.uniform(0, 1, 200)}
    )
    better = base.assign(mc2=np.clip(base["mc2"] + 0.05 + rng.normal(0, 0.02, 200), 0, 1))
    claim = paired_claims(base, better, adapter_label="kss-highgamma")
    by_metric = {c.metric: c for c in claim.comparisons}
    assert by_metric["mc2"].verdict == "holds" and by_metric["mc2"].effect == pytest.approx(
        (better["mc2"] - base["mc2"]).mean()
    )
    assert by_metric["mc1"].effect == 0.0 and by_metric["mc1"].verdict == "inconclusive"  # no change, no spread
    assert claim.verdict == "too few runs"  # one trained adapter: no verdict on the method
    assert paired_claims(base, better, adapter_label="k", runs=3).verdict in ("holds", "inconclusive")
    with pytest.raises(DataError, match="same questions"):
        paired_claims(base, better.iloc[:100], adapter_label="k")


def test_detection_claims_below_chance_and_too_few_runs():
    from kss_lora.detect.evaluate import detection_claims

    rows = []
    for setting, seeds in (("sym20", 3), ("sym40", 2)):
        for s in range(seeds):
            for det, f1, auroc in (
                ("ract", 0.1 + 0.01 * s, 0.2 + 0.01 * s),
                ("aum", 0.8, 0.9),
                ("ract-curriculum", 0.8 + 0.01 * s, 0.9),
            ):
                rows.append({"setting": setting, "seed": s, "detector": det, "f1_at_k": f1, "auroc": auroc})  # fmt: skip
    claims = {c.id: c for c in detection_claims(pd.DataFrame(rows))}
    f1 = {c.treatment: c.verdict for c in claims["ract-f1"].comparisons}
    assert f1 == {"ract @ sym20": "does not hold", "ract @ sym40": "too few runs"}
    below = {c.treatment: c.verdict for c in claims["ract-below-chance"].comparisons}
    assert below["ract @ sym20"] == "holds" and claims["ract-below-chance"].verdict == "too few runs"
