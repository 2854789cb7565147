"""The runs of a runs directory as one tidy table (pandas), read from the run directories themselves.

The run directory is the source of truth: ``result.json`` (written last, atomically) says whether a run
finished, ``metrics.jsonl`` holds its epoch curve, ``config.yaml`` its resolved config. Sweep manifests
(``<runs_dir>/sweeps/*.json``) only add labels: which *arm* (method being compared) and *stratum* (setting
compared within, e.g. a noise rate) a run belongs to, and the sweep's baseline. A directory of plain
``kss run`` outputs works too: the arm is then the run's method label and the stratum its noise rate.

Every file is read through :class:`kss_lora.rundir.RunDirectory`. A run whose result.json or metrics.jsonl
cannot be read is listed with status ``corrupt`` (its ``error`` says which file and why), never a traceback;
a manifest that cannot be read is skipped with a warning on stderr (its runs are then listed unlabelled).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from .. import run_result
from ..errors import KSSError
from ..rundir import CorruptRecord, RunDirectory, find_run_directories
from ..tables import MISSING, fmt_num
from .sweep import MANIFEST_DIR, condition_label

# The table's columns come from the run record's declaration (kss_lora.run_result), not a list kept here.
RESULT_COLUMNS = run_result.columns()
STATES = ("ok", "failed", "unfinished", "corrupt")
METRIC_COLUMNS = (
    "train_loss",
    "train_loss_clean",
    "val_loss",
    "gap",
    "gap_clean",
    "val_accuracy",
    "test_accuracy",
    "train_accuracy",
)


Sweeps = str | list[str] | tuple[str, ...] | None


def _names(sweep: Sweeps) -> list[str] | None:
    return None if sweep is None else [sweep] if isinstance(sweep, str) else list(sweep)


def read_manifests(
    runs_dir: str | Path, sweep: Sweeps = None
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """``({dir name: point}, [manifest, ...])`` from every sweep that wrote into ``runs_dir`` (or only ``sweep``,
    one name or several). Where two sweeps label the same run, the first one named (else by file name) wins.
    """
    wanted = _names(sweep)
    points: dict[str, dict[str, Any]] = {}
    manifests = []
    folder = Path(runs_dir) / MANIFEST_DIR
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            manifest = _valid_manifest(json.loads(path.read_text()))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            print(
                f"warning: {path}: corrupt sweep manifest, ignored ({exc}); rerun the sweep to rewrite it",
                file=sys.stderr,
            )
            continue
        if wanted is None or manifest.get("name") in wanted:
            found.append(manifest)
    if wanted is not None:
        found.sort(key=lambda m: wanted.index(m.get("name")))
    for manifest in found:
        manifests.append(manifest)
        for p in manifest.get("points", []):
            points.setdefault(p["name"], {**p, "sweep": manifest.get("name")})
    return points, manifests


def corrupt_manifests(runs_dir: str | Path) -> list[Path]:
    """Manifests of ``runs_dir`` that cannot be read (their runs are listed unlabelled)."""
    folder = Path(runs_dir) / MANIFEST_DIR
    broken = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            _valid_manifest(json.loads(path.read_text()))
        except (OSError, UnicodeDecodeError, ValueError):
            broken.append(path)
    return broken


def _valid_manifest(data: Any) -> dict[str, Any]:
    """The manifest if it has what the registry reads (a name, points with a name and an arm); else ValueError."""
    if not isinstance(data, dict) or not isinstance(data.get("points", []), list):
        raise ValueError("not a mapping with a list of points")
    for p in data.get("points", []):
        if not isinstance(p, dict) or not isinstance(p.get("name"), str) or "arm" not in p or "stratum" not in p:
            raise ValueError("a point lacks its name, arm or stratum")
    return data


def default_baseline(runs_dir: str | Path, runs: pd.DataFrame | None = None, sweep: Sweeps = None) -> str | None:
    """The sweeps' declared baseline, else ``standard`` if such an arm exists, else None."""
    _, manifests = read_manifests(runs_dir, sweep)
    for m in manifests:
        if m.get("baseline"):
            return str(m["baseline"])
    if runs is not None and "standard" in set(runs.get("arm", [])):
        return "standard"
    return None


def points_not_run(runs_dir: str | Path, sweep: Sweeps = None) -> list[str]:
    """Points the sweeps define that have no run directory yet (never started, e.g. a sweep cut short)."""
    points, _ = read_manifests(runs_dir, sweep)
    return sorted(name for name in points if not (Path(runs_dir) / name).is_dir())


def run_dirs(runs_dir: str | Path) -> list[Path]:
    """Immediate subdirectories that look like runs (a marker, a config or a result), in name order."""
    try:
        return find_run_directories(runs_dir, exclude=(MANIFEST_DIR,))
    except KSSError:
        raise KSSError(f"no such runs directory: {runs_dir}") from None


