"""Sweeps: one base config plus a grid, expanded into runs that can be killed and resumed at any time.

A sweep file is YAML::

    name: five_config_cpu            # default: the file name
    base: agnews                     # shipped config name, a path (relative to this file or the cwd), or a mapping
    overrides: {train.epochs: 4}     # dotted keys applied to the base
    conditions:                      # optional: named arms, crossed with the grid
      - {name: "dense γ=1.0", method.name: lora, method.gamma: 1.0}
    grid:                            # dotted key -> list of values; the full product is run
      method.preset: [standard, kss-default]
      train.seed: [0, 1, 2, 3, 4]
    baseline: standard               # the arm the statistics compare against
    strata: [noise.rate]             # grid keys compared *within* (default: non-seed grid keys outside method.*)
    runs_dir: runs/five_config       # default: runs/<name>
    executor: local                  # sequential (default), local, ray, slurm
    workers: 2
    executor_options: {}             # passed to the ray / slurm executor (see executors.py)
    tracking: [mlflow]               # optional mirrors (see tracking.py); the run directory stays the truth

Why the run directory is named ``<label>-<run_id>``: ``run_id`` is a hash of the resolved config (output
settings excluded), so the same grid point always lands in the same directory, a resumed sweep finds its
finished runs, and two sweeps that share a point (e.g. the five-config benchmark and the matched control)
share its run. "Finished" means a ``result.json`` that parses, carries this run_id and a final status; the
runner writes it atomically and last, so a run killed at any moment is redone from scratch next time. A run
whose record cannot be read (``corrupt``) is redone too. A sweep exits with failure (``SweepSummary.ok`` is
false) while any of its runs is failed, including failed runs of an earlier invocation that were skipped.
"""

from __future__ import annotations

import copy
import dataclasses
import fcntl
import itertools
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .. import rundir
from ..config import from_dict, load_raw, parse_override, parse_yaml, resolve_config_path, set_key
from ..errors import ConfigError, KSSError
from ..rundir import RunDirectory
from ..tables import fmt_label

SWEEP_KEYS = (
    "name",
    "description",
    "base",
    "overrides",
    "conditions",
    "grid",
    "baseline",
    "strata",
    "runs_dir",
    "executor",
    "workers",
    "executor_options",
    "tracking",
)
MANIFEST_DIR = "sweeps"
LOCK_NAME = ".sweep.lock"
# Short names used in condition labels (ASCII forms are used in directory names).
SHORT_NAMES = {
    "noise.rate": "noise",
    "method.rank": "r",
    "method.sparsity": "ρ",
    "method.gamma": "γ",
    "train.lr": "lr",
    "method.mask_mode": "mask",
    "method.name": "method",
}
_ASCII = {"ρ": "rho", "γ": "gamma", "×": "x", "=": ""}


@dataclass
class SweepSpec:
    """A parsed sweep file: what to run and how to compare it."""

    name: str
    base: dict[str, Any]
    grid: dict[str, list[Any]] = field(default_factory=dict)
    conditions: list[dict[str, Any]] = field(default_factory=list)
    baseline: str | None = None
    strata: list[str] | None = None
    runs_dir: Path = Path("runs")
    executor: str = "sequential"
    workers: int | None = None
    executor_options: dict[str, Any] = field(default_factory=dict)
    tracking: list[str] = field(default_factory=list)
    description: str = ""
    source: str = ""


@dataclass(frozen=True)
class SweepPoint:
    """One run of a sweep: its resolved config, where it lives, and which condition it belongs to."""

    params: dict[str, Any]  # the dotted keys this point sets (condition + grid)
    arm: str  # the method being compared, e.g. "kss-default" or "dense γ=1.0"
    stratum: str  # the setting it is compared within, e.g. "noise=0.2" ("" when none)
    seed: int
    config: dict[str, Any]  # RunConfig.to_dict() of the resolved config
    run_id: str
    name: str  # directory name: <label>-<run_id>

    @property
    def condition(self) -> str:
        return condition_label(self.arm, self.stratum)


def condition_label(arm: str, stratum: str) -> str:
    return f"{arm} | {stratum}" if stratum else arm


# ----------------------------------------------------------------------------- loading


