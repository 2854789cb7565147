"""``kss report``: one self-contained HTML page (figures inlined), the PNGs, a Markdown summary and claims.csv.

Sections, in the order a user needs them: what was run (with a banner when an arm has fewer than 3 runs), their
own results per arm (accuracy and loss on validation and test, the gap, with 95% intervals), every arm against
the baseline, then, unless ``claims=False``, the published claims judged by the verdict engine (claims.csv beside
the page holds every comparison, recomputable from runs.csv), the config table laid out like the published one,
the matched-γ control, the noise table; then figures and failed runs.

A report can be built from a runs directory or from a runs.csv written by an earlier report (``kss report
results/five_config/runs.csv``): everything but the per-epoch loss curves is recomputed from it.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

import pandas as pd

from .. import rundir
from ..errors import DataError
from ..output_paths import check_output_dir
from ..tables import MISSING, fmt_ci, fmt_mean_std, fmt_num, fmt_p, write_csv
from . import figures
from .claims import PUBLISHED_CONFIG, PUBLISHED_NOISE, RATIO_CONVENTION, claim_rows, dense_at, evaluate_claims
from .registry import default_baseline, load_curves, load_runs, points_not_run
from .stats import aggregate, check_baseline, markdown_table, mean_ci, summary_rows
from .verdicts import (
    CI_LEVEL,
    CLAIM_COLUMNS,
    EXTRA_COLUMNS,
    HOLDS,
    MIN_RUNS,
    NOT_MEASURED,
    VERDICTS,
    compare,
    judge_family,
)

CAVEAT = (
    "The five-config table compares `standard` (dense LoRA, γ = 0.5) with KSS presets at γ = 1.0 / 1.5. "
    "Under Adam, γ acts like a learning-rate multiplier on the LoRA update, so a difference between them may be "
    "the γ (learning-rate) effect, not the gradient mask. Only the matched-γ control (dense LoRA at the same γ) "
    "separates the two."
)
UNITS = "Losses and gaps are mean cross-entropy in nats; accuracies are fractions."
# Columns a runs.csv needs for a report (the rest are shown when present).
RUNS_CSV_COLUMNS = ("condition", "arm", "status", "seed", "val_loss", "train_loss", "gap")


def load_runs_csv(path: str | Path) -> pd.DataFrame:
    """A runs.csv written by a report, as the table :func:`registry.load_runs` gives (without run directories)."""
    try:
        runs = pd.read_csv(path, keep_default_na=True)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read as a runs table ({exc.__class__.__name__})") from None
    missing = [c for c in RUNS_CSV_COLUMNS if c not in runs]
    if missing:
        raise DataError(
            f"{path}: a runs.csv needs the columns {', '.join(RUNS_CSV_COLUMNS)}; missing {', '.join(missing)}"
        )
    for col, default in (("stratum", ""), ("error", ""), ("preset", None), ("noise_rate", 0.0), ("precision", "fp32")):
        if col not in runs:
            runs[col] = default
    runs["stratum"] = runs["stratum"].fillna("").astype(str)
    runs["preset"] = runs["preset"].where(runs["preset"].notna(), None)
    runs["path"] = None
    return runs


def write_report(
    runs_dir: str | Path,
    output: str | Path = "report",
    *,
    baseline: str | None = None,
    title: str | None = None,
    sweep: str | list[str] | None = None,
    claims: bool = True,
) -> dict[str, Path]:
    """Write ``index.html``, ``summary.md``, ``conditions.csv``, ``runs.csv``, ``claims.csv`` and PNGs into ``output``.

    ``runs_dir`` is a runs directory or a runs.csv file. ``claims=False`` leaves the published claims out (and
    writes no claims.csv): a report on the user's own sweep only.
    """
    source, out = Path(runs_dir), check_output_dir(output, "--output")
    named_baseline = baseline is not None
    if not source.exists():
        raise DataError(f"{source}: no such runs directory or runs.csv")
    from_csv = source.is_file()
    if from_csv:
        if sweep:
            raise DataError("--sweep: only for a runs directory (a runs.csv holds the runs it holds)")
        runs = load_runs_csv(source)
        baseline = baseline or ("standard" if "standard" in set(runs["arm"]) else None)
        curves, not_run = pd.DataFrame(), 0
    else:
        runs = load_runs(source, sweep=sweep)
        baseline = baseline or default_baseline(source, runs, sweep=sweep)
        curves, not_run = load_curves(runs), len(points_not_run(source, sweep))
    if named_baseline:
        check_baseline(runs, baseline)  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    table = aggregate(runs, baseline=baseline, strict_baseline=False)
    ok = runs[runs["status"] == "ok"]
    conditions = list(dict.fromkeys(table["condition"])) if len(table) else []
    figs: dict[str, Path | None] = {
        "loss_curves": figures.loss_curves(curves, conditions, out / "loss_curves.png"),
        "run_tiles": figures.run_tiles(
            runs, list(dict.fromkeys([*conditions, *runs["condition"]])), out / "run_tiles.png"
        ),
        "gap_vs_noise": figures.gap_vs(table, ok, "noise_rate", "label-noise rate", out / "gap_vs_noise.png"),
        "gap_vs_rank": figures.gap_vs(table, ok, "rank", "LoRA rank", out / "gap_vs_rank.png"),
        "gap_vs_sparsity": figures.gap_vs(table, ok, "sparsity", "sparsity ρ", out / "gap_vs_sparsity.png"),
    }
    if from_csv and figs["loss_curves"] is None and (out / "loss_curves.png").is_file():
        figs["loss_curves"] = out / "loss_curves.png"  # drawn from the run directories earlier; runs.csv has no curves
    judged = evaluate_claims(runs) if claims else []
    sections = build_sections(runs, table, baseline, not_run=not_run, claims=judged if claims else None)
    named = [sweep] if isinstance(sweep, str) else list(sweep or [])
    title = title or f"KSS-LoRA lab report: {' + '.join(named) or (source.parent.name if from_csv else source.name)}"
    md = render_markdown(title, sections, figs)
    page = render_html(title, sections, figs)
    paths = {"html": out / "index.html", "markdown": out / "summary.md", "csv": out / "conditions.csv"}
    rundir.atomic_write_text(paths["html"], page)
    rundir.atomic_write_text(paths["markdown"], md)
    table.to_csv(paths["csv"], index=False)
    runs_csv = out / "runs.csv"
    if not (from_csv and runs_csv.resolve() == source.resolve()):
        runs.drop(columns=["path"]).to_csv(runs_csv, index=False)
    paths["runs"] = runs_csv
    if claims:
        paths["claims"] = write_csv(out / "claims.csv", claim_rows(judged), [*CLAIM_COLUMNS, *EXTRA_COLUMNS])
    paths.update({k: v for k, v in figs.items() if v is not None})
    return paths


# ----------------------------------------------------------------------------- content


def build_sections(
    runs: pd.DataFrame,
    table: pd.DataFrame,
    baseline: str | None,
    not_run: int = 0,
    claims: list[Any] | None = None,
) -> list[dict[str, Any]]:
    """The report as data: a list of {title, text, rows} sections, rendered to Markdown and HTML alike.

    ``claims``: the judged published claims, or None to leave that part out.
    """
    ok = runs[runs["status"] == "ok"]
    counts = runs["status"].value_counts().to_dict()
    text = setting_text(runs, counts, baseline)
    if not_run:
        text += f" **{not_run} further points of the sweep were not run** (the sweep was cut short); runs per condition are in the n column."
    sections = [{"title": "What was run", "text": text, "rows": []}]
    small = few_runs(table)
    if small:
        sections.append(
            {
                "title": "Too few runs",
                "text": (
                    f"**Fewer than {MIN_RUNS} finished runs in: {', '.join(small)}.** Their means are shown, but no "
                    f"comparison with them gets a verdict (`too few runs`); run at least {MIN_RUNS} seeds per arm."
                ),
                "rows": [],
            }
        )
    noisy = bool((ok["noise_rate"].fillna(0) > 0).any()) if len(ok) else False
    sections.append(
        {
            "title": "Your results",
            "text": (
                "Per arm: mean over runs with its 95% t interval. gap = val loss − train loss (train loss in eval mode "
                "on the labels trained on)"
                + ("; gap_clean uses the true labels, and is the one to read under label noise. " if noisy else ". ")
                + UNITS
            ),
            "rows": arm_rows(table, ok, noisy=noisy),
        }
    )
    sections.append(
        {
            "title": "All conditions",
            "text": (
                "Every arm against the baseline arm of its stratum, mean ± std over runs. κ_rel = gap ÷ baseline gap "
                "(undefined where the baseline gap's 95% interval is not clearly above 0: read the difference instead); quality "
                "cost = relative val-loss change; CI = Welch's 95% t interval of the gap difference; Welch p two-sided, "
                "Holm p adjusted over the stratum's arms; Mann-Whitney U beside it; 'ranges overlap' = whether the two "
                "groups' gap ranges intersect. Under noise these use gap_clean. " + RATIO_CONVENTION + " " + UNITS
            ),
            "rows": summary_rows(table),
        }
    )
    if claims is not None:
        sections += claims_sections(ok, table, baseline, claims)
    failed = runs[runs["status"] != "ok"]
    if len(failed):
        sections.append(
            {
                "title": "Failed and unfinished runs",
                "text": (
                    "Every run that did not finish ok: failed (its error), unfinished (no final result.json yet) and "
                    "corrupt (an unreadable result.json or metrics.jsonl: the file and why). `kss sweep` redoes "
                    "unfinished and corrupt runs; `--retry-failed` reruns failed ones."
                    if (failed["status"] == "corrupt").any()
                    else ""
                ),
                "rows": [
                    {"run": str(r.get("name", r.get("run_id", ""))), "status": r["status"], "error": _text(r["error"])}
                    for _, r in failed.iterrows()
                ],
            }
        )
    return sections


def claims_sections(ok: pd.DataFrame, table: pd.DataFrame, baseline: str | None, claims: list[Any]) -> list[dict]:
    """The published-claims part of the page: verdicts, the config table, the matched-γ control, the noise table."""
    level = f"{100 * CI_LEVEL:.0f}%"
    sections: list[dict[str, Any]] = [
        {
            "title": "Published claims",
            "text": (
                "Each published KSS-LoRA claim these runs can speak to (the published numbers are Llama-3.1-8B's), "
                "judged on the effect *relative to the baseline*. Welch's t-test, one-sided in the claimed direction, "
                "Holm-adjusted within a claim that covers several arms; intervals are the "
                f"{level} t interval (its ends are the one-sided 95% bounds), Fieller's for ratios. **holds** = n ≥ 3 "
                "per arm, adjusted p < 0.05 in the claimed direction and the interval reaching the claimed magnitude; "
                "**does not hold** = the interval excludes it; **inconclusive** = neither; **too few runs** = an arm "
                "has fewer than 3; **not specific to KSS** = dense LoRA at the same γ shows the effect too; **not "
                "measured** = no runs speak to it. " + RATIO_CONVENTION + " Every comparison is in claims.csv, "
                "recomputable from runs.csv. Under noise, verdicts use gap_clean."
            ),
            "rows": [c.as_dict() for c in claims],
        }
    ]
    zero = table[(table["noise_rate"].fillna(0) == 0)] if len(table) else table
    if len(zero):
        sections.append(
            {
                "title": "Config table (0% noise)",
                "text": "Laid out like the published five-config table (its numbers are Llama-3.1-8B's). "
                "gap ratio = this arm's gap ÷ the baseline's. " + UNITS,
                "rows": config_rows(zero),
            }
        )
    if len(zero) and (ok["sparsity"].fillna(0) > 0).any():
        rows = matched_rows(ok)
        sections.append({"title": "Matched-γ control", "text": CAVEAT + " " + matched_text(claims, rows), "rows": rows})
    if ok["noise_rate"].nunique(dropna=True) > 1:
        sections.append(
            {
                "title": "Noise table",
                "text": (
                    "Symmetric label noise on the training set (validation clean). `gap` is against the labels trained on "
                    "(noisy) and shrinks under noise for every method; `gap_clean` (val − train loss on the true labels) is "
                    "what verdicts use. " + RATIO_CONVENTION
                ),
                "rows": noise_rows(table, baseline),
            }
        )
    return sections


def few_runs(table: pd.DataFrame) -> list[str]:
    """Conditions with fewer than :data:`MIN_RUNS` finished runs, as ``name (n=2)``."""
    if table.empty:
        return []
    return [f"{r['condition']} (n={r['n']})" for _, r in table.iterrows() if r["n"] < MIN_RUNS]


def _with_ci(values: Any, digits: int = 4) -> str:
    mean, lo, hi = mean_ci(values)
    if not math.isfinite(mean):
        return MISSING
    return fmt_num(mean, digits) + (f" {fmt_ci(lo, hi, digits, signed=False)}" if math.isfinite(lo) else "")


def arm_rows(table: pd.DataFrame, ok: pd.DataFrame, *, noisy: bool) -> list[dict[str, str]]:
    """The user's own numbers, one row per condition: accuracy and loss on validation and test, the gap(s)."""
    rows = []
    for _, r in table.iterrows():
        g = ok[ok["condition"] == r["condition"]]

        def col(name: str, g: pd.DataFrame = g) -> Any:
            return g[name] if name in g else []

        row = {
            "condition": str(r["condition"]),
            "n": str(r["n"]),
            "val acc": _with_ci(col("val_accuracy"), 3),
            "test acc": _with_ci(col("test_accuracy"), 3),
            "val loss (nats)": _with_ci(col("val_loss")),
            "test loss (nats)": _with_ci(col("test_loss")),
            "train loss (nats)": _with_ci(col("train_loss")),
            "gap (nats)": _with_ci(col("gap")),
        }
        if noisy:
            row["gap_clean (nats)"] = _with_ci(col("gap_clean"))
        rows.append(row)
    return rows


