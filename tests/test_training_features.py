"""Checkpoints and resume, early stopping, step-level metrics and evaluation, divergence, progress lines,
and the classification dtype / gradient-checkpointing / QLoRA settings (issue 16 items 1-3 and 6, issue 12)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_config
from safetensors.torch import load_file

from kss_lora.cli import main
from kss_lora.config import from_dict
from kss_lora.errors import ConfigError
from kss_lora.rundir import RunDirectory
from kss_lora.runner import Run, run

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, cfg: dict, name: str = "cfg.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    files = sorted((run_dir / "adapter").glob("*.safetensors"))
    assert files, f"no adapter in {run_dir}"
    out: dict[str, torch.Tensor] = {}
    for f in files:
        out.update({f"{f.name}:{k}": v for k, v in load_file(str(f)).items()})
    return out


def _resume_config(tmp_path: Path) -> dict:
    # KSS masks (step-dependent) and LoRA dropout (global RNG) both matter for an exact resume.
    return tiny_config(
        tmp_path,
        data={"num_examples": 384},
        method={"dropout": 0.1},
        train={"epochs": 3, "batch_size": 8, "checkpoint_every": 5, "log_every_steps": 1},
    )


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    cfg = _resume_config(tmp_path)
    cfg_path = _write(tmp_path, cfg)
    reference = tmp_path / "reference"
    assert main(["run", cfg_path, "--run-dir", str(reference)]) == 0
    assert not (reference / "checkpoint").exists()  # removed once the run finished ok

    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kss_lora", "run", cfg_path, "--run-dir", str(killed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (killed / "checkpoint" / "state.json").exists():
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "result.json").exists() or json.loads((killed / "result.json").read_text())["status"] != "ok"
    step_at_kill = json.loads((killed / "checkpoint" / "state.json").read_text())["loop"]["step"]
    assert step_at_kill < 144

    assert main(["run", cfg_path, "--run-dir", str(killed), "--resume"]) == 0
    result = json.loads((killed / "result.json").read_text())
    assert result["status"] == "ok" and result["resumed_from_step"] >= step_at_kill
    ref, got = _adapter(reference), _adapter(killed)
    assert ref.keys() == got.keys()
    for key in ref:
        torch.testing.assert_close(got[key], ref[key], atol=1e-6, rtol=0)
    epochs = [r["epoch"] for r in RunDirectory(killed).read_metrics()]
    assert epochs == [1, 2, 3]
    steps = [r["step"] for r in RunDirectory(killed).read_metrics(("step",))]
    assert steps == list(range(1, 145))  # each step line once, none lost or repeated by the resume
    ref_result = json.loads((reference / "result.json").read_text())
    assert result["val_loss"] == pytest.approx(ref_result["val_loss"], abs=1e-6)


def test_resume_refuses_a_different_config_or_no_checkpoint(tmp_path, capsys):
    cfg = tiny_config(tmp_path, train={"epochs": 1, "checkpoint_every": 2, "max_steps": 3})
    run_dir = tmp_path / "run"
    # A finished run has removed its checkpoint: nothing to resume.
    assert run(from_dict(cfg), run_dir)["status"] == "ok"
    assert main(["run", _write(tmp_path, cfg), "--run-dir", str(run_dir), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    other = tiny_config(tmp_path, train={"epochs": 1, "checkpoint_every": 2, "max_steps": 3, "lr": 1e-2})
    (run_dir / "checkpoint").mkdir()  # a checkpoint is there, but the config now differs
    (run_dir / "checkpoint" / "state.json").write_text("{}")
    assert main(["run", _write(tmp_path, other, "other.yaml"), "--run-dir", str(run_dir), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "train.lr" in err and "0.01" in err and err.count("\n") == 1
    assert json.loads((run_dir / "result.json").read_text())["status"] == "ok"  # nothing written


def test_checkpoint_refused_with_per_example_tracking(tmp_path):
    cfg = tiny_config(tmp_path, train={"checkpoint_every": 2}, tracking={"per_example": True})
    with pytest.raises(ConfigError, match="train.checkpoint_every"):
        Run(from_dict(cfg))


def test_early_stopping_and_restore_best(tmp_path):
    # A large lr overfits 16 noisy examples fast: val_loss rises, patience 1 stops the run.
    cfg = tiny_config(
        tmp_path,
        data={"num_examples": 64},
        noise={"rate": 0.4, "seed": 1},
        train={"epochs": 12, "lr": 5e-2, "early_stopping_patience": 1, "restore_best": True, "eval_every_steps": 1},
    )
    result = run(from_dict(cfg), tmp_path / "run")
    assert result["status"] == "ok" and result["stopped_early"] is True
    evals = RunDirectory(tmp_path / "run").read_metrics(("eval", "epoch"))
    losses = [r["val_loss"] for r in evals]
    best = min(range(len(losses)), key=losses.__getitem__)
    assert result["best_epoch"] == evals[best]["epoch"]
    assert result["steps"] < 12 * 3  # stopped before the last step
    # restore_best: the final record is the best evaluation's adapter, re-evaluated
    assert result["restored_best"] is True
    assert result["val_loss"] == pytest.approx(losses[best], abs=1e-5)
    # patience: exactly one evaluation after the best one
    assert len(losses) - 1 - best <= 2


def test_no_early_stopping_records_false(tmp_path):
    result = run(from_dict(tiny_config(tmp_path, train={"epochs": 2})), tmp_path / "run")
    assert result["stopped_early"] is False and result["best_epoch"] in (1, 2)


def test_step_and_eval_lines_and_streaming_callback(tmp_path):
    cfg = from_dict(tiny_config(tmp_path, train={"epochs": 2, "log_every_steps": 1, "eval_every_steps": 2}))
    seen: list[dict] = []
    prepared = Run(cfg, on_metrics=seen.append)
    result = prepared.execute(tmp_path / "run")
    assert result["status"] == "ok"
    run_dir = RunDirectory(tmp_path / "run")
    steps = run_dir.read_metrics(("step",))
    assert [r["step"] for r in steps] == list(range(1, 9))
    assert all(r["loss"] > 0 and r["lr"] >= 0 for r in steps)
    assert steps[1]["lr"] > steps[0]["lr"] or steps[0]["lr"] > 0  # the lr the step used, warm-up included
    evals = run_dir.read_metrics(("eval",))
    assert [r["step"] for r in evals] == [2, 6]  # steps 4 and 8 are epoch ends: the epoch line evaluates
    assert all("val_loss" in r and "train_loss" not in r for r in evals)
    assert [r["epoch"] for r in run_dir.read_metrics()] == [1, 2]  # readers see epoch lines only
    all_lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert seen == [json.loads(line) for line in all_lines]


def test_absurd_lr_is_diverged_not_ok(tmp_path):
    from kss_lora.run_result import RunResult

    cfg = tiny_config(
        tmp_path, method={"name": "lora", "preset": None}, train={"lr": 1e4, "epochs": 3, "grad_clip": None}
    )
    result = run(from_dict(cfg), tmp_path / "run")
    assert result["status"] == "failed" and result["error"].startswith("diverged: ")
    assert RunResult.from_dict(result).diverged
    assert RunDirectory(tmp_path / "run").state() == "failed"


def test_divergence_guard_on_finite_blowup():
    from kss_lora.errors import TrainingDiverged
    from kss_lora.loop_state import LoopState

    loop = LoopState()
    loop.check_divergence(0.7, 1)
    loop.check_divergence(6000.0, 2)  # under 1e4 x 0.7
    with pytest.raises(TrainingDiverged, match="^diverged: training loss 8000"):
        loop.check_divergence(8000.0, 3)
    with pytest.raises(TrainingDiverged, match="val_loss"):
        loop.check_val_divergence(1e5)


def test_progress_lines_every_tenth_when_not_a_terminal(tmp_path, capsys):
    cfg = tiny_config(tmp_path, data={"num_examples": 160}, train={"epochs": 1, "progress": True})
    assert run(from_dict(cfg), tmp_path / "run")["status"] == "ok"
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[kss] ")]
    assert [line.split()[1] for line in lines] == [f"{10 * k}%" for k in range(1, 11)]
    assert lines[-1].split()[2:4] == ["step", "10/10"] and "epoch 1 loss" in lines[-1] and "elapsed" in lines[-1]


def test_progress_line_one_per_crossing():
    import io

    from kss_lora.loop_state import ProgressLine

    out = io.StringIO()
    line = ProgressLine(3, enabled=True, t0=time.time(), stream=out)
    for step in (1, 2, 3):
        line.update(step, 1, 0.5)
    assert [x.split()[1] for x in out.getvalue().splitlines()] == ["30%", "60%", "100%"]


def _trained(tmp_path: Path, name: str, **blocks: dict) -> tuple[Run, dict]:
    blocks["train"] = {"epochs": 1, **blocks.get("train", {})}
    cfg = from_dict(tiny_config(tmp_path, **blocks))
    prepared = Run(cfg)
    return prepared, prepared.execute(tmp_path / name)


def test_bfloat16_classification_base_with_float32_trainables(tmp_path):
    ref_run, ref = _trained(tmp_path, "fp32")
    bf_run, bf = _trained(tmp_path, "bf16", model={"dtype": "bfloat16"})
    assert bf["status"] == "ok"
    named = list(bf_run.model.named_parameters())
    frozen = {p.dtype for n, p in named if not p.requires_grad and "classifier" not in n}  # the body
    trainable = {p.dtype for n, p in named if p.requires_grad}  # LoRA and the head
    assert frozen == {torch.bfloat16} and trainable == {torch.float32}
    assert {p.dtype for p in ref_run.model.parameters()} == {torch.float32}
    # a different number (bf16 rounding of the body), but close
    assert bf["train_loss"] != ref["train_loss"]
    assert bf["train_loss"] == pytest.approx(ref["train_loss"], abs=0.05)


def test_gradient_checkpointing_is_enabled_and_trains_the_same(tmp_path):
    ref_run, ref = _trained(tmp_path, "plain")
    gc_run, gc = _trained(tmp_path, "gc", train={"gradient_checkpointing": True})
    assert gc["status"] == "ok"
    assert gc_run.model.base_model.model.is_gradient_checkpointing
    assert not ref_run.model.base_model.model.is_gradient_checkpointing
    # recomputation with the RNG state preserved: the same training, to float tolerance
    assert gc["train_loss"] == pytest.approx(ref["train_loss"], abs=1e-5)


def test_qlora_refused_clearly_here(tmp_path, capsys):
    llm = tiny_config(tmp_path, model={"name": "tiny-llama", "task": "causal-lm", "quantization": "4bit"})
    assert main(["run", _write(tmp_path, llm), "--run-dir", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: model.quantization") and "\n" not in err
    assert not (tmp_path / "q").exists()
    cls = tiny_config(tmp_path, model={"quantization": "4bit"})
    with pytest.raises(ConfigError, match="causal-lm"):
        Run(from_dict(cls))
    with pytest.raises(ConfigError, match="model.quantization"):
        from_dict(tiny_config(tmp_path, model={"quantization": "3bit"})).validate()


def test_kss_mirror_exits_non_zero_when_a_copy_fails(tmp_path, capsys, monkeypatch):
    from test_lab_report import fake_runs_dir

    from kss_lora.lab import tracking

    def boom(run_dir, experiment):
        raise RuntimeError("tracking server down")

    runs_dir = fake_runs_dir(tmp_path, matched=False, noise=False)
    monkeypatch.setattr(tracking, "check_backends", lambda b: list(b))
    monkeypatch.setitem(tracking.MIRRORS, "mlflow", boom)
    assert main(["mirror", str(runs_dir), "--to", "mlflow"]) == 1
    err = capsys.readouterr().err
    assert "tracking server down" in err and "copies failed" in err
    monkeypatch.setitem(tracking.MIRRORS, "mlflow", lambda run_dir, experiment: True)
    assert main(["mirror", str(runs_dir), "--to", "mlflow"]) == 0


def test_tensorboard_stream_during_the_run(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(tmp_path, train={"epochs": 2, "log_every_steps": 1}, tracking={"stream": ["tensorboard"]})
    run_dir = tmp_path / "runs" / "r"
    assert main(["run", _write(tmp_path, cfg), "--run-dir", str(run_dir)]) == 0
    events = list((tmp_path / "runs" / "tensorboard-live" / "r").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent)).Reload()
    assert [e.step for e in acc.Scalars("step/loss")] == list(range(1, 9))
    assert [e.step for e in acc.Scalars("epoch/val_loss")] == [4, 8]
    val = [r["val_loss"] for r in RunDirectory(run_dir).read_metrics()]
    assert [e.value for e in acc.Scalars("epoch/val_loss")] == pytest.approx(val, rel=1e-6)


@pytest.mark.parametrize(
    "override",
    [
        "train.checkpoint_every=0",
        "train.eval_every_steps=-1",
        "train.log_every_steps=0",
        "train.early_stopping_patience=0",
        "tracking.stream=[neptune]",
    ],
)
def test_new_keys_are_validated(tmp_path, capsys, override):
    cfg_path = _write(tmp_path, tiny_config(tmp_path))
    assert main(["run", cfg_path, override, "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {override.split('=')[0]}") and "\n" not in err
    assert not (tmp_path / "r").exists()


def test_restore_best_needs_more_than_one_evaluation(tmp_path):
    with pytest.raises(ConfigError, match="train.restore_best"):
        Run(from_dict(tiny_config(tmp_path, train={"epochs": 1, "restore_best": True})))
