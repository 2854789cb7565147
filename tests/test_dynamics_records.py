"""Per-example recording in the runner: checkpoints, free records, and no extra forward passes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_config

from kss_lora.config import from_dict
from kss_lora.dynamics.records import load_dynamics
from kss_lora.runner import Run


def count_forwards(run: Run) -> list[int]:
    calls = [0]
    run.model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.__setitem__(0, calls[0] + 1), with_kwargs=True
    )
    return calls


def test_free_recording_adds_no_forward_passes(tmp_path):
    counts = {}
    for free in (False, True):
        run = Run(from_dict(tiny_config(tmp_path, tracking={"per_example": True, "free": free})))
        calls = count_forwards(run)
        assert run.execute(tmp_path / f"free{free}")["status"] == "ok"
        counts[free] = calls[0]
    assert counts[True] == counts[False]


def test_checkpoints_and_free_records(tmp_path):
    cfg = tiny_config(
        tmp_path,
        tracking={"per_example": True, "free": True, "every_steps": 1},
        noise={"rate": 0.3, "seed": 1},
        train={"epochs": 2, "batch_size": 16},
    )
    run = Run(from_dict(cfg))
    result = run.execute(tmp_path / "run")
    assert result["status"] == "ok"
    dyn = load_dynamics(tmp_path / "run")
    n = result["n_train"]
    steps_per_epoch = -(-n // 16)
    # step 0, every step, epoch ends coincide with steps: 1 + total steps checkpoints
    assert dyn.ckpt_step.tolist() == list(range(0, 2 * steps_per_epoch + 1))
    ckpt = dyn.checkpoint()
    assert ckpt.loss.shape == (2 * steps_per_epoch + 1, n)
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    epoch_losses = dyn.checkpoint(epochs_only=True).loss.mean(axis=1)
    np.testing.assert_allclose(epoch_losses, [m["train_loss"] for m in metrics], rtol=1e-5)
    clean = dyn.checkpoint(labels=dyn.clean_labels, epochs_only=True).loss.mean(axis=1)
    np.testing.assert_allclose(clean, [m["train_loss_clean"] for m in metrics], rtol=1e-5)
    free = dyn.free()
    assert free.loss.shape == (2, n) and np.isfinite(free.loss).all()
    assert dyn.is_noisy is not None and dyn.is_noisy.sum() == round(result["noise_rate_realised"] * n)


def test_load_dynamics_without_tracking_is_a_clear_error(tmp_path):
    from kss_lora.errors import DataError

    Run(from_dict(tiny_config(tmp_path))).execute(tmp_path / "plain")
    with pytest.raises(DataError, match="tracking.per_example"):
        load_dynamics(tmp_path / "plain")