def _text(x: Any) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else str(x)


def setting_text(runs: pd.DataFrame, counts: dict[str, int], baseline: str | None) -> str:
    """What was run, from the runs table's own columns (so a runs.csv gives the same sentence)."""
    ok = runs[runs["status"] == "ok"]
    parts = [
        f"{len(runs)} runs: {counts.get('ok', 0)} ok, {counts.get('failed', 0)} failed, "
        f"{counts.get('unfinished', 0)} unfinished, {counts.get('corrupt', 0)} corrupt. Baseline arm: `{baseline}`."
    ]
    if len(ok):

        def one(col: str) -> str:
            values = sorted({str(v) for v in ok[col].dropna()}) if col in ok else []
            return ", ".join(values) if values else MISSING

        def num(col: str) -> str:
            return one(col).replace(".0,", ",").removesuffix(".0") if col in ok else MISSING

        parts.append(
            f"Model `{one('model')}`; {num('n_train')} training and {num('n_val')} validation examples; "
            f"{num('epochs')} epochs, lr {one('lr')}, LoRA rank {num('rank')}, precision {one('precision')}; "
            f"seeds {sorted({int(s) for s in ok['seed'].dropna()})}."
        )
        wall = ok["wall_time_s"].dropna() if "wall_time_s" in ok else []
        if len(wall):
            parts.append(f"Mean wall time per run {wall.mean():.0f} s.")
    return " ".join(parts)


