"""`kss run` ends with a few lines for a person on stderr; stdout's last line stays the JSON for scripts."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import tiny_config

from kss_lora.cli import main
from kss_lora.run_summary import gap_meaning, human_summary


@pytest.mark.parametrize(
    ("gap", "words"),
    [
        (0.41, "much better than validation (overfitting)"),
        (0.1, "somewhat better than validation (mild overfitting)"),
        (0.0, "fitted alike (no sign of overfitting)"),
        (-0.3, "validation is fitted better"),
        (float("nan"), "no gap measured"),
        (None, "no gap measured"),
    ],
)
def test_gap_meaning(gap, words):
    assert words in gap_meaning(gap)


def test_human_summary_lines():
    result = {
        "status": "ok",
        "epochs": 2,
        "wall_time_s": 12.4,
        "train_accuracy": 0.9062,
        "val_accuracy": 0.8125,
        "test_accuracy": None,
        "train_loss": 0.3121,
        "val_loss": 0.7265,
        "test_loss": None,
        "gap": 0.4144,
        "noise_rate": 0.2,
        "gap_clean": 0.05,
    }
    assert human_summary(result, "runs/x").splitlines() == [
        "run directory: runs/x",
        "status ok: 2 epochs in 12 s",
        "accuracy: train 0.906, val 0.812, test –",
        "loss (nats): train 0.312, val 0.727, test –",
        "gap 0.41 nats (val − train loss): the model fits training data much better than validation (overfitting)",
        "gap_clean 0.05 nats (against the true labels): training and validation data are fitted alike "
        "(no sign of overfitting)",
    ]
    lm = human_summary({**result, "val_perplexity": 12.345, "noise_rate": 0.0}, "r", task="causal-lm")
    assert "perplexity: val 12.35" in lm and "accuracy" not in lm and "gap_clean" not in lm
    failed = human_summary({"status": "failed", "error": "TrainingDiverged"}, "r").splitlines()
    assert failed == ["run directory: r", "status failed (the reason is in its result.json and error.log)"]


def test_kss_run_prints_the_summary_on_stderr_and_the_json_last_on_stdout(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path)))
    assert main(["run", str(path), "--run-dir", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    last = json.loads(captured.out.strip().splitlines()[-1])
    assert list(last) == [
        "status",
        "method",
        "preset",
        "seed",
        "train_loss",
        "val_loss",
        "gap",
        "val_accuracy",
        "test_accuracy",
    ]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert f"run directory: {tmp_path / 'run'}" in captured.err
    assert f"gap {result['gap']:.2f} nats (val − train loss): {gap_meaning(result['gap'])}" in captured.err
    assert f"val {result['val_accuracy']:.3f}" in captured.err and "loss (nats): train" in captured.err
