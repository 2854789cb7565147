"""Detection over training time (kss_lora.detect.curves), the dual-LoRA detector, costs and phase timings,
and ChaosNLI's human label errors: pure functions on hand-made arrays, then tiny-bert runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config

from kss_lora.config import from_dict
from kss_lora.detect import chaosnli_human_labels, detect_label_issues, evaluate_detection
from kss_lora.detect import scores as S
from kss_lora.detect.curves import detector_curves, epoch_axis, fitted_curves, prefix_scorers
from kss_lora.dynamics.metrics import per_example_from_logits
from kss_lora.dynamics.records import load_dynamics
from kss_lora.errors import DataError

# ---------------------------------------------------------------------------------------------- pure


def test_epoch_axis_marks_epoch_ends_and_the_last_checkpoint():
    epoch, end = epoch_axis([0, 5, 10, 15, 20, 23], 10)
    assert epoch.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.3]
    assert end.tolist() == [False, False, True, False, True, True]


def test_fitted_curves_are_the_share_of_noisy_and_clean_examples_predicted_as_given():
    truth = np.array([True, True, False, False, False])
    correct = np.array(
        [
            [False, False, True, False, False],  # step 0: no flip fitted, 1 of 3 clean
            [True, False, True, True, False],  # half the flips, 2 of 3 clean
            [True, True, True, True, True],  # everything memorised
        ]
    )
    rows = pd.DataFrame(fitted_curves(truth, {"rank-high": correct}, {"rank-high": [0, 4, 8]}, {"rank-high": 4}))
    noisy = rows[rows["what"] == "fitted_noisy"]["value"].tolist()
    clean = rows[rows["what"] == "fitted_clean"]["value"].tolist()
    assert noisy == [0.0, 0.5, 1.0]
    assert clean == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert rows["epoch"].tolist()[:3] == [0.0, 1.0, 2.0] and set(rows["of"]) == {"rank-high"}
    with pytest.raises(ValueError, match="rank-high"):
        fitted_curves(truth, {"rank-high": correct[:, :3]}, {"rank-high": [0, 4, 8]}, {"rank-high": 4})


def _trajectories(seed: int, t: int = 5, n: int = 60, k: int = 3):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(t, n, k))
    labels = rng.integers(0, k, size=n)
    return per_example_from_logits(logits, np.broadcast_to(labels, (t, n))), labels


def test_prefix_scorers_at_the_last_checkpoint_equal_the_pipeline_scores():
    ref, _ = _trajectories(0)
    lo, _ = _trajectories(1)
    hi, _ = _trajectories(2)
    kept = np.ones(60, dtype=bool)
    kept[:15] = False
    scorers = prefix_scorers(ref, lo, hi, [(ref, kept), (lo, ~kept)])
    last = ref.loss.shape[0] - 1
    np.testing.assert_allclose(scorers["small-loss"](last), ref.loss[-1])
    np.testing.assert_allclose(scorers["aulc"](last), S.aulc_scores(ref.loss))
    np.testing.assert_allclose(scorers["cartography"](last), S.cartography_scores(ref.prob[1:], ref.correct[1:]))
    np.testing.assert_allclose(scorers["forgetting"](last), S.forgetting_scores(ref.correct[1:]))
    d = S.rank_discrepancy_scores(lo.loss, hi.loss, reduce="mean")
    np.testing.assert_allclose(scorers["ract"](last), d)
    np.testing.assert_allclose(scorers["ract-neg"](last), -d)
    np.testing.assert_allclose(scorers["ract-final"](last), lo.loss[-1] - hi.loss[-1])
    aum = np.where(kept, S.aum_scores(ref.margin[1:]), S.aum_scores(lo.margin[1:]))
    np.testing.assert_allclose(scorers["aum"](last), aum)
    # an earlier prefix reads only its checkpoints
    np.testing.assert_allclose(scorers["aulc"](1), ref.loss[:2].mean(axis=0))


def test_detector_curves_score_each_checkpoint_and_both_signs_mirror():
    lo, _ = _trajectories(3)
    hi, _ = _trajectories(4)
    truth = np.zeros(60, dtype=bool)
    truth[::4] = True
    rows = pd.DataFrame(detector_curves(truth, prefix_scorers(low=lo, high=hi), [0, 2, 4, 6, 8], 4))
    au = rows[rows["what"] == "auroc"].pivot(index="checkpoint", columns="of", values="value")
    np.testing.assert_allclose(au["ract"] + au["ract-neg"], 1.0)
    expected = evaluate_detection(truth, lo.loss[2] - hi.loss[2])["auroc"]
    assert au.loc[2, "ract-final"] == pytest.approx(expected)
    assert rows["value"].between(0.0, 1.0).all()


# ---------------------------------------------------------------------------------------------- tiny-bert

BLOCKS = {
    "data": {"num_examples": 200, "num_classes": 2, "synthetic_ambiguity": 0.0},
    "method": {"name": "lora", "preset": None, "rank": 8},
    "train": {"epochs": 6, "lr": 3e-2},
    "noise": {"rate": 0.2, "seed": 1},
    "output": {"save_adapter": False},
}


def _cfg(tmp: Path, **over: dict):
    blocks = {k: dict(v) for k, v in BLOCKS.items()}
    for k, v in over.items():
        blocks.setdefault(k, {}).update(v)
    return from_dict(tiny_config(tmp, **blocks))


@pytest.fixture(scope="module")
def short(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("curves")
    return detect_label_issues(
        _cfg(tmp),
        tmp / "runs",
        detectors=["small-loss", "ract", "ract-neg", "dual-lora", "confident-learning"],
        low_rank=1,
        high_rank=32,
        folds=2,
        checkpoints_per_epoch=1,
    )


def test_dual_lora_ranks_planted_flips_far_above_chance(short):
    ev = short.evaluation().set_index("detector")
    chance = short.is_noisy.mean()
    assert ev.loc["dual-lora", "f1_at_k"] > 3 * chance and ev.loc["dual-lora", "auroc"] > 0.9
    # the noisy LoRA is the threshold: flagged exactly where the clean LoRA's loss exceeds the noisy one's
    assert np.array_equal(short.flags["dual-lora"], short.scores["dual-lora"] > 0)
    assert ev.loc["dual-lora", "precision_flags"] > 3 * chance
    assert {"dual-clean", "dual-noisy"} <= set(short.runs)
    # the clean LoRA never trained on what the warm-up suspected, the noisy LoRA only on that
    m = short.extras["dual_lora_suspected"]
    assert short.timings["dual-noisy"]["n_train"] == m and short.timings["dual-clean"]["n_train"] == 200 - m


def test_costs_count_the_runs_each_detector_reads(short):
    ev = short.evaluation().set_index("detector")
    assert ev.loc["small-loss", "cost_runs"] == 1 and ev.loc["small-loss", "cost_example_epochs"] == 200 * 6
    assert ev.loc["ract", "cost_runs"] == 2 == ev.loc["ract-neg", "cost_runs"]
    assert ev.loc["confident-learning", "cost_runs"] == 2  # 2 folds of 100 training examples each
    assert ev.loc["confident-learning", "cost_example_epochs"] == 200 * 6
    assert ev.loc["dual-lora", "cost_runs"] == 3 and ev.loc["dual-lora", "cost_example_epochs"] == 2 * 200 * 6
    for d in ev.index:
        assert ev.loc[d, "cost_total_s"] >= ev.loc[d, "cost_train_s"] > 0
    for name, t in short.timings.items():
        phases = t["prepare_s"] + t["train_steps_s"] + t["checkpoint_s"] + t["eval_s"] + t["other_s"]
        assert phases <= t["wall_s"] + 1e-6 and min(t.values()) >= 0, name
        assert t["train_steps_s"] > 0, name
    assert short.timings["reference"]["checkpoint_s"] > 0  # tracked: eval-mode passes over the training set
    assert short.timings["fold-0"]["checkpoint_s"] < short.timings["reference"]["checkpoint_s"]


def test_curves_match_the_recorded_dynamics(short):
    cur = pd.DataFrame(short.curves)
    assert cur["value"].between(0.0, 1.0).all()
    fit = cur[(cur["what"] == "fitted_noisy") & (cur["of"] == "reference")]
    dyn = load_dynamics(short.runs["reference"])
    correct = dyn.checkpoint().correct
    np.testing.assert_allclose(fit["value"].to_numpy(), correct[:, short.is_noisy].mean(axis=1))
    assert fit["step"].tolist() == dyn.ckpt_step.tolist() and fit["epoch"].iloc[-1] == 6.0
    # the last checkpoint's AUROC is the detector's own
    ev = short.evaluation().set_index("detector")
    for d in ("small-loss", "ract", "ract-neg"):
        au = cur[(cur["what"] == "auroc") & (cur["of"] == d)]["value"].iloc[-1]
        assert au == pytest.approx(ev.loc[d, "auroc"]), d
    assert not (cur["of"] == "dual-lora").any()  # no trajectory detector: no curve


def test_rank_discrepancy_inversion_fades_as_the_high_rank_memorises(tmp_path):
    """Before memorisation SPEC's `ract` ranks flips far below chance (its negation is the detector); as the
    high rank starts fitting flips the inversion fades. Tiny-bert, 200 examples, rank 1 vs 32, 20 epochs
    (measured: AUROC 0.04 at epoch 3-4, back to 0.42 by epoch 20; 0.86 at epoch 13-19 of a 60-epoch run)."""
    res = detect_label_issues(
        _cfg(tmp_path, train={"epochs": 20}),
        tmp_path / "runs",
        detectors=["ract", "ract-neg"],
        low_rank=1,
        high_rank=32,
        checkpoints_per_epoch=1,
        rate=0.2,
    )
    cur = pd.DataFrame(res.curves)
    au = cur[(cur["what"] == "auroc") & (cur["of"] == "ract")].set_index("epoch")["value"]
    neg = cur[(cur["what"] == "auroc") & (cur["of"] == "ract-neg")].set_index("epoch")["value"]
    early = au.loc[3.0:5.0].min()
    assert early < 0.15 and neg.loc[3.0:5.0].max() > 0.85  # inverted: the high rank is the surer classifier
    assert au.iloc[-1] > early + 0.25  # the inversion fades once flips get memorised
    fit = cur[cur["what"] == "fitted_noisy"].pivot(index="epoch", columns="of", values="value")
    high = fit["rank-high"]
    assert high.iloc[-1] > high.loc[2.0:].min() + 0.1  # first un-fits the flips, then memorises some back


# ---------------------------------------------------------------------------------------------- ChaosNLI

NLI = ["e", "n", "c"]


def _chaos_row(i: int, majority: str, old: str, counts: list[int]) -> dict:
    return {
        "uid": f"u{i}",
        "label_counter": dict(zip(NLI, counts)),
        "majority_label": majority,
        "label_dist": [c / 100 for c in counts],
        "label_count": counts,
        "entropy": 1.0,
        "example": {"uid": f"u{i}", "premise": f"premise {i} words", "hypothesis": f"hypothesis {i}", "source": "t"},
        "old_label": old,
        "old_labels": [],
    }


def _chaos_file(path: Path, rows: list[tuple[str, str, list[int]]]) -> Path:
    path.write_text("".join(json.dumps(_chaos_row(i, m, o, c)) + "\n" for i, (m, o, c) in enumerate(rows)))
    return path


def _chaos_cfg(tmp: Path, path: Path, **over: dict):
    blocks = {
        "data": {"source": "chaosnli", "train": str(path), "validation": str(path)},
        "method": {"name": "lora", "preset": None, "rank": 4},
        "train": {"epochs": 1, "lr": 1e-2, "batch_size": 4},
        "output": {"save_adapter": False},
    }
    for k, v in over.items():
        blocks.setdefault(k, {}).update(v)
    return from_dict(tiny_config(tmp, **blocks))


def test_chaosnli_truth_is_original_label_against_the_100_vote_majority(tmp_path):
    path = _chaos_file(
        tmp_path / "chaos.jsonl",
        [("n", "n", [30, 70, 0]), ("e", "c", [60, 10, 30]), ("c", "n", [10, 45, 45])],  # last: a tied majority
    )
    human = chaosnli_human_labels(_chaos_cfg(tmp_path, path))
    given, majority = human.given, human.true
    assert given.tolist() == [1, 2, 1] and majority.tolist() == [1, 0, 2]
    assert (given != majority).tolist() == [False, True, True]
    assert human.scored.tolist() == [True, True, True]  # ChaosNLI's own file: every item has 100 votes
    assert human.info == {"n": 3.0, "n_train": 3.0, "error_rate": pytest.approx(2 / 3), "tied_share": 0.5}
    with pytest.raises(Exception, match="data.source"):
        chaosnli_human_labels(_cfg(tmp_path))


def test_chaosnli_items_carry_the_entropy_bucket_of_their_100_votes(tmp_path):
    # 0 nats -> clean; 0.50 nats (80/20) -> ambiguous; 1.09 nats (40/30/30) -> contested (docs/spec.md §2)
    path = _chaos_file(
        tmp_path / "chaos.jsonl", [("e", "e", [100, 0, 0]), ("e", "n", [80, 20, 0]), ("e", "c", [40, 30, 30])]
    )
    human = chaosnli_human_labels(_chaos_cfg(tmp_path, path))
    assert human.bucket.tolist() == ["clean", "ambiguous", "contested"]


def test_detection_trains_on_the_given_labels_and_scores_against_the_true_ones(tmp_path):
    rows = [(NLI[i % 3], NLI[(i + (i % 4 == 0)) % 3], [40, 30, 30]) for i in range(12)]
    cfg = _chaos_cfg(tmp_path, _chaos_file(tmp_path / "chaos.jsonl", rows))
    human = chaosnli_human_labels(cfg)
    given, majority = human.given, human.true
    res = detect_label_issues(
        cfg, tmp_path / "runs", given_labels=given, true_labels=majority, detectors=["small-loss"], rate=0.25
    )
    assert np.array_equal(res.labels, given) and np.array_equal(res.is_noisy, given != majority)
    assert res.is_noisy.sum() == 3
    # the run itself trained on the original labels (its recorded labels), not the config's majority
    assert np.array_equal(load_dynamics(res.runs["reference"]).labels, given)
    ev = res.evaluation()
    assert ev["n_noisy"].iloc[0] == 3 and res.flags["small-loss"].sum() == 3
    with pytest.raises(DataError, match="given_labels"):
        detect_label_issues(cfg, tmp_path / "bad", given_labels=given[:5], detectors=["small-loss"])


def test_pooled_bulk_rows_are_trained_on_but_only_the_chaosnli_items_are_scored(tmp_path):
    # A file as `kss entropy-data` writes it: bulk rows (gold label, no 100-vote truth) then tracked items.
    rows = [(NLI[i % 3], NLI[(i + (i % 4 == 0)) % 3], [40, 30, 30]) for i in range(16)]
    path = _chaos_file(tmp_path / "pooled.jsonl", rows)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for i, rec in enumerate(lines):
        rec["kss_role"] = "bulk" if i < 8 else "tracked"
        if i < 8:  # a bulk row's old label is its gold label; make some disagree with the file's majority
            rec["old_label"] = NLI[(NLI.index(rec["majority_label"]) + (i % 2)) % 3]
    path.write_text("".join(json.dumps(rec) + "\n" for rec in lines))
    human = chaosnli_human_labels(_chaos_cfg(tmp_path, path))
    assert human.scored.tolist() == [False] * 8 + [True] * 8
    # bulk rows: trained on their own label and counted right (true = given), so no phantom errors
    assert np.array_equal(human.true[:8], human.given[:8])
    items_wrong = [(i % 4 == 0) for i in range(8, 16)]
    assert (human.given != human.true)[8:].tolist() == items_wrong
    assert human.info["n"] == 8.0 and human.info["n_train"] == 16.0
    assert human.info["error_rate"] == pytest.approx(sum(items_wrong) / 8)

    res = detect_label_issues(
        _chaos_cfg(tmp_path, path), tmp_path / "runs", detectors=["small-loss"], rate=0.25, **human.detect_kwargs()
    )
    assert res.scores["small-loss"].size == 16  # every row is scored ...
    ev = res.evaluation().iloc[0]
    assert ev["n"] == 8 and ev["n_noisy"] == sum(items_wrong)  # ... but judged on the items only
    assert res.noise_rate_true == pytest.approx(sum(items_wrong) / 8)
    s, truth = res.scores["small-loss"][8:], np.array(items_wrong)
    assert ev["auroc"] == pytest.approx(evaluate_detection(truth, s)["auroc"])
    # every item here has votes [40, 30, 30] (1.09 nats): one bucket, judged as a whole; bulk rows in none
    assert human.bucket.tolist() == ["bulk"] * 8 + ["contested"] * 8
    by_bucket = res.evaluation_per_group(human.bucket, column="bucket")
    assert by_bucket["bucket"].tolist() == ["contested"] and by_bucket["n"].tolist() == [8]
    assert by_bucket["auroc"].iloc[0] == pytest.approx(ev["auroc"])
    with pytest.raises(DataError, match="bucket: 8 values for 16 rows"):
        res.evaluation_per_group(human.bucket[8:], column="bucket")  # groups must cover every row, not the scored
    # the one-run detectors rebuilt from the reference run's trajectories equal the pipeline's scores
    traj = load_dynamics(res.runs["reference"]).checkpoint()
    rebuilt = S.single_run_scores(traj.loss, traj.prob, traj.correct, detectors=["small-loss"])
    np.testing.assert_array_equal(rebuilt["small-loss"], res.scores["small-loss"])
    table = res.ranked(flagged_only=False)
    bulk_ids = set(res.ids[:8].tolist())
    assert table.loc[table["id"].isin(bulk_ids), "is_noisy"].isna().all()
    assert table.loc[~table["id"].isin(bulk_ids), "is_noisy"].notna().all()
    with pytest.raises(DataError, match="scored"):
        detect_label_issues(
            _chaos_cfg(tmp_path, path), tmp_path / "bad", detectors=["small-loss"],
            given_labels=human.given, true_labels=human.true, scored=human.scored.astype(int),
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------- benchmark


def test_benchmark_aggregate_writes_per_epoch_and_timing_tables(tmp_path, monkeypatch):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "run_detection_experiment.py"
    spec = importlib.util.spec_from_file_location("run_detection_experiment", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "run_detection_experiment", bench)  # dataclasses look their module up
    monkeypatch.syspath_prepend(str(path.parent))  # its sibling detection_per_bucket.py, as when run as a script
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "OUT", tmp_path)
    monkeypatch.setattr(bench, "RAW", tmp_path / "raw")
    (tmp_path / "raw").mkdir()
    curve = [
        {"what": "auroc", "of": "ract", "checkpoint": t, "step": 10 * t, "epoch": t, "epoch_end": t > 0, "value": v}
        for t, v in enumerate([0.5, 0.2, 0.6])
    ] + [
        {
            "what": "fitted_noisy",
            "of": "rank-high",
            "checkpoint": 2,
            "step": 20,
            "epoch": 2,
            "epoch_end": True,
            "value": 0.4,
        }
    ]
    timing = {"prepare_s": 1, "train_steps_s": 10, "checkpoint_s": 5, "eval_s": 2, "other_s": 0, "wall_s": 18}
    raw = {
        "job": "ract-regime-s0", "setting": "ract-regime", "seed": 0, "rate_estimate": 0.2, "noise_rate_true": 0.2,
        "evaluation": [{"detector": "ract", "f1_at_k": 0.5, "f1_flags": 0.5, "precision_flags": 0.5,
                        "recall_flags": 0.5, "auroc": 0.6, "auprc": 0.4, "cost_runs": 2.0,
                        "cost_example_epochs": 600.0, "cost_total_s": 36.0}],
        "per_class": [{"detector": "ract", "class": c, "n_noisy": 1, "f1_at_k": 0.5} for c in range(4)],
        "runs": {"reference": {"val_accuracy": 0.8}, "rank-low": {"val_accuracy": 0.3}},  # rank-low collapsed
        "detect_options": {"low_rank": 1, "high_rank": 16},
        "curves": curve, "timings": {"reference": timing, "rank-low": {**timing, "wall_s": 17}},
        "wall_s": 40.0, "detect_wall_s": 39.0,
    }  # fmt: skip
    (tmp_path / "raw" / "ract-regime-s0.json").write_text(json.dumps(raw))
    human = {
        **raw, "job": "chaosnli-snli-pooled-s0", "setting": "chaosnli-snli-pooled", "curves": [], "timings": {},
        "per_bucket": [{"detector": "small-loss", "bucket": b, "n": n, "n_noisy": k, "auroc": a}
                       for b, n, k, a in [("contested", 20, 8, 0.45), ("clean", 30, 3, 0.71)]],
    }  # fmt: skip
    (tmp_path / "raw" / "chaosnli-snli-pooled-s0.json").write_text(json.dumps(human))
    assert bench.aggregate(None) == 0
    # ract reads rank-low, within 0.10 of the 1/K = 0.25 prior (a job from before run_health was recorded)
    assert pd.read_csv(tmp_path / "detection.csv")["runs_near_prior"].tolist() == [1, 1]
    per_bucket = pd.read_csv(tmp_path / "detection_per_bucket.csv")
    assert per_bucket[["setting", "bucket", "auroc"]].values.tolist() == [
        ["chaosnli-snli-pooled", "contested", 0.45],
        ["chaosnli-snli-pooled", "clean", 0.71],
    ]
    per_epoch = pd.read_csv(tmp_path / "per_epoch.csv")
    assert len(per_epoch) == 4 and set(per_epoch["setting"]) == {"ract-regime"}
    timings = pd.read_csv(tmp_path / "timings.csv")
    assert timings["train_steps_s"].sum() == 20
    table = (tmp_path / "table.md").read_text()
    assert "| 2 | 0.600 | 0.400 |" in table  # epoch 2: ract's AUROC, rank-high's fitted share
    assert "| ract-regime | 2 | 2 | 20 | 10 | 4 | 0 | 35 | 39 |" in table
    assert "| ract | 0.500 |" in table and "| 2 | 600 | 36 |" in table
    assert "| detector | clean (3 of 30 wrong) | contested (8 of 20 wrong) |" in table
    assert "| small-loss | 0.710 | 0.450 |" in table
