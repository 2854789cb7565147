"""TruthfulQA MC1/MC2 of every trained adapter of a sweep, beside the base model, and the published claim judged.

``kss eval truthfulqa --runs RUNS_DIR --sweep NAME --out-dir DIR`` scores the base model and each finished run of
the chosen arms on the *same* held-out questions (none of them trained on by any run: every run must share one
training split), and writes

- ``DIR/scores.csv``: one row per model (arm, seed, mc1, mc2, mc3, n_questions, run_id, wall_time_s);
- ``DIR/per_question/<arm>_s<seed>.csv``: each model's per-question scores;
- ``DIR/runs.csv``, ``DIR/claims.csv``, ``DIR/verdicts.md``: the claim judged by the verdict engine.

Scoring is resumable: ``scores.csv`` is rewritten (atomically) after every model, and a model already in it for the
same questions is not scored again. The claim ("kss-highgamma raises TruthfulQA MC1 38.2% → 43.2%") is a
comparison of training runs: Welch's t over seeds, kss-highgamma against ``standard`` (the published baseline)
on MC1 and MC2 (Holm over the two), then the matched-γ rule against dense LoRA at γ = 1.5.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import DataError
from ..lab.sweep import slug
from ..lab.verdicts import (
    CLAIM_COLUMNS,
    EXTRA_COLUMNS,
    ClaimVerdict,
    Comparison,
    compare,
    compare_to_value,
    judge_family,
    matched_gamma,
)
from ..rundir import atomic_write_text
from .truthfulqa import PUBLISHED_TRUTHFULQA

SCORE_COLUMNS = ("arm", "seed", "mc1", "mc2", "mc3", "n_questions", "questions_digest", "run_id", "wall_time_s")
# The arms issue 14 asks for: the published baseline and claim arm, and dense LoRA at each KSS arm's γ.
DEFAULT_ARMS = ("standard", "dense γ=1.0", "dense γ=1.5", "kss-default", "kss-highgamma")
BASE_ARM = "base"
METRICS = ("mc1", "mc2")


def questions_digest(rows: Sequence[int]) -> str:
    """A short fingerprint of the scored questions: scores are only pooled when they score the same ones."""
    import hashlib

    return hashlib.sha256(",".join(str(r) for r in sorted(rows)).encode()).hexdigest()[:12]


def select_runs(runs: pd.DataFrame, arms: Sequence[str]) -> pd.DataFrame:
    """The finished runs of ``arms`` (by condition), in arm then seed order; an arm with no finished run is an error."""
    ok = runs[(runs["status"] == "ok") & runs["condition"].isin(arms)]
    missing = [a for a in arms if a not in set(ok["condition"])]
    if missing:
        have = sorted(set(runs["condition"].astype(str)))
        raise DataError(f"--arms: no finished run of {missing[0]!r} in this sweep (conditions: {', '.join(have)})")
    order = {a: i for i, a in enumerate(arms)}
    return ok.assign(_o=ok["condition"].map(order)).sort_values(["_o", "seed"]).drop(columns="_o")


def shared_training_rows(paths: Sequence[str], csv: str) -> set[int]:
    """The CSV rows every run trained on; runs trained on different questions cannot share one held-out set."""
    from .run_models import trained_rows

    rows = [trained_rows(p, csv) for p in paths]
    for p, r in zip(paths, rows):
        if r != rows[0]:
            raise DataError(f"--runs: {p} trained on other questions than {paths[0]}: no common held-out set")
    return rows[0]


def _read_scores(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame(columns=list(SCORE_COLUMNS))
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"--out-dir: cannot read {path} ({exc}); move it away to score again") from None
    if list(df.columns[: len(SCORE_COLUMNS)]) != list(SCORE_COLUMNS):
        raise DataError(f"--out-dir: {path} is not a scores table written by kss (columns {list(df.columns)})")
    return df


def score_runs(
    runs: pd.DataFrame,
    out_dir: str | Path,
    *,
    csv: str,
    arms: Sequence[str] = DEFAULT_ARMS,
    prompt: str = "qa",
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    device: Any = None,
    dtype: Any = None,
    base: bool = True,
) -> pd.DataFrame:
    """Score the base model and each finished run of ``arms`` on the held-out questions; return scores.csv's table."""
    import torch

    from .run_models import adapter_dir, load_for_scoring, run_model_name
    from .truthfulqa import evaluate_truthfulqa, load_truthfulqa, sample_items

    chosen = select_runs(runs, arms)
    paths = [str(p) for p in chosen["path"]]
    trained = shared_training_rows(paths, csv)
    items = sample_items([i for i in load_truthfulqa(csv) if i.row not in trained], limit, seed)
    digest = questions_digest([i.row for i in items])
    models = {run_model_name(p) for p in paths}
    if len(models) != 1:
        raise DataError(f"--runs: the runs fine-tune different models ({', '.join(sorted(map(str, models)))})")
    model_name = models.pop()
    out = Path(out_dir)
    (out / "per_question").mkdir(parents=True, exist_ok=True)
    scores_csv = out / "scores.csv"
    scores = _read_scores(scores_csv)
    done = set(zip(scores["arm"].astype(str), scores["run_id"].astype(str), scores["questions_digest"].astype(str)))
    todo: list[tuple[str, Any, str, Path | None]] = [(BASE_ARM, None, BASE_ARM, None)] if base else []
    todo += [(str(r.condition), int(r.seed), str(r.run_id), adapter_dir(r.path)) for r in chosen.itertuples()]
    dtype = dtype or torch.float32
    device = device or torch.device("cpu")
    for arm, run_seed, run_id, adapter in todo:
        if (arm, run_id, digest) in done:
            continue
        model, tokenizer = load_for_scoring(model_name, adapter, dtype=dtype, device=device, seed=run_seed or 0)
        t0 = time.time()
        result = evaluate_truthfulqa(model, tokenizer, items, prompt=prompt, batch_size=batch_size, device=device)
        wall = round(time.time() - t0, 1)
        name = "base" if run_seed is None else f"{slug(arm)}_s{run_seed}"
        result.per_question.to_csv(out / "per_question" / f"{name}.csv", index=False)
        s = result.summary()
        row = {"arm": arm, "seed": run_seed, "mc1": s["mc1"], "mc2": s["mc2"], "mc3": s["mc3"], "n_questions": s["n"]}
        row.update(questions_digest=digest, run_id=run_id, wall_time_s=wall)
        scores = pd.concat([scores, pd.DataFrame([row])], ignore_index=True) if len(scores) else pd.DataFrame([row])
        atomic_write_text(scores_csv, scores[list(SCORE_COLUMNS)].to_csv(index=False))
        print(json.dumps({k: row[k] for k in ("arm", "seed", "mc1", "mc2", "wall_time_s")}), flush=True)
        del model
    return scores[scores["questions_digest"].astype(str) == digest].reset_index(drop=True)


