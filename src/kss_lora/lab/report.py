"""``kss report``: one self-contained HTML page (figures inlined), the PNGs, and a Markdown summary.

Sections, in the order a sceptical reader needs them: what was run, the claims table (seed number, our
number with CI, verdict), the config table laid out like the seeds', the matched-γ caveat and control,
the noise table, all conditions with their statistics, the figures, and failed runs.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from .. import rundir
from . import figures
from .claims import NOT_MEASURED, SEED_CONFIG, SEED_NOISE, evaluate_claims
from .registry import default_baseline, load_curves, load_runs, points_not_run
from .stats import aggregate, fmt_mean_std, fmt_num, fmt_p, markdown_table, summary_rows

CAVEAT = (
    "The five-config table compares `standard` (dense LoRA, γ = 0.5) with KSS presets at γ = 1.0 / 1.5. "
    "Under Adam, γ acts like a learning-rate multiplier on the LoRA update, so a difference between them may be "
    "the γ (learning-rate) effect, not the gradient mask. Only the matched-γ control (dense LoRA at the same γ) "
    "separates the two."
)


def write_report(
    runs_dir: str | Path,
    output: str | Path = "report",
    *,
    baseline: str | None = None,
    title: str | None = None,
    sweep: str | list[str] | None = None,
) -> dict[str, Path]:
    """Write ``index.html``, ``summary.md``, ``conditions.csv``, ``runs.csv`` and PNG figures into ``output``."""
    runs_dir, out = Path(runs_dir), Path(output)
    out.mkdir(parents=True, exist_ok=True)
    runs = load_runs(runs_dir, sweep=sweep)
    baseline = baseline or default_baseline(runs_dir, runs, sweep=sweep)
    table = aggregate(runs, baseline=baseline)
    ok = runs[runs["status"] == "ok"]
    conditions = list(dict.fromkeys(table["condition"])) if len(table) else []
    figs: dict[str, Path | None] = {
        "loss_curves": figures.loss_curves(load_curves(runs), conditions, out / "loss_curves.png"),
        "run_tiles": figures.run_tiles(
            runs, list(dict.fromkeys([*conditions, *runs["condition"]])), out / "run_tiles.png"
        ),
        "gap_vs_noise": figures.gap_vs(table, ok, "noise_rate", "label-noise rate", out / "gap_vs_noise.png"),
        "gap_vs_rank": figures.gap_vs(table, ok, "rank", "LoRA rank", out / "gap_vs_rank.png"),
        "gap_vs_sparsity": figures.gap_vs(table, ok, "sparsity", "sparsity ρ", out / "gap_vs_sparsity.png"),
    }
    sections = build_sections(runs, table, baseline, not_run=len(points_not_run(runs_dir, sweep)))
    named = [sweep] if isinstance(sweep, str) else list(sweep or [])
    title = title or f"KSS-LoRA lab report: {' + '.join(named) or runs_dir.name}"
    md = render_markdown(title, sections, figs)
    page = render_html(title, sections, figs)
    paths = {"html": out / "index.html", "markdown": out / "summary.md", "csv": out / "conditions.csv"}
    rundir.atomic_write_text(paths["html"], page)
    rundir.atomic_write_text(paths["markdown"], md)
    table.to_csv(paths["csv"], index=False)
    runs.drop(columns=["path"]).to_csv(out / "runs.csv", index=False)
    paths.update({k: v for k, v in figs.items() if v is not None})
    return paths


# ----------------------------------------------------------------------------- content


def build_sections(
    runs: pd.DataFrame, table: pd.DataFrame, baseline: str | None, not_run: int = 0
) -> list[dict[str, Any]]:
    """The report as data: a list of {title, text, rows} sections, rendered to Markdown and HTML alike."""
    ok = runs[runs["status"] == "ok"]
    counts = runs["status"].value_counts().to_dict()
    text = setting_text(runs, counts, baseline)
    if not_run:
        text += f" **{not_run} further points of the sweep were not run** (the sweep was cut short); seeds per condition are in the n column."
    sections = [{"title": "What was run", "text": text, "rows": []}]
    claims = evaluate_claims(runs)
    sections.append(
        {
            "title": "Claims",
            "text": (
                "Each seed claim (docs/spec.md §4) this runs directory can speak to, judged on the effect *relative to the "
                "baseline* (absolute losses from Llama-3.1-8B do not transfer to another model): **holds** = "
                "significant in the claimed direction and the 95% bootstrap CI reaches the seed's magnitude; **does "
                "not hold** = the CI excludes the seed's magnitude; **inconclusive** = neither. Ratios are "
                "method / baseline (κ_rel for gaps), with 95% CI over seeds. Under noise, verdicts use gap_clean."
            ),
            "rows": [c.as_dict() for c in claims],
        }
    )
    zero = table[(table["noise_rate"].fillna(0) == 0)] if len(table) else table
    if len(zero):
        sections.append(
            {
                "title": "Config table (0% noise)",
                "text": "Laid out like the seeds' five-config table; "
                "seed numbers are Llama-3.1-8B's. ×: baseline gap ÷ this gap.",
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
                    "what verdicts use. KSS vs baseline = relative change of the gap."
                ),
                "rows": noise_rows(table, baseline),
            }
        )
    sections.append(
        {
            "title": "All conditions",
            "text": (
                "Mean ± std over seeds. κ_rel = gap / baseline gap (same stratum); quality cost = relative val-loss change; "
                "CI = bootstrap 95% CI of the gap difference vs the baseline; Welch and Mann-Whitney U p-values on the gap; "
                "'ranges overlap' = whether the two groups' gap ranges intersect. Under noise these use gap_clean, and κ_rel "
                "is n/a where the baseline gap is not positive."
            ),
            "rows": summary_rows(table),
        }
    )
    failed = runs[runs["status"] != "ok"]
    if len(failed):
        sections.append(
            {
                "title": "Failed and unfinished runs",
                "text": "",
                "rows": [
                    {"run": r["name"], "status": r["status"], "error": str(r["error"] or "")}
                    for _, r in failed.iterrows()
                ],
            }
        )
    return sections


def setting_text(runs: pd.DataFrame, counts: dict[str, int], baseline: str | None) -> str:
    ok = runs[runs["status"] == "ok"]
    parts = [
        f"{len(runs)} runs: {counts.get('ok', 0)} ok, {counts.get('failed', 0)} failed, "
        f"{counts.get('unfinished', 0)} unfinished. Baseline arm: `{baseline}`."
    ]
    if len(ok):
        first = Path(ok["path"].iloc[0])
        try:
            cfg = yaml.safe_load((first / rundir.CONFIG_NAME).read_text())
            m, d, t, prec = cfg["model"], cfg["data"], cfg["train"], cfg.get("precision", "fp32")
            prec = prec.get("mode", prec) if isinstance(prec, dict) else prec
            parts.append(
                f"Model `{m['name']}` (max_length {m['max_length']}); data `{d.get('train') or d['source']}` with "
                f"{int(ok['n_train'].iloc[0])} training and {int(ok['n_val'].iloc[0])} validation examples; "
                f"{t['epochs']} epochs, batch {t['batch_size']}, lr {t['lr']}, LoRA rank {cfg['method']['rank']}, "
                f"precision {prec}; seeds {sorted({int(s) for s in ok['seed'].dropna()})}."
            )
        except (OSError, KeyError, TypeError, yaml.YAMLError):
            pass
        wall = ok["wall_time_s"].dropna()
        if len(wall):
            parts.append(f"Mean wall time per run {wall.mean():.0f} s.")
    return " ".join(parts)


def config_rows(zero: pd.DataFrame) -> list[dict[str, str]]:
    rows = []
    for _, r in zero.iterrows():
        seed = SEED_CONFIG.get(str(r["preset"])) if r.get("preset") else None
        base_gap = (
            r["gap_mean"] / r["kappa_rel"]
            if r.get("kappa_rel") and math.isfinite(r.get("kappa_rel", float("nan")))
            else float("nan")
        )
        times = base_gap / r["gap_mean"] if not r["is_baseline"] and r["gap_mean"] else float("nan")
        rows.append(
            {
                "config": str(r["condition"]),
                "γ": fmt_num(r["gamma"], 2),
                "ρ": fmt_num(r["sparsity"], 2),
                "val loss": fmt_mean_std(r["val_loss_mean"], r["val_loss_std"]),
                "gap": fmt_mean_std(r["gap_mean"], r["gap_std"]),
                "vs baseline": "–" if r["is_baseline"] else (f"{times:.1f}×" if math.isfinite(times) else "–"),
                "val acc": fmt_mean_std(r["val_accuracy_mean"], r["val_accuracy_std"], 3),
                "gap diff 95% CI": "–"
                if r["is_baseline"] or "gap_ci_lo" not in r or pd.isna(r["gap_ci_lo"])
                else f"[{r['gap_ci_lo']:+.4f}, {r['gap_ci_hi']:+.4f}]",
                "Welch p": "–" if r["is_baseline"] else fmt_p(r.get("gap_welch_p")),
                "seed val / gap": f"{seed[0]} / {seed[1]}" if seed else "–",
            }
        )
    return rows


def matched_rows(ok: pd.DataFrame) -> list[dict[str, str]]:
    """Each KSS arm next to dense LoRA at the same γ (and rank), at 0% noise."""
    from .stats import compare

    zero = ok[ok["noise_rate"].fillna(0) == 0]
    dense = zero[zero["method"].isin(["lora", "kss"]) & (zero["sparsity"].fillna(0) == 0)]
    rows = []
    for arm, g in zero[zero["sparsity"].fillna(0) > 0].groupby("arm", sort=False):
        gamma, rank = float(g["gamma"].iloc[0]), g["rank"].iloc[0]
        d = dense[(dense["gamma"].astype(float).round(6) == round(gamma, 6)) & (dense["rank"] == rank)]
        if d.empty:
            rows.append(
                {
                    "KSS arm": arm,
                    "γ": f"{gamma:g}",
                    "dense arm (same γ)": "not run",
                    "KSS gap": fmt_mean_std(g["gap"].mean(), g["gap"].std()),
                    "dense gap": "–",
                    "diff 95% CI": "–",
                    "Welch p": "–",
                    "verdict": NOT_MEASURED,
                }
            )
            continue
        c = compare(g["gap"], d["gap"])
        verdict = "KSS smaller" if c["ci_hi"] < 0 else "KSS larger" if c["ci_lo"] > 0 else "no significant difference"
        rows.append(
            {
                "KSS arm": arm,
                "γ": f"{gamma:g}",
                "dense arm (same γ)": ", ".join(sorted(d["arm"].unique())),
                "KSS gap": fmt_mean_std(g["gap"].mean(), g["gap"].std()),
                "dense gap": fmt_mean_std(d["gap"].mean(), d["gap"].std()),
                "gap ratio": f"{g['gap'].mean() / d['gap'].mean():.2f}" if d["gap"].mean() else "–",
                "diff 95% CI": f"[{c['ci_lo']:+.4f}, {c['ci_hi']:+.4f}]",
                "Welch p": fmt_p(c["welch_p"]),
                "val loss KSS / dense": f"{g['val_loss'].mean():.4f} / {d['val_loss'].mean():.4f}",
                "verdict": verdict,
            }
        )
    return rows


def matched_text(claims: list[Any], rows: list[dict[str, str]]) -> str:
    c = next((c for c in claims if c.id == "matched-gamma"), None)
    compared = [r for r in rows if r["verdict"] != NOT_MEASURED]
    if (c is None or c.verdict == NOT_MEASURED) and compared:
        # KSS arms that are not presets (e.g. a sparsity sweep): the table below is the control.
        smaller = [r["KSS arm"] for r in compared if r["verdict"] == "KSS smaller"]
        return (
            f"Dense LoRA at the same γ was run, so the table below separates the mask from γ: "
            f"{len(smaller)} of {len(compared)} KSS arms have a significantly smaller gap than dense LoRA"
            + (f" ({', '.join(smaller)})." if smaller else ".")
            + " The preset claim above needs the KSS presets themselves."
        )
    if c is None or c.verdict == NOT_MEASURED:
        return (
            "**The matched-γ control was not run here**, so this report cannot tell a masking effect from a "
            "γ effect: run the `matched_lr` sweep into the same runs directory."
        )
    if c.verdict == "holds":
        return f"**At matched γ, every KSS preset has a significantly smaller gap than dense LoRA** ({c.note})."
    if c.verdict == "does not hold":
        return (
            f"**KSS does not beat dense LoRA at matched γ for every preset** ({c.note}): where it does not, "
            "the five-config difference is the γ (learning-rate) effect."
        )
    return (
        f"**At matched γ the masking effect is mixed** ({c.note}); any difference from `standard` beyond "
        "these ratios is the γ (learning-rate) effect."
    )


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
            seed = SEED_NOISE.get(round(float(rate), 2))
            rows.append(
                {
                    "noise": f"{100 * rate:.0f}%",
                    "arm": arm,
                    "baseline gap": fmt_mean_std(b["gap_mean"], b["gap_std"]),
                    "arm gap": fmt_mean_std(r["gap_mean"], r["gap_std"]),
                    "vs baseline": _rel(r["gap_mean"], b["gap_mean"]),
                    "baseline gap_clean": fmt_mean_std(b["gap_clean_mean"], b["gap_clean_std"]),
                    "arm gap_clean": fmt_mean_std(r["gap_clean_mean"], r["gap_clean_std"]),
                    "vs baseline (clean)": _rel(r["gap_clean_mean"], b["gap_clean_mean"]),
                    "gap_clean diff 95% CI": "–"
                    if pd.isna(r.get("gap_clean_ci_lo"))
                    else f"[{r['gap_clean_ci_lo']:+.4f}, {r['gap_clean_ci_hi']:+.4f}]",
                    "val acc base / arm": f"{b['val_accuracy_mean']:.3f} / {r['val_accuracy_mean']:.3f}",
                    "seed gaps": f"{seed[0]} → {seed[1]} ({100 * (seed[1] / seed[0] - 1):+.1f}%)" if seed else "–",
                }
            )
    return rows


def _rel(x: float, base: float) -> str:
    """Relative change, as in the seeds' table; meaningless when the baseline gap is not positive."""
    if not (math.isfinite(x) and math.isfinite(base)):
        return "–"
    if base <= 0:
        return "n/a (baseline ≤ 0)"
    return f"{100 * (x / base - 1):+.1f}%"


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
td.not-measured{color:#777}figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
"""
VERDICT_CLASS = {
    "holds": "holds",
    "does not hold": "fails",
    "inconclusive": "inconclusive",
    NOT_MEASURED: "not-measured",
}


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