def _gap_ratio(r: Any, col: str = "gap") -> str:
    """arm ÷ baseline of a gap, or why there is none."""
    if r["is_baseline"]:
        return MISSING
    lo = r.get(f"baseline_{col}_ci_lo")
    if not (isinstance(lo, float) and math.isfinite(lo) and lo > 0):
        return "undefined (baseline gap not clearly above 0)"
    base = r.get(f"baseline_{col}_mean")
    return fmt_num(r[f"{col}_mean"] / base, 2) if isinstance(base, float) and base else MISSING


def config_rows(zero: pd.DataFrame) -> list[dict[str, str]]:
    rows = []
    for _, r in zero.iterrows():
        published = PUBLISHED_CONFIG.get(str(r["preset"])) if r.get("preset") else None
        rows.append(
            {
                "config": str(r["condition"]),
                "γ": fmt_num(r["gamma"], 2),
                "ρ": fmt_num(r["sparsity"], 2),
                "val loss": fmt_mean_std(r["val_loss_mean"], r["val_loss_std"]),
                "gap": fmt_mean_std(r["gap_mean"], r["gap_std"]),
                "gap ratio": _gap_ratio(r),
                "val acc": fmt_mean_std(r["val_accuracy_mean"], r["val_accuracy_std"], 3),
                "gap diff 95% CI": MISSING
                if r["is_baseline"] or "gap_ci_lo" not in r
                else fmt_ci(r["gap_ci_lo"], r["gap_ci_hi"], 4),
                "Holm p": MISSING if r["is_baseline"] else fmt_p(r.get("gap_welch_p_holm")),
                "published val / gap": f"{published[0]} / {published[1]}" if published else MISSING,
            }
        )
    return rows