# ----------------------------------------------------------------------------- the claim


def _arm(scores: pd.DataFrame, arm: str, metric: str) -> pd.Series:
    return pd.to_numeric(scores.loc[scores["arm"] == arm, metric], errors="coerce")


def sweep_claim(
    scores: pd.DataFrame, *, claim_arm: str = "kss-highgamma", baseline: str = "standard", control: str = "dense γ=1.5"
) -> ClaimVerdict:
    """The published claim over training runs: ``claim_arm`` above ``baseline`` (and above dense LoRA at its γ)."""
    cid = "truthfulqa"
    text = "TruthfulQA accuracy rises with kss-highgamma"

    def cmp(t: str, c: str, metric: str, role: str) -> Comparison:
        return compare(
            _arm(scores, t, metric),
            _arm(scores, c, metric),
            claim=cid,
            metric=metric,
            treatment_label=t,
            control_label=c,
            direction="greater",
            role=role,
        )

    main = judge_family([cmp(claim_arm, baseline, m, "claim") for m in METRICS])
    verdict = main[0].verdict  # MC1 is the published number
    rows = list(main)
    note = ""
    if (scores["arm"] == control).any():
        shown = judge_family([cmp(control, baseline, m, "matched-γ control: dense vs baseline") for m in METRICS])
        beyond = judge_family([cmp(claim_arm, control, m, "matched-γ control: KSS vs dense") for m in METRICS])
        verdict = matched_gamma(verdict, control_shows_effect=shown[0].verdict, kss_beyond_control=beyond[0].verdict)
        rows += [*shown, *beyond]
        note = (
            f"dense LoRA at the same γ vs {baseline}: MC1 {shown[0].verdict}; {claim_arm} vs that dense arm: "
            f"MC1 {_points(beyond[0])}"
        )
    else:
        note = f"matched-γ control ({control}) not scored"
    base = scores[scores["arm"] == BASE_ARM]
    if len(base):  # context: each arm's seeds against the base model's (deterministic) score
        for arm in dict.fromkeys(scores.loc[scores["arm"] != BASE_ARM, "arm"]):
            family = [
                compare_to_value(
                    _arm(scores, arm, m),
                    claim=cid,
                    metric=m,
                    label=arm,
                    value=float(base[m].iloc[0]),
                    direction="greater",
                    role=f"context: {arm} vs the base model",
                )
                for m in METRICS
            ]
            rows += judge_family(family)
    measured = "; ".join(
        f"{c.metric.upper()} {100 * _arm(scores, baseline, c.metric).mean():.1f}% → "
        f"{100 * _arm(scores, claim_arm, c.metric).mean():.1f}% ({_points(c)})"
        for c in main
    )
    return ClaimVerdict(cid, text, PUBLISHED_TRUTHFULQA, measured, verdict, note, rows)


