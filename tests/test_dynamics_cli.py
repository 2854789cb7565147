"""``kss dynamics``: the per-example table matches hand computations, plots are PNGs, bad input is one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config

from kss_lora.cli import main
from kss_lora.config import from_dict
from kss_lora.dynamics.capacity import lora_capacity, temporal_separation
from kss_lora.dynamics.entropy import load_chaosnli
from kss_lora.dynamics.records import load_dynamics
from kss_lora.runner import Run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory) -> Path:
    """tiny-bert, 30% symmetric noise, checkpoints every 2 steps and free records: about 3 s."""
    tmp = tmp_path_factory.mktemp("dyn")
    cfg = tiny_config(
        tmp,
        tracking={"per_example": True, "free": True, "every_steps": 2},
        noise={"rate": 0.3, "seed": 1},
        train={"epochs": 3},
    )
    assert Run(from_dict(cfg)).execute(tmp / "noisy")["status"] == "ok"
    return tmp / "noisy"


def assert_png(path: Path) -> None:
    import matplotlib.image as mpimg

    assert path.is_file() and path.read_bytes()[:8] == PNG_MAGIC
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def test_table_matches_hand_computation(noisy_run, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["dynamics", str(noisy_run), "-o", str(out), "--threshold", "0.6"]) == 0
    table = pd.read_csv(out / "examples.csv")
    dyn = load_dynamics(noisy_run)
    every, epochs = dyn.checkpoint(), dyn.checkpoint(epochs_only=True)
    assert len(table) == len(dyn.labels) and every.loss.shape[0] == len(dyn.ckpt_step)
    np.testing.assert_array_equal(table["id"], dyn.arrays["ids"])
    np.testing.assert_array_equal(table["label"], dyn.labels)
    np.testing.assert_array_equal(table["clean_label"], dyn.clean_labels)
    np.testing.assert_array_equal(table["is_noisy"], dyn.is_noisy)
    # loss-based metrics over every checkpoint (step 0 included)
    np.testing.assert_allclose(table["aulc"], every.loss.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(table["unlearning"], every.loss[-1] - every.loss[0], rtol=1e-9, atol=1e-12)
    below = every.loss < 0.6
    lt = np.where(below.any(axis=0), below.argmax(axis=0), -1)
    np.testing.assert_array_equal(table["learning_time"], lt)
    np.testing.assert_array_equal(table["learning_step"], np.where(lt >= 0, dyn.ckpt_step[lt], -1))
    # epoch-based metrics over the epoch-end checkpoints
    assert epochs.prob.shape[0] == 3
    np.testing.assert_allclose(table["confidence"], epochs.prob.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(table["variability"], epochs.prob.std(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(table["correctness"], epochs.correct.mean(axis=0))
    forgets = (epochs.correct[:-1] & ~epochs.correct[1:]).sum(axis=0)
    np.testing.assert_array_equal(table["forgetting_events"], forgets)
    np.testing.assert_allclose(table["aum"], epochs.margin.mean(axis=0), rtol=1e-9)
    # noise: temporal separation plot and its numbers; capacity from the adapted matrices' shapes
    assert_png(out / "data_map.png")
    assert_png(out / "temporal_separation.png")
    summary = json.loads((out / "summary.json").read_text())
    sep = temporal_separation(every.correct, dyn.is_noisy)
    np.testing.assert_allclose(summary["temporal_separation"]["noisy_fitted"], sep.noisy_fitted)
    # tiny-bert: 2 layers x (query, value), each 32 x 32; LoRA rank 4
    assert summary["capacity"]["capacity"] == lora_capacity([(32, 32)] * 4, 4) == 960
    assert "LoRA capacity" in capsys.readouterr().out


def test_free_source_and_parquet(noisy_run, tmp_path):
    out = tmp_path / "free"
    assert main(["dynamics", str(noisy_run), "--source", "free", "--format", "parquet", "-o", str(out)]) == 0
    table = pd.read_parquet(out / "examples.parquet")
    free = load_dynamics(noisy_run).free()
    np.testing.assert_allclose(table["aulc"], free.loss.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(table["confidence"], free.prob.mean(axis=0), rtol=1e-9)
    assert_png(out / "data_map.png")


def test_chaosnli_run_joins_entropy_and_heldout(shared_data, tmp_path):
    chaos = shared_data / "chaosnli"
    cfg = tiny_config(
        tmp_path,
        data={"source": "chaosnli", "train": str(chaos / "chaosNLI_mnli_m.jsonl"), "max_train_examples": 48},
        tracking={"per_example": True, "every_steps": 3, "heldout": str(chaos / "chaosNLI_snli.jsonl")},
        method={"name": "lora", "preset": None},
        train={"epochs": 1},
    )
    for key in ("num_examples", "num_classes"):
        cfg["data"].pop(key)
    assert Run(from_dict(cfg)).execute(tmp_path / "chaos")["status"] == "ok"
    out = tmp_path / "out"
    assert main(["dynamics", str(tmp_path / "chaos"), "-o", str(out)]) == 0
    train, held = pd.read_csv(out / "examples.csv"), pd.read_csv(out / "heldout.csv")
    mnli, snli = load_chaosnli(chaos / "chaosNLI_mnli_m.jsonl"), load_chaosnli(chaos / "chaosNLI_snli.jsonl")
    assert len(held) == len(snli)
    np.testing.assert_allclose(held["entropy_nats"], snli["entropy_nats"].iloc[held["id"]])
    np.testing.assert_array_equal(train["uid"], mnli["uid"].iloc[train["id"]])
    dyn = load_dynamics(tmp_path / "chaos")
    np.testing.assert_allclose(held["aulc"], dyn.heldout().loss.mean(axis=0), rtol=1e-9)
    assert_png(out / "data_map.png")
    assert not (out / "temporal_separation.png").exists()  # no noise injected


def one_line_error(capsys, argv: list[str], match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and match in err, err


def test_bad_input_is_one_line(tmp_path, noisy_run, capsys):
    one_line_error(capsys, ["dynamics", str(tmp_path / "nope")], "no such run directory")
    (tmp_path / "empty").mkdir()
    one_line_error(capsys, ["dynamics", str(tmp_path / "empty")], "not a run directory")
    Run(from_dict(tiny_config(tmp_path, train={"epochs": 1}))).execute(tmp_path / "plain")
    one_line_error(capsys, ["dynamics", str(tmp_path / "plain")], "tracking.per_example")
    one_line_error(capsys, ["entropy", str(tmp_path / "nope")], "no such run directory")
    one_line_error(capsys, ["entropy", str(noisy_run)], "chaosnli")


def test_free_source_without_free_records(tmp_path, capsys):
    cfg = tiny_config(tmp_path, tracking={"per_example": True}, train={"epochs": 1})
    Run(from_dict(cfg)).execute(tmp_path / "ckpt")
    one_line_error(capsys, ["dynamics", str(tmp_path / "ckpt"), "--source", "free"], "--source")