def read_run(directory: Path) -> tuple[dict[str, Any], str, str | None]:
    """``(result mapping, state, error)`` of one run directory; a corrupt file gives state ``corrupt``."""
    run = RunDirectory(directory)
    try:
        record = run.read_result()
        if record is not None and record.status == "ok":
            run.read_metrics()  # a finished run's curve must read too (the report draws it)
    except CorruptRecord as exc:
        return {}, "corrupt", str(exc)
    if record is None or not record.finished:
        return ({} if record is None else record.to_dict()), "unfinished", None
    result = record.to_dict()
    return result, record.status, result.get("error")


def load_runs(runs_dir: str | Path, sweep: Sweeps = None) -> pd.DataFrame:
    """One row per run directory: labels, status and final metrics (NaN where a run has none).

    With ``sweep`` (a name or several), only those sweeps' runs, labelled as they label them. Status is one
    of :data:`STATES`.
    """
    points, manifests = read_manifests(runs_dir, sweep)
    missing = sorted(set(_names(sweep) or []) - {m.get("name") for m in manifests})
    if missing:
        broken = corrupt_manifests(runs_dir)
        hint = f" (unreadable manifests: {', '.join(p.name for p in broken)}; rerun that sweep)" if broken else ""
        raise KSSError(f"no sweep named {missing[0]!r} has written into {runs_dir}{hint}")
    rows = []
    for d in run_dirs(runs_dir):
        if sweep is not None and d.name not in points:
            continue
        result, state, error = read_run(d)
        row: dict[str, Any] = {"name": d.name, "path": str(d)}
        row.update({k: result.get(k) for k in RESULT_COLUMNS})
        row["status"], row["error"] = state, error
        if row["run_id"] is None:
            row["run_id"] = d.name.rsplit("-", 1)[-1]
        point = points.get(d.name)
        if point is not None:
            row.update(arm=point["arm"], stratum=point["stratum"], sweep=point.get("sweep"))
            if row["seed"] is None:
                row["seed"] = point.get("seed")
        else:
            row.update(arm=result.get("condition") or d.name.rsplit("-", 1)[0], stratum=None, sweep=None)
        rows.append(row)
    columns = ["name", "arm", "stratum", "condition", "sweep", *RESULT_COLUMNS, "path"]
    df = pd.DataFrame(rows, columns=[c for c in columns if c != "condition"])
    if df.empty:
        return pd.DataFrame(columns=columns)
    # Runs no manifest labels: compare within noise rate when several are present.
    loose = df["stratum"].isna()
    if loose.any():
        several = pd.to_numeric(df.loc[loose, "noise_rate"], errors="coerce").nunique(dropna=True) > 1
        df.loc[loose, "stratum"] = [
            f"noise={r:g}" if several and isinstance(r, (int, float)) and pd.notna(r) else ""
            for r in df.loc[loose, "noise_rate"]
        ]
    df["condition"] = [condition_label(a, s) for a, s in zip(df["arm"], df["stratum"])]
    for col in (*METRIC_COLUMNS, "gamma", "sparsity", "noise_rate", "lr", "wall_time_s"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df[columns]


def load_curves(runs: pd.DataFrame) -> pd.DataFrame:
    """Epoch-by-epoch metrics of every finished run, long format, labelled by condition."""
    frames = []
    for _, r in runs[runs["status"] == "ok"].iterrows():
        try:
            m = pd.DataFrame(RunDirectory(r["path"]).read_metrics())
        except CorruptRecord:  # load_runs lists such a run as corrupt; a table built elsewhere may not
            continue
        if m.empty:
            continue
        m["name"], m["condition"], m["arm"], m["stratum"], m["seed"] = (
            r["name"],
            r["condition"],
            r["arm"],
            r["stratum"],
            r["seed"],
        )
        frames.append(m)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def format_runs(runs: pd.DataFrame, *, not_started: int = 0) -> str:
    """The ``kss ls`` table: id, condition, seed, noise, status, train/val loss, gap; ``not_started`` counts
    points a sweep defines that have no run directory yet."""
    header = f"{'run_id':12s}  {'condition':32s} {'seed':>4s} {'noise':>5s} {'status':10s} {'train':>7s} {'val':>7s} {'gap':>8s}"
    lines = [header, "-" * len(header)]

    def num(v: Any, width: int, prec: int = 4) -> str:
        return fmt_num(v, prec).rjust(width)

    for _, r in runs.iterrows():
        seed = MISSING if r["seed"] is None or pd.isna(r["seed"]) else str(int(r["seed"]))
        noise = fmt_num(r["noise_rate"], 2)
        cond = str(r["condition"])[:32]
        line = (
            f"{str(r['run_id'])[:12]:12s}  {cond:32s} {seed:>4s} {noise:>5s} {r['status']:10s} "
            f"{num(r['train_loss'], 7)} {num(r['val_loss'], 7)} {num(r['gap'], 8)}"
        )
        if r["status"] in ("failed", "corrupt") and r["error"]:
            line += f"  {str(r['error'])[:60]}"
        lines.append(line)
    counts = runs["status"].value_counts().to_dict() if len(runs) else {}
    summary = f"{len(runs)} runs: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in STATES)
    if not_started:
        summary += f"; {not_started} not started yet"
    lines.append(summary)
    return "\n".join(lines)