def _points(c: Comparison) -> str:
    return (
        f"{100 * c.effect:+.1f} points [{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}], "
        f"n {c.n_treatment}/{c.n_control}, Holm p {c.p_adjusted:.3f}: {c.verdict}"
    )


def write_sweep_claims(folder: str | Path) -> list[Path]:
    """runs.csv (scores.csv with condition/status), claims.csv and verdicts.md from ``folder/scores.csv``."""
    from ..tables import markdown_table, write_csv

    folder = Path(folder)
    scores = _read_scores(folder / "scores.csv")
    if scores.empty:
        raise DataError(f"truthfulqa: {folder / 'scores.csv'} has no scores")
    if scores["questions_digest"].astype(str).nunique() > 1:
        raise DataError(f"truthfulqa: {folder / 'scores.csv'} mixes scores of different question sets")
    runs = scores.assign(condition=scores["arm"], status="ok")
    runs[["condition", "status", *SCORE_COLUMNS]].to_csv(folder / "runs.csv", index=False)
    claim = sweep_claim(scores)
    claims_csv = write_csv(folder / "claims.csv", claim.rows(), [*CLAIM_COLUMNS, *EXTRA_COLUMNS])
    table = (
        scores.groupby("arm", sort=False)
        .agg(n=("mc1", "size"), mc1=("mc1", "mean"), mc1_sd=("mc1", "std"), mc2=("mc2", "mean"), mc2_sd=("mc2", "std"))
        .reset_index()
    )
    text = [
        "# TruthfulQA MC1/MC2 over training runs: the published claim, judged by the verdict engine",
        "",
        f"Generated from `scores.csv` ({int(scores['n_questions'].iloc[0])} held-out questions, the same for every "
        "model). Welch t over training seeds, one-sided (higher is better), Holm over MC1 and MC2, 90% intervals; "
        "the claim's verdict is MC1's (the published number), after the matched-γ rule. claims.csv holds every "
        "comparison; runs.csv one row per scored model.",
        "",
        markdown_table(
            [
                {
                    "arm": r.arm,
                    "n": int(r.n),
                    "MC1 (mean ± sd)": f"{r.mc1:.3f} ± {r.mc1_sd:.3f}" if r.n > 1 else f"{r.mc1:.3f}",
                    "MC2 (mean ± sd)": f"{r.mc2:.3f} ± {r.mc2_sd:.3f}" if r.n > 1 else f"{r.mc2:.3f}",
                }
                for r in table.itertuples()
            ]
        ),
        "",
        markdown_table([claim.as_dict()]),
        "",
    ]
    (folder / "verdicts.md").write_text("\n".join(text))
    return [folder / "runs.csv", claims_csv, folder / "verdicts.md"]