def matched_rows(ok: pd.DataFrame) -> list[dict[str, str]]:
    """Each KSS arm next to dense LoRA at the same γ (and rank), at 0% noise; one Holm family, one-sided (KSS < dense)."""
    zero = ok[ok["noise_rate"].fillna(0) == 0]
    pairs = []
    for arm, g in zero[zero["sparsity"].fillna(0) > 0].groupby("arm", sort=False):
        pairs.append((arm, g, dense_at(ok, g)))
    measured = [(a, g, d) for a, g, d in pairs if len(d)]
    judged = judge_family(
        [
            compare(
                g["gap"],
                d["gap"],
                claim="matched-γ",
                metric="gap",
                treatment_label=str(a),
                control_label=", ".join(sorted(d["condition"].unique())),
                direction="less",
                scale="ratio",
            )
            for a, g, d in measured
        ]
    )
    by_arm = {a: c for (a, _, _), c in zip(measured, judged)}
    rows = []
    for arm, g, d in pairs:
        gamma = float(g["gamma"].iloc[0])
        c = by_arm.get(arm)
        if c is None:
            rows.append(
                {
                    "KSS arm": arm,
                    "γ": f"{gamma:g}",
                    "dense arm (same γ)": "not run",
                    "KSS gap": fmt_mean_std(g["gap"].mean(), g["gap"].std()),
                    "dense gap": MISSING,
                    "gap ratio": MISSING,
                    "diff 90% CI": MISSING,
                    "Holm p (one-sided)": MISSING,
                    "val loss KSS / dense": MISSING,
                    "verdict": NOT_MEASURED,
                }
            )
            continue
        verdict = (
            "KSS smaller"
            if c.verdict == HOLDS
            else "too few runs"
            if c.verdict == "too few runs"
            else "KSS larger"
            if c.ci_low > 0
            else "no significant difference"
        )
        rows.append(
            {
                "KSS arm": arm,
                "γ": f"{gamma:g}",
                "dense arm (same γ)": c.control,
                "KSS gap": fmt_mean_std(g["gap"].mean(), g["gap"].std()),
                "dense gap": fmt_mean_std(d["gap"].mean(), d["gap"].std()),
                "gap ratio": fmt_num(c.ratio, 2),
                "diff 90% CI": fmt_ci(c.ci_low, c.ci_high, 4),
                "Holm p (one-sided)": fmt_p(c.p_adjusted),
                "val loss KSS / dense": f"{fmt_num(g['val_loss'].mean())} / {fmt_num(d['val_loss'].mean())}",
                "verdict": verdict,
            }
        )
    return rows


