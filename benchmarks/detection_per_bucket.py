"""Detection of human label errors per entropy bucket (issue 15 item 4), for run_detection_experiment.py.

Are the ChaosNLI items whose original label the 100-vote majority overturns found when the item is clear, and
missed only when it is ambiguous? ``run_job`` records ``per_bucket`` for every human-label job; :func:`backfill`
adds it to jobs run before that, from their reference run; :func:`table` writes ``detection_per_bucket.csv`` and
the table.md section.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BUCKETS = ("clean", "ambiguous", "contested")  # least to most disagreement among the 100 votes


def backfill(raw_dir: Path, runs_dir: Path, human_settings: set[str]) -> int:
    """Add each human-label job's detection per entropy bucket to its raw file, for jobs run before ``run_job``
    recorded it: the single-run detectors rebuilt from the job's reference run (``runs/``), checked against
    the AUROC the job recorded before anything is written."""
    import numpy as np

    from kss_lora.config import load_config
    from kss_lora.detect import chaosnli_human_labels, evaluate_detection, evaluate_per_group
    from kss_lora.detect.scores import SINGLE_RUN as ONE_RUN
    from kss_lora.detect.scores import single_run_scores
    from kss_lora.dynamics.records import load_dynamics
    from kss_lora.rundir import atomic_write_text

    for path in sorted(raw_dir.glob("*.json")):
        raw = json.loads(path.read_text())
        ref = runs_dir / raw["job"] / "reference"
        if raw["setting"] not in human_settings or "per_bucket" in raw:
            continue
        if not ref.is_dir():
            print(f"{raw['job']}: no reference run at {ref}; skipped")
            continue
        labels = chaosnli_human_labels(load_config(raw["config"], raw["overrides"]))
        dyn = load_dynamics(ref)
        if not np.array_equal(dyn.labels, labels.given):
            print(f"{raw['job']}: the reference run trained on other labels than the job's; skipped")
            continue
        traj = dyn.checkpoint()
        detectors = [d for d in ONE_RUN if d in raw["detect_options"]["detectors"]]
        truth, m = labels.given != labels.true, labels.scored
        recorded = {e["detector"]: e["auroc"] for e in raw["evaluation"]}
        rows = []
        for d, score in single_run_scores(traj.loss, traj.prob, traj.correct, detectors=detectors).items():
            again = evaluate_detection(truth[m], score[m])["auroc"]
            if abs(again - recorded[d]) > 1e-9:
                print(f"{raw['job']}: {d} rebuilt AUROC {again:.6f} != recorded {recorded[d]:.6f}; nothing written")
                return 1
            by_bucket = evaluate_per_group(truth[m], score[m], labels.bucket[m], column="bucket")
            rows += [{"detector": d, **row} for row in by_bucket.to_dict(orient="records")]
        raw["per_bucket"] = rows
        raw["per_bucket_source"] = "reference run (single-run detectors), rebuilt by per-bucket"
        atomic_write_text(path, json.dumps(raw, indent=1, default=float))
        print(f"{raw['job']}: per-bucket detection of {', '.join(detectors)} added")
    return 0


def table(raws: list[dict[str, Any]], out_dir: Path) -> list[str]:
    """detection_per_bucket.csv and, per human-label setting, AUROC per entropy bucket of the 100 votes."""
    import pandas as pd

    rows = [{"setting": r["setting"], "seed": r["seed"], **e} for r in raws for e in r.get("per_bucket", [])]
    if not rows:
        return []
    df = pd.DataFrame(rows)
    df.to_csv(out_dir / "detection_per_bucket.csv", index=False)
    lines = [
        "## Human label errors per entropy bucket (AUROC; bucket of the item's 100 votes, nats: clean < 0.4 "
        "<= ambiguous < 0.7 <= contested; mean over seeds)",
        "",
    ]
    for setting, g in df.groupby("setting", sort=False):
        wide = g.groupby(["detector", "bucket"], sort=False)["auroc"].mean().unstack("bucket")
        wide = wide[sorted(wide.columns, key=lambda b: (BUCKETS.index(b) if b in BUCKETS else len(BUCKETS), b))]
        size = g.groupby("bucket")[["n_noisy", "n"]].mean()
        lines += [
            f"### {setting} (seeds {', '.join(map(str, sorted(g['seed'].unique())))})",
            "",
            "| detector | "
            + " | ".join(f"{b} ({size.loc[b, 'n_noisy']:.0f} of {size.loc[b, 'n']:.0f} wrong)" for b in wide.columns)
            + " |",
            "|---" * (len(wide.columns) + 1) + "|",
        ]
        lines += [
            f"| {d} | " + " | ".join("–" if v != v else f"{v:.3f}" for v in row) + " |" for d, row in wide.iterrows()
        ]
        lines.append("")
    return lines
