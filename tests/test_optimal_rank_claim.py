"""`kss optimal-rank --sweep`: the claim "the best rank falls as noise rises", judged by the verdict engine."""

from __future__ import annotations

import pandas as pd
from test_claims_csv import recompute

from kss_lora.dynamics.optimal_rank import rank_falls_claim
from kss_lora.lab.verdicts import CLAIM_COLUMNS, DOES_NOT_HOLD, EXTRA_COLUMNS, HOLDS, INCONCLUSIVE, NOT_MEASURED
from kss_lora.tables import write_csv


def runs_table(means: dict[tuple[float, int], float]) -> pd.DataFrame:
    """Three seeds per (noise rate, rank) cell, spread ±0.01 around the given mean validation loss."""
    rows = [
        {
            "condition": f"lora r={rank} | noise={noise:g}",
            "status": "ok",
            "method": "lora",
            "rank": rank,
            "noise_rate": noise,
            "seed": s,
            "val_loss": mean + d,
        }
        for (noise, rank), mean in means.items()
        for s, d in enumerate((-0.01, 0.0, 0.01))
    ]
    return pd.DataFrame(rows)


def test_the_best_rank_falls_with_noise(tmp_path):
    runs = runs_table({(0.0, 1): 0.60, (0.0, 8): 0.50, (0.4, 1): 0.70, (0.4, 8): 0.80})
    claim = rank_falls_claim(runs)
    assert claim.verdict == HOLDS and "0%: r = 8" in claim.measured and "40%: r = 1" in claim.measured
    (c,) = claim.comparisons
    assert (c.treatment, c.control) == ("lora r=1 | noise=0.4", "lora r=8 | noise=0.4")
    assert c.effect == -0.10 or abs(c.effect + 0.10) < 1e-12
    write_csv(tmp_path / "claims.csv", claim.rows(), [*CLAIM_COLUMNS, *EXTRA_COLUMNS])
    runs.to_csv(tmp_path / "runs.csv", index=False)
    assert recompute(tmp_path / "claims.csv", tmp_path / "runs.csv") == 1


def test_a_best_rank_that_stays_put_does_not_hold_and_edge_cases():
    same = runs_table({(0.0, 1): 0.60, (0.0, 8): 0.50, (0.4, 1): 0.90, (0.4, 8): 0.80})
    assert rank_falls_claim(same).verdict == DOES_NOT_HOLD
    lowest = runs_table({(0.0, 1): 0.40, (0.0, 8): 0.50, (0.4, 1): 0.70, (0.4, 8): 0.80})
    assert rank_falls_claim(lowest).verdict == INCONCLUSIVE  # r = 1 is already best at 0%: nothing can fall
    clean_only = runs_table({(0.0, 1): 0.60, (0.0, 8): 0.50})
    assert rank_falls_claim(clean_only).verdict == NOT_MEASURED