def matched_text(claims: list[Any], rows: list[dict[str, str]]) -> str:
    c = next((c for c in claims if c.id == "matched-gamma"), None)
    compared = [r for r in rows if r["verdict"] not in (NOT_MEASURED, "not measured here")]
    if (c is None or c.verdict == NOT_MEASURED) and compared:
        # KSS arms that are not presets (e.g. a sparsity sweep): the table below is the control.
        smaller = [r["KSS arm"] for r in compared if r["verdict"] == "KSS smaller"]
        return (
            f"Dense LoRA at the same γ was run, so the table below separates the mask from γ: "
            f"{len(smaller)} of {len(compared)} KSS arms have a significantly smaller gap than dense LoRA"
            + (f" ({', '.join(smaller)})." if smaller else ".")
            + " (Welch, one-sided, Holm over the table's arms.) The preset claim above needs the KSS presets themselves."
        )
    if c is None or c.verdict == NOT_MEASURED:
        return (
            "**The matched-γ control was not run here**, so this report cannot tell a masking effect from a "
            "γ effect: run the `matched_lr` sweep into the same runs directory."
        )
    if c.verdict == HOLDS:
        return f"**At matched γ, every KSS preset has a significantly smaller gap than dense LoRA** ({c.note})."
    if c.verdict in ("does not hold", "inconclusive"):
        return (
            f"**KSS does not beat dense LoRA at matched γ for every preset** ({c.note}): where it does not, "
            "the five-config difference is the γ (learning-rate) effect."
        )
    return f"**At matched γ: {c.verdict}** ({c.note})."


