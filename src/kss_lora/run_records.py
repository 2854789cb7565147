"""A run's record when it starts, when it cannot start, and when it fails: built the same way every time.

Split from :mod:`kss_lora.runner` (the loop); the runner re-exports these names.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from .config import RunConfig, to_yaml
from .errors import KSSError, TrainingDiverged
from .methods import ResolvedMethod, resolve_method
from .run_result import DIVERGED_PREFIX, RunResult
from .rundir import RunDirectory
from .tasks import Task


def new_result(cfg: RunConfig, method: ResolvedMethod, task: Task | None = None) -> RunResult:
    """The record of a run about to train (``task`` prepared) or that could not be prepared (``task`` None)."""
    result = RunResult(
        status="running",
        run_id=cfg.run_id(),
        method=method.name,
        preset=method.preset,
        condition=method.label(),
        rank=method.rank,
        gamma=method.gamma,
        sparsity=method.sparsity,
        mask_mode=method.mask_mode,
        seed=cfg.train.seed,
        noise_rate=cfg.noise.rate,
        noise_kind=cfg.noise.kind,
        precision=cfg.precision.mode,
        model=cfg.model.name,
        task=cfg.model.task,
        lr=cfg.train.lr,
        description=cfg.description,
    )
    if task is not None:
        result.n_train = len(task.train_batches)
        result.n_val = len(task.val_batches)
        result.n_test = len(task.test_batches) if task.test_batches is not None else 0
        result.update(task.result_extra())
    return result


def default_run_dir(cfg: RunConfig, method: ResolvedMethod | None = None) -> Path:
    """``output.dir/<run_name>``, else ``output.dir/<method label>-<run id>``."""
    out = cfg.output
    label = (method or resolve_method(cfg.method)).label()
    return Path(out.dir) / (out.run_name or f"{label}-{cfg.run_id()}")


def record_prepare_failure(cfg: RunConfig, directory: Path, exc: BaseException) -> dict[str, Any]:
    """A run that could not even start still gets a run directory saying why, with the same record."""
    method = resolve_method(cfg.method)
    run_dir = RunDirectory(directory).create()
    run_dir.write_config(to_yaml(cfg, method))
    run_dir.write_error("".join(traceback.format_exception(exc)))
    message = str(exc) if isinstance(exc, KSSError) else f"{type(exc).__name__}: {exc}"
    result = new_result(cfg, method)
    result.status, result.stage = "failed", "prepare"
    result.error = message.splitlines()[0] if message else type(exc).__name__
    run_dir.write_result(result)
    return result.to_dict()


def _failure(exc: BaseException) -> str:
    """result.json's one-line error; a blown-up loss reads ``diverged: ...`` (RunResult.diverged)."""
    if isinstance(exc, TrainingDiverged):
        text = str(exc)
        return (text if text.startswith(DIVERGED_PREFIX) else DIVERGED_PREFIX + text).splitlines()[0]
    return f"{type(exc).__name__}: {exc}".splitlines()[0]