def shipped_sweeps() -> dict[str, Path]:
    """Sweep files shipped as package data (``configs/sweeps/*.yaml``), by name."""
    root = resources.files("kss_lora") / "configs" / "sweeps"
    return {p.stem: Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml")} if root.is_dir() else {}


def resolve_sweep_path(name_or_path: str) -> Path:
    return resolve_config_path(name_or_path, shipped=shipped_sweeps(), what="sweep")


def load_sweep(name_or_path: str, overrides: list[str] | None = None, grid: list[str] | None = None) -> SweepSpec:
    """Read a sweep file; ``overrides`` (``key=value``) change the base, ``grid`` (``key=[..]``) replaces axes."""
    path = resolve_sweep_path(name_or_path)
    data = parse_yaml(path.read_text(), str(path))
    for item in grid or []:
        key, value = parse_override(item, "--grid")
        data.setdefault("grid", {})
        data["grid"][key] = value if isinstance(value, list) else [value]
    for item in overrides or []:
        key, value = parse_override(item, "override")
        data.setdefault("overrides", {})
        data["overrides"][key] = value
    return parse_sweep(data, source=path, default_name=path.stem)


def parse_sweep(data: dict[str, Any], *, source: str | Path = "<mapping>", default_name: str = "sweep") -> SweepSpec:
    """Build a :class:`SweepSpec` from a parsed mapping; every key is checked (a typo is an error)."""
    unknown = sorted(set(data) - set(SWEEP_KEYS))
    if unknown:
        hint = (
            " (this looks like a run config: use `kss run`, or name it as a sweep's base:)"
            if set(unknown) & {"model", "data", "method", "train"}
            else ""
        )
        raise ConfigError(f"sweep.{unknown[0]}", f"unknown sweep key; allowed: {', '.join(SWEEP_KEYS)}{hint}")
    if "base" not in data:
        raise ConfigError("sweep.base", "required: a shipped config name, a config path, or a config mapping")
    base = _load_base(data["base"], Path(source).parent if source != "<mapping>" else Path.cwd())
    for key, value in _mapping(data.get("overrides"), "sweep.overrides").items():
        set_key(base, str(key), value)
    grid = {
        str(k): (list(v) if isinstance(v, list) else [v]) for k, v in _mapping(data.get("grid"), "sweep.grid").items()
    }
    for key, values in grid.items():
        if not values:
            raise ConfigError(f"sweep.grid.{key}", "needs at least one value")
    conditions = data.get("conditions") or []
    if isinstance(conditions, dict):  # {name: {overrides}} shorthand
        conditions = [{"name": k, **_mapping(v, f"sweep.conditions.{k}")} for k, v in conditions.items()]
    if not isinstance(conditions, list) or not all(isinstance(c, dict) for c in conditions):
        raise ConfigError("sweep.conditions", "must be a list of mappings of dotted keys (with an optional name)")
    executor = str(data.get("executor") or "sequential")
    from .executors import EXECUTORS

    if executor not in EXECUTORS:
        raise ConfigError("sweep.executor", f"unknown executor {executor!r}; allowed: {', '.join(EXECUTORS)}")
    name = str(data.get("name") or default_name)
    tracking = data.get("tracking") or []
    tracking = [tracking] if isinstance(tracking, str) else list(tracking)
    from .tracking import BACKENDS

    for backend in tracking:
        if backend not in BACKENDS:
            raise ConfigError("sweep.tracking", f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    return SweepSpec(
        name=name,
        base=base,
        grid=grid,
        conditions=[dict(c) for c in conditions],
        baseline=None if data.get("baseline") is None else str(data["baseline"]),
        strata=None if data.get("strata") is None else [str(s) for s in data["strata"]],
        runs_dir=Path(data.get("runs_dir") or f"runs/{name}"),
        executor=executor,
        workers=_workers(data.get("workers")),
        executor_options=_mapping(data.get("executor_options"), "sweep.executor_options"),
        tracking=tracking,
        description=str(data.get("description") or ""),
        source=str(source),
    )


def _workers(value: Any) -> int | None:
    """``workers``: a whole number of at least 1 (``2.5``, ``"two"`` or ``true`` would be read as something else)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError("sweep.workers", f"must be a whole number of at least 1, got {value!r}")
    return value


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(where, f"must be a mapping, got {type(value).__name__}")
    return value


def _load_base(base: Any, here: Path) -> dict[str, Any]:
    if isinstance(base, dict):
        return copy.deepcopy(base)
    if not isinstance(base, str):
        raise ConfigError("sweep.base", f"must be a config name, path or mapping, got {base!r}")
    local = here / base
    return load_raw(str(local) if local.is_file() else base)


# ----------------------------------------------------------------------------- expansion


def is_seed_key(key: str) -> bool:
    """Seed keys give replicates of one condition, not new conditions."""
    return key.split(".")[-1].endswith("seed")


def strata_keys(spec: SweepSpec) -> list[str]:
    """Grid keys compared *within*: given explicitly, else every non-seed grid key outside ``method.*``."""
    if spec.strata is not None:
        return spec.strata
    return [k for k in spec.grid if not is_seed_key(k) and not k.startswith("method.")]


def _short(key: str) -> str:
    return SHORT_NAMES.get(key, key.split(".")[-1])


def slug(text: str) -> str:
    for k, v in _ASCII.items():
        text = text.replace(k, v)
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "run"


def expand(spec: SweepSpec) -> list[SweepPoint]:
    """Every run of the sweep, in a stable order; raises :class:`ConfigError` naming the first bad point.

    All points are validated here, before anything runs, so a typo in any grid value fails the whole sweep
    at once instead of after an hour of training.
    """
    strata = strata_keys(spec)
    unknown = [s for s in strata if s not in spec.grid]
    if unknown:
        raise ConfigError("sweep.strata", f"{unknown[0]!r} is not a grid key; grid keys: {', '.join(spec.grid)}")
    keys = list(spec.grid)
    conditions = spec.conditions or [{}]
    points, seen = [], {}
    for cond in conditions:
        cond = dict(cond)
        cond_name = cond.pop("name", None)
        for values in itertools.product(*(spec.grid[k] for k in keys)):
            params = {**cond, **dict(zip(keys, values))}
            raw = copy.deepcopy(spec.base)
            for key, value in params.items():
                set_key(raw, key, value)
            where = ", ".join(f"{k}={fmt_label(v)}" for k, v in params.items()) or "base"
            try:
                cfg = from_dict(raw)
            except ConfigError as exc:
                raise ConfigError(exc.field, f"{exc.message} (sweep point {where})") from None
            arm = str(cond_name) if cond_name else _arm_name(cfg, params, strata)
            stratum = ", ".join(f"{_short(k)}={fmt_label(params[k])}" for k in strata)
            label = "_".join(
                [slug(arm)] + [slug(f"{_short(k)}{fmt_label(params[k])}") for k in strata] + [f"s{cfg.train.seed}"]
            )
            run_id = cfg.run_id()
            if run_id in seen:
                raise ConfigError("sweep", f"points {seen[run_id]} and {where} resolve to the same config")
            seen[run_id] = where
            points.append(
                SweepPoint(
                    params=params,
                    arm=arm,
                    stratum=stratum,
                    seed=cfg.train.seed,
                    config=cfg.to_dict(),
                    run_id=run_id,
                    name=f"{label}-{run_id}",
                )
            )
    return points


def _arm_name(cfg: Any, params: dict[str, Any], strata: list[str]) -> str:
    """Method label (preset or method name) plus the method settings this point varies, e.g. ``kss ρ=0.3``."""
    label = cfg.method.preset or cfg.method.name
    extra = [
        f"{_short(k)}={fmt_label(v)}"
        for k, v in params.items()
        if k.startswith("method.") and k not in ("method.preset", "method.name") and k not in strata
    ]
    return " ".join([label, *extra])


# ----------------------------------------------------------------------------- state of a run


def point_state(directory: Path, run_id: str) -> str:
    """``ok`` / ``failed`` for a finished run, ``corrupt`` for a record that cannot be read, ``unfinished``
    for a killed or never-started one (what ``kss sweep --dry-run`` lists)."""
    return RunDirectory(directory).state(run_id)


def point_status(directory: Path, run_id: str) -> str:
    """``ok`` / ``failed`` for a finished run, else ``unfinished``: to be run (a corrupt record included)."""
    state = point_state(directory, run_id)
    return "unfinished" if state == "corrupt" else state


def adopt_finished(points: list[SweepPoint], runs_dir: Path) -> list[SweepPoint]:
    """Point each grid point at an existing finished run with its run_id, whatever that directory's label.

    Two sweeps may label the same config differently (``standard_s0`` in the five-config benchmark,
    ``standard_noise0_s0`` in the noise sweep); the run_id is the identity, so the run is done once.
    """
    existing: dict[str, list[str]] = {}
    if runs_dir.is_dir():
        for d in sorted(runs_dir.iterdir()):
            if d.is_dir() and "-" in d.name:
                existing.setdefault(d.name.rsplit("-", 1)[-1], []).append(d.name)
    out = []
    for p in points:
        names = existing.get(p.run_id, [])
        finished = [n for n in names if point_status(runs_dir / n, p.run_id) in ("ok", "failed")]
        if finished and p.name not in finished:
            p = dataclasses.replace(p, name=finished[0])
        out.append(p)
    return out


@dataclass(frozen=True)
class RunTask:
    """What a worker needs to run one point; plain data so every executor can ship it."""

    config: dict[str, Any]
    directory: str
    cwd: str
    name: str


def run_task(task: RunTask) -> dict[str, Any]:
    """Run one point and return its result; never raises for a bad point (it is recorded as failed).

    Runs in a worker process (local, ray, slurm) or in the sweep's own process (sequential).
    """
    if task.cwd and os.getcwd() != task.cwd:  # relative data paths in configs are relative to the sweep's cwd
        os.chdir(task.cwd)
    from ..runner import Run

    cfg = from_dict(task.config)
    directory = Path(task.directory)
    try:
        prepared = Run(cfg)
    except Exception as exc:  # bad data, missing model...: a failed run, recorded like any other
        return record_prepare_failure(cfg, directory, exc)
    return prepared.execute(directory)


def record_prepare_failure(cfg: Any, directory: Path, exc: BaseException) -> dict[str, Any]:
    """A point that could not even start still gets a run directory that says why (the runner's record)."""
    from ..runner import record_prepare_failure as record

    return record(cfg, directory, exc)


# ----------------------------------------------------------------------------- running a sweep


@dataclass
class SweepSummary:
    """What a sweep did: counts, and each point's status afterwards."""

    total: int
    skipped: int = 0  # finished before this invocation
    done: int = 0
    failed: int = 0
    lost: int = 0  # a worker died: no result, redone next time
    corrupt: int = 0  # found with an unreadable record at the start, and run again
    statuses: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def remaining(self) -> int:
        return self.total - self.skipped - self.done - self.failed - self.lost

    @property
    def still_failed(self) -> int:
        """Points whose run is failed now, this invocation's and earlier ones' (skipped without --retry-failed)."""
        return sum(1 for s in self.statuses.values() if s == "failed")

    @property
    def ok(self) -> bool:
        """Every point finished ok: what ``kss sweep``'s exit code 0 means."""
        return self.still_failed == 0 and self.lost == 0 and self.remaining == 0


def write_manifest(spec: SweepSpec, points: list[SweepPoint]) -> Path:
    """``<runs_dir>/sweeps/<name>.json``: how this sweep labels its runs (read by ``kss ls`` and the report)."""
    path = spec.runs_dir / MANIFEST_DIR / f"{slug(spec.name)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    rundir.atomic_write_json(
        path,
        {
            "name": spec.name,
            "description": spec.description,
            "source": spec.source,
            "baseline": spec.baseline,
            "grid": spec.grid,
            "strata": strata_keys(spec),
            "conditions": spec.conditions,
            "points": [
                {
                    "name": p.name,
                    "run_id": p.run_id,
                    "arm": p.arm,
                    "stratum": p.stratum,
                    "seed": p.seed,
                    "params": p.params,
                }
                for p in points
            ],
        },
    )
    return path


@contextmanager
def sweep_lock(runs_dir: Path) -> Iterator[None]:
    """One sweep per runs directory at a time; the OS drops the lock if the sweep is killed."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    with open(runs_dir / LOCK_NAME, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise KSSError(f"another sweep is running in {runs_dir} (lock {runs_dir / LOCK_NAME})") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_sweep(
    spec: SweepSpec,
    *,
    executor: str | None = None,
    workers: int | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    on_result: Callable[[SweepPoint, dict[str, Any]], None] | None = None,
) -> SweepSummary:
    """Expand, skip what is finished, run the rest on the chosen executor, and return a summary.

    A failed point is recorded (``result.json`` with ``status: failed``) and the sweep goes on; with
    ``retry_failed`` such points are run again.
    """
    from .executors import map_unordered
    from .progress import SweepProgress

    runs_dir = spec.runs_dir
    points = expand(spec)  # a bad grid fails here, before the runs directory is even created
    if spec.tracking:
        from .tracking import check_backends

        check_backends(spec.tracking)
    with sweep_lock(runs_dir):
        points = adopt_finished(points, runs_dir)
        write_manifest(spec, points)
        summary = SweepSummary(total=len(points))
        todo = []
        for p in points:
            status = point_state(runs_dir / p.name, p.run_id)
            if status == "ok" or (status == "failed" and not retry_failed):
                summary.skipped += 1
                summary.statuses[p.name] = status
            else:
                summary.corrupt += status == "corrupt"
                todo.append(p)
        tasks = [
            RunTask(config=p.config, directory=str((runs_dir / p.name).resolve()), cwd=os.getcwd(), name=p.name)
            for p in todo
        ]
        bar = SweepProgress(summary, enabled=progress)
        t0 = time.time()
        by_name = {p.name: p for p in todo}
        for task, outcome in map_unordered(
            run_task,
            tasks,
            executor=executor or spec.executor,
            workers=workers or spec.workers,
            options=spec.executor_options,
        ):
            if isinstance(outcome, BaseException):
                summary.lost += 1
                summary.statuses[task.name] = "unfinished"
                bar.update(task.name, None, f"{type(outcome).__name__}: {outcome}")
                continue
            status = str(outcome.get("status"))
            summary.statuses[task.name] = status
            if status == "ok":
                summary.done += 1
            else:
                summary.failed += 1
            bar.update(task.name, outcome, outcome.get("error"))
            if spec.tracking:
                from .tracking import mirror_run

                mirror_run(runs_dir / task.name, spec.tracking, experiment=spec.name)
            if on_result is not None:
                on_result(by_name[task.name], outcome)
        bar.close()
        summary.wall_s = round(time.time() - t0, 2)
    return summary
