"""The runs of a runs directory as one tidy table (pandas), read from the run directories themselves.

The run directory is the source of truth: ``result.json`` (written last, atomically) says whether a run
finished, ``metrics.jsonl`` holds its epoch curve, ``config.yaml`` its resolved config. Sweep manifests
(``<runs_dir>/sweeps/*.json``) only add labels: which *arm* (method being compared) and *stratum* (setting
compared within, e.g. a noise rate) a run belongs to, and the sweep's baseline. A directory of plain
``kss run`` outputs works too: the arm is then the run's method label and the stratum its noise rate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from .. import rundir
from ..errors import KSSError
from .sweep import MANIFEST_DIR, condition_label

RESULT_COLUMNS = (
    "run_id",
    "status",
    "error",
    "method",
    "preset",
    "gamma",
    "sparsity",
    "rank",
    "mask_mode",
    "seed",
    "noise_rate",
    "noise_kind",
    "precision",
    "model",
    "lr",
    "n_train",
    "n_val",
    "epochs",
    "steps",
    "train_loss",
    "train_loss_clean",
    "train_loss_running",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "gap",
    "gap_clean",
    "test_loss",
    "test_accuracy",
    "noise_rate_realised",
    "wall_time_s",
)
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
            manifest = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
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
    """Immediate subdirectories that look like runs (a config or a result), in name order."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise KSSError(f"no such runs directory: {root}")
    return sorted(
        d
        for d in root.iterdir()
        if d.is_dir()
        and not d.name.startswith(".")
        and d.name != MANIFEST_DIR
        and ((d / rundir.RESULT_NAME).exists() or (d / rundir.CONFIG_NAME).exists())
    )


def load_runs(runs_dir: str | Path, sweep: Sweeps = None) -> pd.DataFrame:
    """One row per run directory: labels, status and final metrics (NaN where a run has none).

    With ``sweep`` (a name or several), only those sweeps' runs, labelled as they label them.
    """
    points, manifests = read_manifests(runs_dir, sweep)
    missing = sorted(set(_names(sweep) or []) - {m.get("name") for m in manifests})
    if missing:
        raise KSSError(f"no sweep named {missing[0]!r} has written into {runs_dir}")
    rows = []
    for d in run_dirs(runs_dir):
        if sweep is not None and d.name not in points:
            continue
        result = rundir.read_result(d) or {}
        row: dict[str, Any] = {"name": d.name, "path": str(d)}
        row.update({k: result.get(k) for k in RESULT_COLUMNS})
        if not result or result.get("status") not in ("ok", "failed"):
            row["status"] = "unfinished"
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
        several = df.loc[loose, "noise_rate"].nunique(dropna=True) > 1
        df.loc[loose, "stratum"] = [
            f"noise={r:g}" if several and pd.notna(r) else "" for r in df.loc[loose, "noise_rate"]
        ]
    df["condition"] = [condition_label(a, s) for a, s in zip(df["arm"], df["stratum"])]
    for col in (*METRIC_COLUMNS, "gamma", "sparsity", "noise_rate", "lr", "wall_time_s"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df[columns]


def load_curves(runs: pd.DataFrame) -> pd.DataFrame:
    """Epoch-by-epoch metrics of every finished run, long format, labelled by condition."""
    frames = []
    for _, r in runs[runs["status"] == "ok"].iterrows():
        m = pd.DataFrame(rundir.read_metrics(r["path"]))
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


def format_runs(runs: pd.DataFrame) -> str:
    """The ``kss ls`` table: id, condition, seed, noise, status, train/val loss, gap."""
    header = f"{'run_id':12s}  {'condition':32s} {'seed':>4s} {'noise':>5s} {'status':10s} {'train':>7s} {'val':>7s} {'gap':>8s}"
    lines = [header, "-" * len(header)]

    def num(v: Any, width: int, prec: int = 4) -> str:
        return f"{v:{width}.{prec}f}" if v is not None and pd.notna(v) else " " * (width - 1) + "-"

    for _, r in runs.iterrows():
        seed = "-" if r["seed"] is None or pd.isna(r["seed"]) else str(int(r["seed"]))
        noise = "-" if pd.isna(r["noise_rate"]) else f"{r['noise_rate']:.2f}"
        cond = str(r["condition"])[:32]
        line = (
            f"{str(r['run_id'])[:12]:12s}  {cond:32s} {seed:>4s} {noise:>5s} {r['status']:10s} "
            f"{num(r['train_loss'], 7)} {num(r['val_loss'], 7)} {num(r['gap'], 8)}"
        )
        if r["status"] == "failed" and r["error"]:
            line += f"  {str(r['error'])[:60]}"
        lines.append(line)
    counts = runs["status"].value_counts().to_dict() if len(runs) else {}
    lines.append(f"{len(runs)} runs: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("ok", "failed", "unfinished")))
    return "\n".join(lines)
