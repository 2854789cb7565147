"""The shipped precision experiment: precision conditions x methods x seeds, then degradation per condition.

A spec (``configs/precision/*.yaml``) names a base run config, common overrides, two crossed axes of
named override sets (``conditions.precision``, ``conditions.method``) and seeds. Each cell is one
ordinary run (:func:`kss_lora.runner.run`) in its own directory, so every number in the tables traces
back to a ``result.json``. Finished runs (``status: ok``) are skipped on a rerun, so an interrupted
experiment resumes. Seeds run in order (all conditions of seed 0 first), so a cut-short experiment
still has complete, paired seeds.

Precision degradation (docs/spec.md §2) is computed per seed and method, paired with the baseline
precision of the same seed and method: ``(val_loss_lowprec - val_loss_bf16) / val_loss_bf16``.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from kss_lora.config import RunConfig, from_dict, load_raw, parse_yaml, resolve_config_path, set_key
from kss_lora.errors import ConfigError
from kss_lora.rundir import CorruptRecord, RunDirectory

_SPEC_KEYS = (
    "name",
    "description",
    "base",
    "overrides",
    "conditions",
    "seeds",
    "baseline_precision",
    "runs_dir",
    "probe_steps",
)


@dataclass
class Cell:
    """One run of the experiment."""

    precision: str
    method: str
    seed: int
    config: RunConfig

    @property
    def name(self) -> str:
        return f"{self.precision}__{self.method}__s{self.seed}"


@dataclass
class ExperimentSpec:
    name: str
    description: str
    base: str
    overrides: dict[str, Any]
    precisions: dict[str, dict[str, Any]]
    methods: dict[str, dict[str, Any]]
    seeds: list[int]
    baseline_precision: str
    runs_dir: str
    probe_steps: int

    def run_config(self, precision: str, method: str, seed: int) -> RunConfig:
        """The validated run config of one cell (bad keys or values raise :class:`ConfigError`)."""
        data = load_raw(self.base)
        for key, value in {
            **self.overrides,
            **self.precisions[precision],
            **self.methods[method],
            "train.seed": seed,
        }.items():
            set_key(data, key, value)
        return from_dict(data)

    def cells(self, seeds: Sequence[int] | None = None, precisions: Sequence[str] | None = None) -> list[Cell]:
        """All cells, seed-major (every condition of the first seed first).

        ``precisions`` restricts the precision conditions (the baseline is always kept, since every
        degradation is paired with it); unknown names are a :class:`ConfigError`.
        """
        chosen = list(self.precisions)
        if precisions is not None:
            unknown = [p for p in precisions if p not in self.precisions]
            if unknown:
                raise ConfigError("--precisions", f"unknown {unknown}; allowed: {', '.join(self.precisions)}")
            chosen = [p for p in self.precisions if p in precisions or p == self.baseline_precision]
        return [
            Cell(p, m, s, self.run_config(p, m, s))
            for s in (seeds if seeds is not None else self.seeds)
            for p in chosen
            for m in self.methods
        ]


def shipped_experiments() -> dict[str, Path]:
    """Experiment specs shipped as package data (``configs/precision/*.yaml``), by name."""
    root = resources.files("kss_lora") / "configs" / "precision"
    return {p.stem: Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml")} if root.is_dir() else {}


def load_spec(name_or_path: str) -> ExperimentSpec:
    """Read and check an experiment spec (path or shipped name, e.g. ``precision_gamma_cpu``)."""
    path = resolve_config_path(name_or_path, shipped=shipped_experiments(), what="experiment")
    data = parse_yaml(path.read_text(), str(path))
    for key in data:
        if key not in _SPEC_KEYS:
            raise ConfigError(f"experiment.{key}", f"unknown key; allowed: {', '.join(_SPEC_KEYS)}")
    conditions = data.get("conditions") or {}
    if set(conditions) != {"precision", "method"}:
        raise ConfigError("experiment.conditions", "needs exactly the two axes 'precision' and 'method'")
    for axis, values in conditions.items():
        if not isinstance(values, dict) or not values or not all(isinstance(v, dict) for v in values.values()):
            raise ConfigError(f"experiment.conditions.{axis}", "must map condition names to override mappings")
    seeds = data.get("seeds") or [0]
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError("experiment.seeds", f"must be a list of integers, got {seeds!r}")
    baseline = data.get("baseline_precision", "bf16")
    if baseline not in conditions["precision"]:
        raise ConfigError("experiment.baseline_precision", f"{baseline!r} is not one of the precision conditions")
    spec = ExperimentSpec(
        name=str(data.get("name") or path.stem),
        description=str(data.get("description", "")),
        base=str(data.get("base", "agnews")),
        overrides=dict(data.get("overrides") or {}),
        precisions=conditions["precision"],
        methods=conditions["method"],
        seeds=list(seeds),
        baseline_precision=baseline,
        runs_dir=str(data.get("runs_dir") or f"runs/{path.stem}"),
        probe_steps=int(data.get("probe_steps", 4)),
    )
    spec.run_config(baseline, next(iter(spec.methods)), spec.seeds[0])  # fail early on a bad override
    return spec


def finished(directory: Path) -> dict[str, Any] | None:
    """The run's result if it completed successfully, else ``None`` (so it is run again)."""
    try:
        result = RunDirectory(directory).read_result()
    except CorruptRecord:  # redone, like an unfinished run
        return None
    return result.to_dict() if result is not None and result.status == "ok" else None


def _run_cell(args: tuple[str, RunConfig]) -> dict[str, Any]:
    directory, cfg = args
    from kss_lora.commands import quiet_libraries
    from kss_lora.runner import run

    quiet_libraries()
    return run(cfg, directory)


def run_cells(
    cells: Sequence[Cell], runs_dir: Path, *, workers: int = 1, log: Callable[[str], None] = print
) -> dict[str, dict[str, Any]]:
    """Run every unfinished cell (``workers`` processes), return ``{cell name: result}``."""
    results: dict[str, dict[str, Any]] = {}
    todo = []
    for cell in cells:
        done = finished(runs_dir / cell.name)
        if done is not None:
            results[cell.name] = done
        else:
            todo.append(cell)
    log(f"{len(results)} runs already finished, {len(todo)} to run with {workers} worker(s)")
    jobs = [(str(runs_dir / c.name), c.config) for c in todo]
    if workers <= 1:
        outputs = map(_run_cell, jobs)
    else:
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(workers, maxtasksperchild=1)
        outputs = pool.imap(_run_cell, jobs)
    for cell, result in zip(todo, outputs):
        results[cell.name] = result
        log(
            f"{cell.name}: {result['status']} val_loss={result.get('val_loss')} wall={result.get('wall_time_s')}s"
            + (f" error={result.get('error')}" if result["status"] != "ok" else "")
        )
    if workers > 1:
        pool.close()
        pool.join()
    return results


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def degradation_table(
    spec: ExperimentSpec, cells: Sequence[Cell], results: dict[str, dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per-run rows (with paired degradation) and per-(precision, method) summary rows (mean ± std)."""
    by_key = {(c.precision, c.method, c.seed): results.get(c.name) for c in cells}
    runs = []
    for c in cells:
        r = by_key[(c.precision, c.method, c.seed)]
        base = by_key.get((spec.baseline_precision, c.method, c.seed))
        ok = r is not None and r.get("status") == "ok"
        base_ok = base is not None and base.get("status") == "ok"
        runs.append(
            {
                "precision": c.precision,
                "method": c.method,
                "seed": c.seed,
                "status": r.get("status") if r else "missing",
                "gamma": r.get("gamma") if r else None,
                "sparsity": r.get("sparsity") if r else None,
                "val_loss": r.get("val_loss") if ok else None,
                "val_accuracy": r.get("val_accuracy") if ok else None,
                "train_loss": r.get("train_loss") if ok else None,
                "degradation": (r["val_loss"] - base["val_loss"]) / base["val_loss"] if ok and base_ok else None,
                "wall_time_s": r.get("wall_time_s") if r else None,
                "error": r.get("error") if r else None,
            }
        )
    summary = []
    for p in spec.precisions:
        for m in spec.methods:
            rs = [r for r in runs if r["precision"] == p and r["method"] == m]
            vals = [r["val_loss"] for r in rs if r["val_loss"] is not None]
            accs = [r["val_accuracy"] for r in rs if r["val_accuracy"] is not None]
            degs = [r["degradation"] for r in rs if r["degradation"] is not None]
            (vl, vl_sd), (acc, acc_sd), (dg, dg_sd) = _mean_std(vals), _mean_std(accs), _mean_std(degs)
            summary.append(
                {
                    "precision": p,
                    "method": m,
                    "gamma": rs[0]["gamma"] if rs else None,
                    "n": len(vals),
                    "failed": sum(r["status"] not in ("ok", "missing") for r in rs),
                    "val_loss_mean": vl,
                    "val_loss_std": vl_sd,
                    "val_accuracy_mean": acc,
                    "val_accuracy_std": acc_sd,
                    "degradation_mean": dg,
                    "degradation_std": dg_sd,
                }
            )
    return runs, summary
