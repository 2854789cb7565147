"""Optional mirrors of finished runs to MLflow, TensorBoard and Weights & Biases (extra ``tracking``).

The run directory stays the source of truth: a mirror is written *from* it after the run finished, can be
redone at any time (``kss mirror RUNS_DIR --to mlflow``), and a mirror that fails never fails a run or a sweep.

- ``mlflow``: a local SQLite store ``sqlite:///<runs_dir>/mlflow.db`` (artefacts in ``<runs_dir>/mlflow-artifacts``)
  unless ``MLFLOW_TRACKING_URI`` is set;
  one MLflow run per run directory (tag ``kss.run_id``; already mirrored runs are skipped); params = the
  flattened resolved config, metrics per epoch (step = epoch) plus the final ones, result.json as artefact.
- ``tensorboard``: event files under ``<runs_dir>/tensorboard/<run name>/`` (``tensorboard --logdir``).
- ``wandb``: one W&B run per run directory, offline unless ``WANDB_MODE`` says otherwise (``wandb sync``
  uploads later), files under ``<runs_dir>/wandb``.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from .. import run_result
from ..errors import KSSError
from ..rundir import RESULT_NAME, CorruptRecord, RunDirectory, find_run_directories

BACKENDS = ("mlflow", "tensorboard", "wandb")
# What is mirrored comes from the run record's declaration (kss_lora.run_result).
FINAL_KEYS = run_result.final_keys()
EPOCH_KEYS = run_result.epoch_keys()


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-3}}`` → ``{"train.lr": 1e-3}`` (what trackers take as params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def _run_data(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]] | None:
    """A finished run's result, config and epoch rows; ``None`` when unfinished or corrupt (not mirrored)."""
    run = RunDirectory(run_dir)
    try:
        result = run.read_result()
        if result is None or not result.finished:
            return None
        metrics = run.read_metrics()
    except CorruptRecord:
        return None
    try:
        config = run.read_config() or {}
    except CorruptRecord:
        config = {}
    return result.to_dict(), config, metrics


def _numbers(d: dict[str, Any], keys: Iterable[str]) -> dict[str, float]:
    return {k: float(d[k]) for k in keys if isinstance(d.get(k), (int, float)) and not isinstance(d.get(k), bool)}


def mirror_mlflow(run_dir: Path, experiment: str) -> bool:
    import mlflow

    data = _run_data(run_dir)
    if data is None:
        return False
    result, config, metrics = data
    root = run_dir.parent.resolve()
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:  # artefacts beside the store, not in ./mlruns
        mlflow.create_experiment(experiment, artifact_location=(root / "mlflow-artifacts").as_uri())
    mlflow.set_experiment(experiment)
    found = mlflow.search_runs(filter_string=f"tags.`kss.run_id` = '{result.get('run_id')}'", output_format="list")
    if found:
        return False
    with mlflow.start_run(
        run_name=run_dir.name, tags={"kss.run_id": str(result.get("run_id")), "kss.status": str(result.get("status"))}
    ):
        params = {k: str(v)[:500] for k, v in flatten(config).items()}
        mlflow.log_params(params)
        for row in metrics:
            mlflow.log_metrics(_numbers(row, EPOCH_KEYS), step=int(row.get("epoch", 0)))
        mlflow.log_metrics({f"final_{k}": v for k, v in _numbers(result, FINAL_KEYS).items()})
        mlflow.log_artifact(str(run_dir / RESULT_NAME))
    return True


def mirror_tensorboard(run_dir: Path, experiment: str) -> bool:
    from torch.utils.tensorboard import SummaryWriter

    data = _run_data(run_dir)
    if data is None:
        return False
    result, config, metrics = data
    logdir = run_dir.parent / "tensorboard" / run_dir.name
    if logdir.exists():  # already mirrored: event files are append-only, so never write twice
        return False
    writer = SummaryWriter(log_dir=str(logdir))
    try:
        for row in metrics:
            for k, v in _numbers(row, EPOCH_KEYS).items():
                writer.add_scalar(k, v, global_step=int(row.get("epoch", 0)))
        hparams = {
            k: v if isinstance(v, (int, float, str, bool)) else str(v)
            for k, v in flatten(config).items()
            if k.split(".")[0] in ("method", "train", "noise", "model")
        }
        writer.add_hparams(hparams, {f"final/{k}": v for k, v in _numbers(result, FINAL_KEYS).items()}, run_name=".")
        writer.add_text("result", f"```\n{yaml.safe_dump(result)}\n```")
    finally:
        writer.close()
    return True


