"""Write the precision diagnostics: CSV tables, a Markdown summary and a PNG plot.

Kept apart from :mod:`.probe` so the measurement can be used (and tested) without matplotlib. Tables and numbers
go through the package's one writer and formatter (:mod:`kss_lora.tables`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kss_lora import tables

TENSOR_ORDER: tuple[str, ...] = (
    "base_input",
    "base_weight",
    "base_grad_output",
    "lora_A_input",
    "lora_A_weight",
    "lora_A_grad_output",
    "lora_B_input",
    "lora_B_weight",
    "lora_B_grad_output",
    "lora_update",
)


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Rows of dicts to CSV; columns in first-seen order over all rows."""
    tables.write_csv(path, rows)


def _fmt(value: Any) -> str:
    return tables.fmt_general(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    return tables.markdown_table(rows, columns) + "\n"


def _order(tensor: str) -> int:
    return TENSOR_ORDER.index(tensor) if tensor in TENSOR_ORDER else len(TENSOR_ORDER)


def pivot(
    summary: Sequence[dict[str, Any]], value: str, formats: Sequence[str], scalings: Sequence[str]
) -> list[dict[str, Any]]:
    """One row per tensor kind, one column per ``format/scaling`` holding ``value``."""
    by_tensor: dict[str, dict[str, Any]] = {}
    for r in summary:
        by_tensor.setdefault(r["tensor"], {"tensor": r["tensor"]})[f"{r['format']}/{r['scaling']}"] = r[value]
    rows = sorted(by_tensor.values(), key=lambda r: _order(r["tensor"]))
    return [
        {"tensor": r["tensor"], **{f"{f}/{s}": r.get(f"{f}/{s}", float("nan")) for f in formats for s in scalings}}
        for r in rows
    ]


def gamma_verdicts(gamma_rows: Sequence[dict[str, Any]]) -> list[str]:
    """Plain-language reading of the sweep: does gamma change underflow, and under which scaling."""
    lines = []
    keys = sorted({(r["tensor"], r["format"]) for r in gamma_rows})
    for tensor, fmt in keys:
        parts = []
        for scaling in ("none", "tensor", "block-mx"):
            rs = sorted(
                (r for r in gamma_rows if (r["tensor"], r["format"], r["scaling"]) == (tensor, fmt, scaling)),
                key=lambda r: r["gamma"],
            )
            if not rs:
                continue
            lo, hi = rs[0], rs[-1]
            span = max(r["underflow_frac"] for r in rs) - min(r["underflow_frac"] for r in rs)
            parts.append(
                f"{scaling}: {lo['underflow_frac']:.3f} at γ={lo['gamma']:g} → {hi['underflow_frac']:.3f} "
                f"at γ={hi['gamma']:g} (range {span:.3f})"
            )
        lines.append(f"- `{tensor}`, {fmt}: " + "; ".join(parts))
    return lines


def write_markdown(
    path: Path,
    *,
    title: str,
    context: dict[str, Any],
    summary: Sequence[dict[str, Any]],
    gamma_rows: Sequence[dict[str, Any]],
    formats: Sequence[str],
    scalings: Sequence[str],
) -> None:
    """The human-readable report: underflow / saturation / error per tensor kind, then the gamma sweep."""
    text = [f"# {title}\n"]
    text += [f"- {k}: {_fmt(v)}" for k, v in context.items()]
    text.append(
        "\nFractions are element-weighted means over layers (underflow: of the nonzero values; "
        "saturation: of all values). Columns: format/scaling. Per-layer numbers: `layers.csv`.\n"
    )
    for value, heading in (
        ("underflow_frac", "Underflow (nonzero values that flush to zero)"),
        ("saturate_frac", "Saturation (values clamped at the format maximum)"),
        ("rel_error", "Relative error ‖q(x) − x‖ / ‖x‖"),
    ):
        text.append(f"## {heading}\n")
        text.append(
            markdown_table(
                pivot(summary, value, formats, scalings), ["tensor", *[f"{f}/{s}" for f in formats for s in scalings]]
            )
        )
    text.append("## γ sweep of the LoRA update\n")
    text.append(
        "`delta_w` = γ·B·A of each LoRA layer, `lora_activation` = γ·B·A·x, both from the factors after "
        "the probe steps (the run's own γ divided out). The published claim: γ ≥ 2^-(b-4) is needed "
        "(1/16 at 8 bits, 1 at 4 bits). Under amax or block scaling γ cannot change what underflows.\n"
    )
    text += gamma_verdicts(gamma_rows)
    text.append("")
    sweep = sorted(gamma_rows, key=lambda r: (r["tensor"], r["format"], r["scaling"], r["gamma"]))
    text.append(
        markdown_table(sweep, ["tensor", "format", "scaling", "gamma", "underflow_frac", "saturate_frac", "rel_error"])
    )
    path.write_text("\n".join(text))


def _plot_gamma_curves(
    ax: Any, gamma_rows: Sequence[dict[str, Any]], tensor: str, fmt: str, styles: dict[str, str], color: Any
) -> None:
    """One line per scaling mode: the underflow fraction of ``tensor`` in ``fmt`` against γ."""
    for scaling, ls in styles.items():
        rs = sorted(
            (r for r in gamma_rows if r["tensor"] == tensor and r["format"] == fmt and r["scaling"] == scaling),
            key=lambda r: r["gamma"],
        )
        if rs:
            x, y = [r["gamma"] for r in rs], [r["underflow_frac"] for r in rs]
            ax.plot(x, y, ls, marker="o", ms=3, color=color, label=f"{fmt} {scaling}")


def plot(
    path: Path,
    summary: Sequence[dict[str, Any]],
    gamma_rows: Sequence[dict[str, Any]],
    formats: Sequence[str],
    scalings: Sequence[str],
) -> None:
    """Left: underflow per tensor kind. Middle: underflow of γ·B·A vs γ. Right: update lost when merged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(21, 5.5))
    table = pivot(summary, "underflow_frac", formats, scalings)
    tensors = [r["tensor"] for r in table]
    columns = [f"{f}/{s}" for f in formats for s in scalings]
    width = 0.8 / max(1, len(columns))
    cmap = plt.get_cmap("tab20")
    for j, col in enumerate(columns):
        xs = [i + (j - len(columns) / 2) * width for i in range(len(tensors))]
        ax1.bar(xs, [r[col] for r in table], width=width, label=col, color=cmap(j % 20))
    ax1.set_xticks(range(len(tensors)))
    ax1.set_xticklabels(tensors, rotation=40, ha="right", fontsize=8)
    ax1.set_ylabel("fraction of nonzero values flushed to zero")
    ax1.set_ylim(0, 1)
    ax1.set_title("Underflow per tensor (mean over layers)")
    ax1.legend(fontsize=6, ncol=3)

    styles = {"none": "-", "tensor": "--", "block-mx": ":"}
    colors = {f: plt.get_cmap("tab10")(i) for i, f in enumerate(formats)}
    for fmt in formats:
        _plot_gamma_curves(ax2, gamma_rows, "delta_w", fmt, styles, colors[fmt])
        threshold = next((r["claimed_threshold"] for r in gamma_rows if r["format"] == fmt), None)
        if threshold is not None:
            ax2.axvline(threshold, color=colors[fmt], alpha=0.3, lw=3)
    ax2.set_xscale("log", base=2)
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_xlabel("γ (shaded lines: the published minimum 2^-(b-4))")
    ax2.set_ylabel("underflow fraction of γ·B·A")
    ax2.set_title("γ sweep: raw cast (solid) vs tensor (dashed) / MX block (dotted) scaling")
    ax2.legend(fontsize=7, ncol=2)

    for fmt in formats:
        _plot_gamma_curves(ax3, gamma_rows, "merged_w", fmt, {"none": "-", "tensor": "--"}, colors[fmt])
    ax3.set_xscale("log", base=2)
    ax3.set_ylim(-0.02, 1.02)
    ax3.set_xlabel("γ")
    ax3.set_ylabel("fraction of γ·B·A entries lost in q(W0 + γ·B·A)")
    ax3.set_title("Merged into W0 and stored in the format (swamping)")
    ax3.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_probe_outputs(
    out: Path, result: Any, *, context: dict[str, Any], formats: Sequence[str], scalings: Sequence[str]
) -> dict[str, Path]:
    """Everything ``kss precision`` writes for one probe (a :class:`~.probe.ProbeResult`)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "layers": out / "layers.csv",
        "summary": out / "summary.csv",
        "gamma_sweep": out / "gamma_sweep.csv",
        "markdown": out / "precision.md",
        "plot": out / "precision.png",
    }
    write_csv(paths["layers"], result.rows)
    write_csv(paths["summary"], result.summary)
    write_csv(paths["gamma_sweep"], result.gamma_rows)
    write_markdown(
        paths["markdown"],
        title="Low-precision diagnostics",
        context=context,
        summary=result.summary,
        gamma_rows=result.gamma_rows,
        formats=formats,
        scalings=scalings,
    )
    plot(paths["plot"], result.summary, result.gamma_rows, formats, scalings)
    return paths
