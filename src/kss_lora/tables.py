"""One number formatter and one table writer for the whole package (Markdown and CSV).

Bottom layer: imports nothing from the package, so any module (lab, precision, eval, detection) can use it.
Every missing or non-finite number prints as :data:`MISSING`, whichever formatter prints it, so a reader
never has to learn three spellings of "no value".
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

MISSING = "–"


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def fmt_num(x: Any, digits: int = 4, *, signed: bool = False) -> str:
    """Fixed-point number; :data:`MISSING` for None, NaN, ±inf or a non-number."""
    if not _finite(x):
        return MISSING
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def fmt_general(x: Any) -> str:
    """A number of unknown scale (diagnostics): 4 significant digits, scientific below 1e-3; text as it is."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return MISSING if x is None else str(x)
    if not math.isfinite(x):
        return MISSING
    if isinstance(x, int):
        return str(x)
    return f"{x:.4g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def fmt_label(value: Any) -> str:
    """A value inside a name or label (a sweep's grid value: ``0.1``, ``1e-05``, ``kss``): shortest float form."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def fmt_p(p: Any) -> str:
    """A p-value: 4 decimals, ``<0.0001`` below that."""
    if not _finite(p):
        return MISSING
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def fmt_mean_std(mean: Any, std: Any, digits: int = 4) -> str:
    """``mean ± std``; the mean alone when the spread is unknown (one run)."""
    if not _finite(mean):
        return MISSING
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if _finite(std) else f"{mean:.{digits}f}"


def fmt_pct(x: Any, digits: int = 1, *, signed: bool = True) -> str:
    """A fraction as a percentage (0.034 → ``+3.4%``)."""
    if not _finite(x):
        return MISSING
    return f"{100 * x:+.{digits}f}%" if signed else f"{100 * x:.{digits}f}%"


def fmt_ci(lo: Any, hi: Any, digits: int = 4, *, signed: bool = True, pct: bool = False) -> str:
    """``[lo, hi]``; :data:`MISSING` when either end is unknown."""
    if not (_finite(lo) and _finite(hi)):
        return MISSING
    if pct:
        return f"[{fmt_pct(lo, digits, signed=signed)}, {fmt_pct(hi, digits, signed=signed)}]"
    return f"[{fmt_num(lo, digits, signed=signed)}, {fmt_num(hi, digits, signed=signed)}]"


def cell(value: Any) -> str:
    """What a table cell shows for a value that was not formatted by the caller."""
    return value if isinstance(value, str) else fmt_general(value)


def markdown_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, *, empty: str = "_no rows_"
) -> str:
    """A Markdown table; ``|`` inside a cell is escaped so it cannot split the row."""
    if not rows:
        return empty
    cols = list(columns) if columns is not None else list(rows[0])

    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(esc(cell(r.get(c, ""))) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Rows of dicts to CSV; columns in first-seen order over all rows unless given. Raw values, not formatted."""
    cols: list[str] = list(columns) if columns is not None else []
    if columns is None:
        for row in rows:
            cols += [k for k in row if k not in cols]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path
