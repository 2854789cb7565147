"""The detection pipeline on tiny-bert + synthetic data: every detector end to end, cross-fitting hygiene,
rank growing, `kss detect` outputs and one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import tiny_config

from kss_lora.cli import main
from kss_lora.config import from_dict
from kss_lora.detect import DETECTORS, detect_label_issues
from kss_lora.detect.options import majority_rate, runs_near_prior
from kss_lora.detect.training import configure, grow_rank, prepare

# A 2-class task tiny-bert learns in a few epochs without memorising the 20% flipped labels.
BLOCKS = {
    "data": {"num_examples": 200, "num_classes": 2, "synthetic_ambiguity": 0.0},
    "method": {"name": "lora", "preset": None, "rank": 8},
    "train": {"epochs": 6, "lr": 3e-2},
    "noise": {"rate": 0.2, "seed": 1},
    "output": {"save_adapter": False},
}


def cfg_dict(tmp_path: Path, **over: dict) -> dict:
    blocks = {k: dict(v) for k, v in BLOCKS.items()}
    for k, v in over.items():
        blocks.setdefault(k, {}).update(v)
    return tiny_config(tmp_path, **blocks)


@pytest.fixture(scope="module")
def detection(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("detect")
    cfg = from_dict(cfg_dict(tmp))
    return detect_label_issues(
        cfg,
        tmp / "runs",
        low_rank=1,
        high_rank=32,
        curriculum_ranks=(4,),
        curriculum_seed="ract-low",
        folds=2,
        checkpoints_per_epoch=1,
    )


def test_every_detector_scores_and_flags_every_example(detection):
    n = detection.ids.size
    assert list(detection.scores) == list(DETECTORS) == list(detection.flags)
    for d in DETECTORS:
        assert detection.scores[d].shape == (n,) and np.all(np.isfinite(detection.scores[d])), d
        assert detection.flags[d].dtype == bool and detection.flags[d].shape == (n,), d
    assert 0.0 < detection.rate_estimate < 1.0 and "cross-fitted" in detection.rate_source
    # flags of rate-based detectors have the estimated count; AUM and cleanlab decide their own
    m = int(round(detection.rate_estimate * n))
    assert all(detection.flags[d].sum() == m for d in ("ract", "small-loss", "forgetting"))


def test_detectors_recover_planted_noise_far_above_chance(detection):
    ev = detection.evaluation().set_index("detector")
    chance = detection.is_noisy.mean()  # expected F1 at k of a random ranking
    assert 0.1 < chance < 0.3
    for d in ("small-loss", "aulc", "cartography", "ract-low", "ract-curriculum", "forgetting", "aum"):
        assert ev.loc[d, "f1_at_k"] > 2.5 * chance, (d, ev.loc[d, "f1_at_k"])
        assert ev.loc[d, "auroc"] > 0.75, (d, ev.loc[d, "auroc"])
    # 2-fold cross-fitting on 100 tiny-bert examples per fold is weak, but it must beat chance
    assert ev.loc["confident-learning", "auroc"] > 0.55
    per_class = detection.evaluation_per_class()
    assert set(per_class["class"]) == {0, 1} and set(per_class["detector"]) == set(DETECTORS)


def test_cross_fitting_never_scores_an_example_with_a_model_that_saw_it(detection):
    all_ids = set(detection.ids.tolist())
    scored_all: list[int] = []
    assert len(detection.fold_train_ids) == len(detection.fold_scored_ids) == 2
    for trained_on, scored in zip(detection.fold_train_ids, detection.fold_scored_ids):
        assert not set(trained_on.tolist()) & set(scored.tolist())
        assert set(trained_on.tolist()) | set(scored.tolist()) == all_ids  # the complement, nothing else
        scored_all.extend(scored.tolist())
    assert sorted(scored_all) == sorted(all_ids)  # every example scored exactly once


def test_ranked_table(detection):
    table = detection.ranked("small-loss")
    assert list(table.columns) == [
        "rank",
        "id",
        "text",
        "given_label",
        "suggested_label",
        "score",
        "flagged",
        "is_noisy",
    ]
    assert table["flagged"].all() and table["score"].is_monotonic_decreasing
    assert len(table) == detection.flags["small-loss"].sum()


def test_grow_rank_preserves_the_adapter_function(tmp_path):
    small = prepare(configure(from_dict(cfg_dict(tmp_path, method={"rank": 2})), track=False))
    with torch.no_grad():  # a "trained" adapter: B is no longer zero
        for name, p in small.model.named_parameters():
            if "lora_B" in name or "classifier" in name:
                p.normal_(0, 0.3)
    big_cfg = configure(from_dict(cfg_dict(tmp_path)), rank=8, track=False)
    big = prepare(big_cfg, initial_adapter=small.model)  # the run starts from the small adapter, rank grown
    a, b = small.logits(small.train_batches), big.logits(big.train_batches)
    assert np.allclose(a, b, atol=1e-5)
    fresh = prepare(big_cfg)
    assert not np.allclose(a, fresh.logits(fresh.train_batches), atol=1e-5)
    assert grow_rank(fresh.model, small.model) > 0
    assert np.allclose(a, fresh.logits(fresh.train_batches), atol=1e-5)


def test_threshold_class_and_restrict(tmp_path):
    cfg = configure(from_dict(cfg_dict(tmp_path)))
    probe = prepare(cfg, extra_classes=1)
    assert probe.logits(probe.train_batches).shape[1] == probe.data.num_labels + 1
    clean = probe.task.clean_train_labels.copy()
    labels = clean.copy()
    labels[:5] = 2  # the fake class
    # relabelling outside the kept rows changes nothing
    run = prepare(cfg, extra_classes=1, train_index=np.arange(10, 60), train_labels=labels)
    assert len(run.train_batches) == 50 and np.array_equal(run.train_batches.ids, np.arange(10, 60))
    assert np.array_equal(run.task.is_noisy, run.train_batches.labels != clean[10:60])
    assert np.array_equal(run.full_train_batches.ids, probe.train_batches.ids)  # what a fold's model scores
    assert run.logits(run.train_batches).shape[1] == probe.data.num_labels + 1


def write_config(tmp_path: Path, cfg: dict) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_kss_detect_writes_ranked_csv_evaluation_and_retrain(tmp_path, capsys):
    cfg = write_config(tmp_path, cfg_dict(tmp_path))
    out = tmp_path / "out"
    code = main(["detect", cfg, "--detectors", "small-loss,aulc", "--rate", "0.2", "-o", str(out), "--retrain", "drop"])
    assert code == 0, capsys.readouterr().err
    ranked = pd.read_csv(out / "suspected_label_errors.csv")
    for col in ("id", "text", "given_label", "suggested_label", "score"):
        assert col in ranked.columns
    assert len(ranked) == 40 and ranked["score"].is_monotonic_decreasing  # 20% of 200, by --rate
    assert set(ranked["given_label"]) <= {"sports", "business"}
    scores = pd.read_csv(out / "scores.csv")
    assert {"score_small-loss", "flag_aulc", "is_noisy"} <= set(scores.columns) and len(scores) == 200
    ev = pd.read_csv(out / "evaluation.csv")
    assert ev["detector"].tolist() == ["small-loss", "aulc"]
    retrain = pd.read_csv(out / "retrain.csv")
    assert retrain["condition"].tolist() == ["ceiling (true labels)", "floor (noisy labels)", "drop-small-loss"]
    assert retrain["n_train"].tolist() == [200, 200, 160]
    assert (out / "summary.json").is_file()
    assert "rate estimate 0.200 (given)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--detectors", "small-loss,oracle"], "detectors: unknown 'oracle'"),
        (["--low-rank", "16", "--high-rank", "4"], "low-rank: must be below high-rank"),
        (["--folds", "1"], "folds: must be at least 2"),
        (["--rate", "1.5"], "rate: must be in [0, 1)"),
        (["--high-rank-lr", "0"], "high-rank-lr: must be a positive number"),
        (["--curriculum-ranks", "4,x"], "--curriculum-ranks: expected comma-separated integers"),
        (["method.name=full-ft"], "method.name: RACT compares LoRA ranks"),
    ],
)
def test_bad_input_is_a_one_line_error(tmp_path, capsys, args, message):
    cfg = write_config(tmp_path, cfg_dict(tmp_path))
    assert main(["detect", cfg, *args, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "out" / "runs").exists()  # nothing trained


def test_missing_config_is_a_one_line_error(tmp_path, capsys):
    assert main(["detect", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err.startswith("error: config: no such file")


def test_high_rank_lr_changes_the_high_rank_run_only_and_the_rate_reads_the_first_epoch_end(tmp_path):
    cfg = from_dict(cfg_dict(tmp_path, train={"epochs": 2}))
    result = detect_label_issues(
        cfg,
        tmp_path / "runs",
        detectors=("ract",),
        low_rank=1,
        high_rank=16,
        high_rank_lr=1e-3,
        checkpoints_per_epoch=1,
    )
    lrs = {
        name: yaml.safe_load((path / "config.yaml").read_text())["train"]["lr"] for name, path in result.runs.items()
    }
    assert lrs == {"rank-low": 3e-2, "rank-high": 1e-3}
    # no cross-fitting ran: the estimate is in-sample, from the low-rank model's first epoch end
    assert result.rate_source == "confident joint, in-sample (rank 1 model, first epoch end)"
    assert 0.0 < result.rate_estimate < 1.0
    # every run's health is recorded; a detector reading a run near the label prior would say so
    assert set(result.run_health) == {"rank-low", "rank-high"}
    for h in result.run_health.values():
        assert 0.4 <= h["val_majority_rate"] <= 0.6 and 0.0 <= h["val_accuracy"] <= 1.0 and h["val_n"] > 0
    expected = len(runs_near_prior(result.run_health, ["rank-low", "rank-high"]))
    assert result.evaluation().set_index("detector").loc["ract", "runs_near_prior"] == expected


def test_runs_near_the_label_prior_are_named():
    health = {
        "reference": {"val_accuracy": 0.82, "val_majority_rate": 0.25},
        "aum-0": {"val_accuracy": 0.297, "val_majority_rate": 0.25},  # collapsed (n2000-sym40 seed 0)
        "fold-0": {"val_accuracy": 0.34, "val_majority_rate": 0.25},  # just inside the margin
        "dual-noisy": {"val_accuracy": 0.19, "val_majority_rate": 0.25},  # trained on suspected labels: by design
    }
    names = ["reference", "aum-0", "fold-0", "dual-noisy", "absent"]
    assert runs_near_prior(health, names) == ["aum-0", "fold-0"]
    assert majority_rate(np.array([0, 1, 1, 2])) == 0.5


def test_in_sample_probabilities_are_taken_at_the_first_epoch_end():
    from types import SimpleNamespace

    from kss_lora.detect.pipeline import _in_sample_probs
    from kss_lora.dynamics.records import Dynamics

    logits = np.zeros((5, 3, 2), dtype=np.float32)  # checkpoints x examples x classes
    logits[2, :, 0] = 4.0  # step 20 = the end of epoch 1: class 0
    logits[4, :, 1] = 4.0  # the last checkpoint: class 1 (memorised)

    def trained(n_ckpt: int) -> SimpleNamespace:
        arrays = {"ckpt_logits": logits[:n_ckpt], "steps_per_epoch": np.array(20), "ckpt_step": np.arange(n_ckpt) * 10}
        return SimpleNamespace(dynamics=lambda: Dynamics(arrays))

    final, early = _in_sample_probs(trained(5))
    assert np.all(early.argmax(1) == 0) and np.all(final.argmax(1) == 1)
    assert np.allclose(early.sum(1), 1.0) and early[0, 0] > 0.98
    # a run cut short of an epoch: its last checkpoint
    final, early = _in_sample_probs(trained(2))
    assert np.array_equal(final, early)