def mirror_wandb(run_dir: Path, experiment: str) -> bool:
    import wandb

    data = _run_data(run_dir)
    if data is None:
        return False
    result, config, metrics = data
    wandb_dir = run_dir.parent / "wandb"
    wandb_dir.mkdir(exist_ok=True)
    run = wandb.init(
        project=experiment,
        name=run_dir.name,
        id=str(result.get("run_id")),
        config=flatten(config),
        dir=str(wandb_dir),
        mode=os.environ.get("WANDB_MODE", "offline"),
        resume="allow",
        reinit="finish_previous",
    )
    try:
        for row in metrics:
            run.log(_numbers(row, EPOCH_KEYS), step=int(row.get("epoch", 0)))
        for k, v in _numbers(result, FINAL_KEYS).items():
            run.summary[f"final_{k}"] = v
        run.summary["status"] = result.get("status")
    finally:
        run.finish()
    return True


MIRRORS = {"mlflow": mirror_mlflow, "tensorboard": mirror_tensorboard, "wandb": mirror_wandb}


def check_backends(backends: Iterable[str]) -> list[str]:
    """Validate backend names and that their packages are installed (a clear error, not an ImportError)."""
    backends = list(backends)
    for b in backends:
        if b not in MIRRORS:
            raise KSSError(f"unknown tracking backend {b!r}; allowed: {', '.join(BACKENDS)}")
        module = "torch.utils.tensorboard" if b == "tensorboard" else b
        try:
            __import__(module)
        except ImportError:
            raise KSSError(f"tracking backend {b} needs its package: pip install 'kss-lora[tracking]'") from None
    return backends


def mirror_run(
    run_dir: str | Path, backends: Iterable[str], *, experiment: str = "kss-lora", failed: list[str] | None = None
) -> dict[str, bool]:
    """Mirror one finished run; returns ``{backend: mirrored now}``. Errors are warnings, never raised (each
    failing backend is appended to ``failed`` when given)."""
    out = {}
    for b in backends:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[b] = MIRRORS[b](Path(run_dir), experiment)
        except Exception as exc:  # noqa: BLE001 - a mirror must never break a sweep
            print(
                f"warning: could not mirror {Path(run_dir).name} to {b}: {type(exc).__name__}: {exc}", file=sys.stderr
            )
            out[b] = False
            if failed is not None:
                failed.append(b)
    return out


def mirror_runs(
    runs_dir: str | Path, backends: Iterable[str], *, experiment: str | None = None, report_failures: bool = False
) -> Any:
    """Mirror every finished run of a runs directory; returns how many runs were newly mirrored anywhere
    (with ``report_failures``: ``(that count, how many copies failed)``, so ``kss mirror`` can exit non-zero)."""
    backends = check_backends(backends)
    experiment = experiment or Path(runs_dir).resolve().name
    count, failed = 0, []
    for d in find_run_directories(runs_dir):
        if any(mirror_run(d, backends, experiment=experiment, failed=failed).values()):
            count += 1
    return (count, len(failed)) if report_failures else count


def metrics_stream(cfg: Any, run_dir: str | Path) -> Any:
    """The runner's ``on_metrics`` callback for ``tracking.stream``: each metrics.jsonl line, as it is written,
    goes to the named trackers (epoch and eval lines by epoch/step, step lines by step); ``None`` when not set.

    The run directory stays the record: a tracker that fails prints a warning (the runner catches it), and
    ``kss mirror`` can still copy the finished run.
    """
    backends = check_backends(cfg.tracking.stream or ())
    if not backends:
        return None
    writers: list[Any] = []
    run_dir = Path(run_dir)
    if "tensorboard" in backends:
        from torch.utils.tensorboard import SummaryWriter

        writers.append(
            _TensorBoardStream(SummaryWriter(log_dir=str(run_dir.parent / "tensorboard-live" / run_dir.name)))
        )
    if "mlflow" in backends:
        writers.append(_MlflowStream(run_dir))
    if "wandb" in backends:
        writers.append(_WandbStream(run_dir))

    def on_metrics(row: dict[str, Any]) -> None:
        kind = row.get("kind", "epoch")
        values = _numbers(row, [k for k in row if k not in ("epoch", "step", "kind", "time_s")])
        step = int(row.get("step", 0))
        for w in writers:
            w.log({f"{kind}/{k}": v for k, v in values.items()}, step)

    return on_metrics


class _TensorBoardStream:
    def __init__(self, writer: Any):
        self.writer = writer

    def log(self, values: dict[str, float], step: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, global_step=step)
        self.writer.flush()


class _MlflowStream:
    def __init__(self, run_dir: Path):
        import mlflow

        root = run_dir.parent.resolve()
        root.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow-live.db'}")
        mlflow.set_experiment(root.name)
        self.mlflow, self.run = mlflow, mlflow.start_run(run_name=run_dir.name)

    def log(self, values: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(
            {k.replace("/", "."): v for k, v in values.items()}, step=step, run_id=self.run.info.run_id
        )


class _WandbStream:
    def __init__(self, run_dir: Path):
        import wandb

        wandb_dir = run_dir.parent / "wandb"
        wandb_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=run_dir.parent.resolve().name,
            name=f"{run_dir.name}-live",
            dir=str(wandb_dir),
            mode=os.environ.get("WANDB_MODE", "offline"),
            reinit="finish_previous",
        )

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)