def noise_rows(table: pd.DataFrame, baseline: str | None) -> list[dict[str, str]]:
    rows = []
    # Arms run at several noise rates (a dense control run only at 0% does not belong in this table).
    arms = [
        a
        for a in dict.fromkeys(table["arm"])
        if a != baseline and table.loc[table["arm"] == a, "noise_rate"].nunique() > 1
    ]
    for rate, g in table.groupby("noise_rate", sort=True):
        base = g[g["arm"] == baseline]
        if base.empty:
            continue
        b = base.iloc[0]
        for arm in arms:
            t = g[g["arm"] == arm]
            if t.empty:
                continue
            r = t.iloc[0]
            published = PUBLISHED_NOISE.get(round(float(rate), 2))
            rows.append(
                {
                    "noise": f"{100 * rate:.0f}%",
                    "arm": arm,
                    "baseline gap": fmt_mean_std(b["gap_mean"], b["gap_std"]),
                    "arm gap": fmt_mean_std(r["gap_mean"], r["gap_std"]),
                    "gap ratio": _gap_ratio(r),
                    "baseline gap_clean": fmt_mean_std(b["gap_clean_mean"], b["gap_clean_std"]),
                    "arm gap_clean": fmt_mean_std(r["gap_clean_mean"], r["gap_clean_std"]),
                    "gap_clean ratio": _gap_ratio(r, "gap_clean"),
                    "gap_clean diff 95% CI": fmt_ci(r.get("gap_clean_ci_lo"), r.get("gap_clean_ci_hi"), 4),
                    "val acc base / arm": f"{fmt_num(b['val_accuracy_mean'], 3)} / {fmt_num(r['val_accuracy_mean'], 3)}",
                    "published gaps": f"{published[0]} → {published[1]} (ratio {published[1] / published[0]:.2f})"
                    if published
                    else MISSING,
                }
            )
    return rows


# ----------------------------------------------------------------------------- rendering

FIGURE_CAPTIONS = {
    "loss_curves": "Loss per epoch, per condition",
    "run_tiles": "One tile per run, coloured by its gap (gap_clean)",
    "gap_vs_noise": "Gap vs label-noise rate",
    "gap_vs_rank": "Gap vs LoRA rank",
    "gap_vs_sparsity": "Gap vs sparsity ρ",
}


def render_markdown(title: str, sections: list[dict[str, Any]], figs: dict[str, Path | None]) -> str:
    lines = [f"# {title}", ""]
    for s in sections:
        lines += [f"## {s['title']}", ""]
        if s["text"]:
            lines += [s["text"], ""]
        if s["rows"]:
            lines += [markdown_table(s["rows"]), ""]
    lines += ["## Figures", ""]
    for key, path in figs.items():
        if path is not None:
            lines += [f"![{FIGURE_CAPTIONS[key]}]({path.name})", ""]
    return "\n".join(lines)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.holds{background:#d9f2d9}td.fails{background:#f8d7d7}td.inconclusive{background:#fff3cd}
td.not-measured{color:#777}td.not-specific{background:#e8e0f5}figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
"""
VERDICT_CLASS = dict(
    zip(VERDICTS, ("holds", "fails", "inconclusive", "not-measured", "not-specific", "not-measured"), strict=True)
)


def _md_inline(text: str) -> str:
    """Escape, then render the two Markdown marks the section texts use (**bold**, `code`)."""
    import re

    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"\*(.+?)\*", r"<em>\1</em>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def html_table(rows: list[dict[str, str]], table_id: str) -> str:
    if not rows:
        return "<p><em>no rows</em></p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            cls = f' class="{VERDICT_CLASS[r[c]]}"' if c == "verdict" and r[c] in VERDICT_CLASS else ""
            cells.append(f"<td{cls}>{_md_inline(r[c])}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def render_html(title: str, sections: list[dict[str, Any]], figs: dict[str, Path | None]) -> str:
    """A single self-contained page: CSS inline and every figure embedded as a base64 PNG."""
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
    ]
    for s in sections:
        sid = s["title"].lower().split(" (")[0].replace(" ", "-").replace("γ", "gamma")
        parts.append(f"<section id='{sid}'><h2>{html.escape(s['title'])}</h2>")
        if s["text"]:
            parts.append(f"<p>{_md_inline(s['text'])}</p>")
        if s["rows"]:
            parts.append(html_table(s["rows"], f"table-{sid}"))
        parts.append("</section>")
    parts.append("<section id='figures'><h2>Figures</h2>")
    for key, path in figs.items():
        if path is None:
            continue
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(
            f"<figure id='fig-{key}'><img alt='{html.escape(FIGURE_CAPTIONS[key])}' "
            f"src='data:image/png;base64,{data}'><figcaption>{html.escape(FIGURE_CAPTIONS[key])} "
            f"({path.name})</figcaption></figure>"
        )
    parts.append("</section></body></html>")
    return "\n".join(parts)
