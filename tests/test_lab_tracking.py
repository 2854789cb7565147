"""Optional mirrors (MLflow SQLite store, TensorBoard, W&B offline) of a finished run directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_lab_report import fake_runs_dir

from kss_lora.errors import KSSError
from kss_lora.lab.tracking import check_backends, flatten, mirror_run, mirror_runs


def test_flatten():
    assert flatten({"train": {"lr": 1e-3, "x": {"y": 1}}, "precision": "fp32"}) == {
        "train.lr": 1e-3,
        "train.x.y": 1,
        "precision": "fp32",
    }


def test_unknown_backend_is_a_user_error():
    with pytest.raises(KSSError, match="unknown tracking backend"):
        check_backends(["neptune"])


def first_run(tmp_path: Path) -> Path:
    runs_dir = fake_runs_dir(tmp_path, matched=False, noise=False)
    return sorted(d for d in runs_dir.iterdir() if d.name.startswith("standard"))[0]


def test_mlflow_sqlite_mirror(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = first_run(tmp_path)
    assert mirror_run(run, ["mlflow"], experiment="t") == {"mlflow": True}
    assert mirror_run(run, ["mlflow"], experiment="t") == {"mlflow": False}  # idempotent
    db = run.parent / "mlflow.db"
    assert db.is_file()
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    found = mlflow.search_runs(experiment_names=["t"], output_format="list")
    assert len(found) == 1
    data = found[0].data
    assert data.params["method.preset"] == "standard"
    assert "final_gap" in data.metrics and "val_loss" in data.metrics


def test_tensorboard_mirror(tmp_path):
    pytest.importorskip("tensorboard")
    run = first_run(tmp_path)
    assert mirror_run(run, ["tensorboard"]) == {"tensorboard": True}
    events = list((run.parent / "tensorboard" / run.name).rglob("events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent)).Reload()
    assert [e.step for e in acc.Scalars("val_loss")] == [1, 2, 3]


def test_wandb_offline_mirror(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = first_run(tmp_path)
    assert mirror_run(run, ["wandb"], experiment="t") == {"wandb": True}
    assert list((run.parent / "wandb").rglob("*.wandb"))


def test_a_broken_mirror_warns_and_never_raises(tmp_path, capsys, monkeypatch):
    from kss_lora.lab import tracking

    def boom(run_dir, experiment):
        raise RuntimeError("tracking server down")

    monkeypatch.setitem(tracking.MIRRORS, "mlflow", boom)
    run = first_run(tmp_path)
    assert mirror_run(run, ["mlflow"]) == {"mlflow": False}
    assert "tracking server down" in capsys.readouterr().err
    monkeypatch.setattr(tracking, "check_backends", lambda b: list(b))
    assert mirror_runs(run.parent, ["mlflow"]) == 0
