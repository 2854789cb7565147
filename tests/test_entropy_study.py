"""The entropy study in Steele's protocol: the pooled data (kss entropy-data), the accuracy gate, the verdicts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config
from test_entropy_analysis import fake_run, make_counts, write_chaosnli, write_validation

from kss_lora.cli import main
from kss_lora.config import from_dict
from kss_lora.dynamics.analysis import entropy_analysis, find_runs, load_run
from kss_lora.dynamics.entropy import BUCKETS, annotation_entropy, entropy_bucket, load_chaosnli
from kss_lora.dynamics.entropy_data import ROLE_FIELD, build_study_data, stratified_item_split
from kss_lora.errors import ConfigError, DataError
from kss_lora.runner import Run

GOLD = {"e": "entailment", "n": "neutral", "c": "contradiction"}


def item_counts(n: int) -> np.ndarray:
    """n items over all three buckets: clean, ambiguous and contested thirds, majority labels in turn."""
    rows = []
    for i in range(n):
        minority = (5, 15, 40)[i % 3]  # H = 0.23 / 0.51 / 0.85 nats (with the rest split 70/30)
        counts = [0, 0, 0]
        counts[(i // 3) % 3] = 100 - minority
        counts[((i // 3) + 1) % 3] = round(minority * 0.7)
        counts[((i // 3) + 2) % 3] = minority - round(minority * 0.7)
        rows.append(counts)
    return np.array(rows)


def write_items(path: Path, counts: np.ndarray) -> Path:
    lines = []
    for i, c in enumerate(counts):
        rec = {
            "uid": f"item{i}",
            "label_count": [int(v) for v in c],
            "majority_label": "enc"[int(np.argmax(c))],
            "entropy": float(annotation_entropy(c)) / math.log(2),
            "example": {"premise": f"premise of item {i}", "hypothesis": f"hyp {i}", "source": "snli"},
        }
        lines.append(json.dumps(rec))
    path.write_text("\n".join(lines) + "\n")
    return path


def snli_row(pair: str, gold: str, premise: str, hypothesis: str = "h") -> dict:
    votes = [gold] * 5 if gold != "-" else ["entailment", "neutral", "contradiction", "neutral", "entailment"]
    return {
        "gold_label": gold,
        "sentence1": premise,
        "sentence2": hypothesis,
        "annotator_labels": votes,
        "pairID": pair,
    }


def write_bulk(path: Path, n: int, extra: list[dict]) -> Path:
    """n ordinary rows (3 hypotheses per premise, labels in turn) plus the ``extra`` rows to be dropped."""
    labels = ("entailment", "neutral", "contradiction")
    rows = [snli_row(f"b{i}", labels[i % 3], f"bulk premise {i // 3}", f"bulk hyp {i}") for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in [*rows, *extra]))
    return path


@pytest.fixture
def study(tmp_path) -> tuple[Path, dict, pd.DataFrame]:
    items = write_items(tmp_path / "chaos.jsonl", item_counts(60))
    chaos = load_chaosnli(items)
    _, held = stratified_item_split(chaos["bucket"].tolist(), 0.2, seed=42)
    extra = [
        snli_row("item3", "neutral", "premise of item 3"),  # a ChaosNLI item itself
        snli_row("dash", "-", "some premise"),  # no gold label
        snli_row("b0", "entailment", "bulk premise 0"),  # a repeated pairID
        snli_row("leak", "neutral", f"premise of item {held[0]}"),  # a held-out item's premise
    ]
    bulk = write_bulk(tmp_path / "snli.jsonl", 90, extra)
    manifest = build_study_data(items, [bulk], tmp_path / "data", bulk_val=12)
    return tmp_path / "data", manifest, chaos


def test_item_split_is_stratified_disjoint_and_steeles():
    from sklearn.model_selection import StratifiedShuffleSplit

    buckets = list(entropy_bucket(annotation_entropy(item_counts(150))))
    kept, held = stratified_item_split(buckets, 0.2, seed=42)
    assert len(kept) == 120 and len(held) == 30
    assert np.intersect1d(kept, held).size == 0 and np.union1d(kept, held).tolist() == list(range(150))
    b = np.array(buckets)
    assert {k: int((b[held] == k).sum()) for k in BUCKETS} == {"clean": 10, "ambiguous": 10, "contested": 10}
    # Steele's call, in file order, with his seed
    codes = np.array([BUCKETS.index(x) for x in buckets])
    _, his = next(StratifiedShuffleSplit(n_splits=1, test_size=0.2, random_state=42).split(codes, codes))
    np.testing.assert_array_equal(held, np.sort(his))
    _, other = stratified_item_split(buckets, 0.2, seed=1)
    assert not np.array_equal(held, other)


def test_item_split_refuses_a_bucket_of_one():
    with pytest.raises(DataError, match="at least 2 items per entropy bucket"):
        stratified_item_split(["clean"] * 9 + ["contested"], 0.2, seed=0)


def test_study_data_pools_bulk_with_the_tracked_items(study):
    out, manifest, chaos = study
    train, held, val = (load_chaosnli(out / f) for f in ("train.jsonl", "heldout.jsonl", "validation.jsonl"))
    tracked = train[train["role"] == "tracked"]
    bulk = train[train["role"] == "bulk"]
    assert len(tracked) == 48 and len(held) == 12 and set(held["role"]) == {"heldout"}
    # the tracked and held-out parts partition the items, in file order, with the items' own labels
    assert sorted([*tracked["uid"], *held["uid"]], key=lambda u: int(u[4:])) == chaos["uid"].tolist()
    np.testing.assert_array_equal(tracked["entropy_nats"], chaos.set_index("uid").loc[tracked["uid"], "entropy_nats"])
    # bulk: no ChaosNLI uid, no '-', no repeated pairID, no held-out premise
    pool = pd.concat([bulk, val])
    assert not set(pool["uid"]) & set(chaos["uid"]) and {"dash", "leak"}.isdisjoint(pool["uid"])
    assert pool["uid"].is_unique
    assert manifest["bulk_dropped"] == {
        "chaosnli_item": 1,
        "no_gold_label": 1,
        "duplicate": 1,
        "shares_heldout_premise": 1,
    }
    # validation: whole premise groups (no premise trained on), 12 rows (4 premises of 3), balanced labels
    assert len(val) == 12 and set(val["role"]) == {"validation"}
    assert not set(val["premise"]) & set(train["premise"])
    assert manifest["rows"] == {"bulk": 78, "tracked": 48, "heldout": 12, "validation": 12}
    assert manifest["majority_rate"]["validation"] == pytest.approx(1 / 3)
    # bulk labels are the gold labels; their "entropy" is the 5 annotators' (0 here: unanimous)
    assert bulk["majority_label"].tolist() == [i % 3 for i in range(90) if f"b{i}" in set(bulk["uid"])]
    assert (bulk["entropy_nats"] == 0).all()
    lines = (out / "train.jsonl").read_text().splitlines()
    assert [json.loads(x)[ROLE_FIELD] for x in lines] == ["bulk"] * 78 + ["tracked"] * 48


def test_bulk_max_and_seed_are_recorded(tmp_path, study):
    out, _, _ = study
    m = build_study_data(
        out.parent / "chaos.jsonl", [out.parent / "snli.jsonl"], tmp_path / "d2", bulk_val=0, bulk_max=20
    )
    assert m["rows"]["bulk"] == 20 and m["train_rows"] == 68 and m["bulk_max"] == 20
    assert set(m["files"]) == {"train.jsonl", "heldout.jsonl"}  # bulk_val=0: no validation file
    assert not (tmp_path / "d2" / "validation.jsonl").exists()


def test_entropy_data_cli_and_its_bad_input(tmp_path, study, capsys):
    out, _, _ = study
    src = out.parent
    target = tmp_path / "cli"
    argv = ["entropy-data", "--chaosnli", str(src / "chaos.jsonl"), "--bulk", str(src / "snli.jsonl"), "-o"]
    assert main([*argv, str(target), "--bulk-val", "6"]) == 0
    assert "48 tracked items" in capsys.readouterr().out
    assert json.loads((target / "manifest.json").read_text())["rows"]["validation"] == 6
    for extra, field in ((["--heldout-fraction", "1.5"], "--heldout-fraction"), (["--bulk-val", "-1"], "--bulk-val")):
        assert main([*argv, str(tmp_path / "bad"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and field in err
    assert main([*argv, str(tmp_path / "bad"), "--bulk-val", "10000"]) == 2
    assert "--bulk-val" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    # Run again into its own folder: rewritten; into a folder of the user's files: refused, nothing touched.
    assert main([*argv, str(target), "--bulk-val", "0"]) == 0 and not (target / "validation.jsonl").exists()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "validation.jsonl").write_text("mine\n")
    assert main([*argv, str(theirs), "--bulk-val", "0"]) == 2
    assert "--out" in capsys.readouterr().err and (theirs / "validation.jsonl").read_text() == "mine\n"
    assert sorted(p.name for p in theirs.iterdir()) == ["validation.jsonl"]


# ------------------------------------------------------------------------------ gate and verdicts


@pytest.fixture(scope="module")
def gated_runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gate")
    counts = make_counts(240, np.random.default_rng(0))
    items = root / "items.jsonl"
    write_chaosnli(items, counts)
    val = write_validation(root / "validation.jsonl")
    runs = root / "runs"
    for seed in (1, 2, 3):
        for rank in (4, 16):
            fake_run(runs, f"lora{rank}-s{seed}", "lora", seed, counts, items, True, validation=val, rank=rank)
        fake_run(runs, f"full-s{seed}", "full-ft", seed, counts, items, False, validation=val)
    # at the majority-class rate (learned the prior only), and 9 points above it: neither counts
    fake_run(runs, "lora4-prior", "lora", 7, counts, items, True, validation=val, val_accuracy=1 / 3)
    fake_run(runs, "lora4-short", "lora", 8, counts, items, True, validation=val, val_accuracy=1 / 3 + 0.09)
    return runs


def test_gate_keeps_uninformative_runs_out(gated_runs):
    report = entropy_analysis([load_run(p) for p in find_runs([gated_runs])], n_boot=0)
    per_run = report.per_run.set_index(["run", "items"])
    assert per_run.loc[("lora4-prior", "train"), "majority_rate"] == pytest.approx(1 / 3)
    assert per_run.loc[("lora4-prior", "train"), "gate_margin"] == pytest.approx(0.0)
    assert not per_run.loc[("lora4-prior", "train"), "counts"]
    assert not per_run.loc[("lora4-short", "train"), "counts"]
    assert per_run.loc[("lora4-s1", "train"), "counts"]
    assert per_run.loc[("lora4-s1", "train"), "lora_rank"] == 4 and pd.isna(
        per_run.loc[("full-s1", "train"), "lora_rank"]
    )
    assert report.gate == {"split": "validation", "margin": 0.10, "runs": 11, "counted": 9}
    assert not {"lora4-prior", "lora4-short"} & set(report.items["run"])
    assert set(report.per_condition["runs"]) == {3}
    assert sum("does not count" in n for n in report.notes) == 2
    # a wider margin than any run reaches leaves nothing counted, and says so
    none = entropy_analysis([load_run(p) for p in find_runs([gated_runs])], n_boot=0, gate_margin=0.5)
    assert not none.per_run["counts"].any() and none.per_condition.empty and none.items.empty
    assert [v.verdict for v in none.verdicts] == ["not measured", "not measured"]


def test_verdicts_on_known_dynamics(gated_runs):
    report = entropy_analysis([load_run(p) for p in find_runs([gated_runs])], n_boot=0)
    rho, unlearn = report.verdicts
    by_arm = {c.treatment: c for c in rho.comparisons}
    # LoRA's AULC rises with entropy by construction (rho ~ 1 in every seed); full FT's does not depend on it
    assert by_arm["tiny-bert lora r=4"].verdict == "holds" and by_arm["tiny-bert lora r=16"].verdict == "holds"
    assert by_arm["tiny-bert full-ft"].verdict != "holds" and rho.verdict != "holds"
    assert by_arm["tiny-bert lora r=4"].n_treatment == 3
    # LoRA's contested items un-learn (Δℓ > 0) and full FT's do not: every part holds
    assert unlearn.verdict == "holds" and len(unlearn.comparisons) == 4
    assert all(c.verdict == "holds" for c in unlearn.comparisons)
    assert all(math.isfinite(c.p_adjusted) and c.p_adjusted >= c.p_value for c in unlearn.comparisons)


def test_entropy_cli_writes_gate_columns_and_claims(gated_runs, tmp_path):
    out = tmp_path / "report"
    assert main(["entropy", str(gated_runs), "-o", str(out), "--n-boot", "0"]) == 0
    per_run = pd.read_csv(out / "correlations_per_run.csv")
    assert list(per_run.columns[:18]) == [
        "run",
        "condition",
        "model",
        "method",
        "lora_rank",
        "seed",
        "items",
        "val_accuracy",
        "majority_rate",
        "test_accuracy",
        "test_majority_rate",
        "gate_split",
        "gate_margin",
        "counts",
        "n",
        "rho",
        "p",
        "partial_rho",
    ]
    assert per_run["counts"].sum() == 18  # 9 counted runs x 2 item sets
    from test_claims_csv import recompute

    assert recompute(out / "claims.csv", out / "runs.csv") == 7  # 3 conditions + 2 x 2 LoRA parts, from runs.csv
    runs = pd.read_csv(out / "runs.csv")
    assert (runs["status"] == "ok").sum() == 9 and len(runs) == 11
    claims = pd.read_csv(out / "claims.csv")
    assert set(claims["claim"]) == {"entropy_rho_positive", "lora_unlearns_contested"}
    assert set(claims["verdict"]) <= {"holds", "does not hold", "inconclusive", "too few runs", "not measured"}
    md = (out / "entropy.md").read_text()
    assert "9 of 11 runs count" in md and "### Verdicts" in md
    assert main(["entropy", str(gated_runs), "-o", str(tmp_path / "x"), "--gate-margin", "2"]) == 2


def test_two_seeds_are_too_few_runs(gated_runs):
    runs = [load_run(p) for p in find_runs([gated_runs]) if p.name.endswith(("s1", "s2"))]
    rho, unlearn = entropy_analysis(runs, n_boot=0).verdicts
    assert rho.verdict == "too few runs" and unlearn.verdict == "too few runs"


# ------------------------------------------------------------------------------ a real (tiny) run


def test_tiny_run_tracks_only_the_in_training_items(study, tmp_path):
    out, manifest, chaos = study
    cfg = tiny_config(
        tmp_path,
        data={
            "source": "chaosnli",
            "train": str(out / "train.jsonl"),
            "validation": str(out / "validation.jsonl"),
            "test": str(out / "heldout.jsonl"),
        },
        method={"name": "lora", "preset": None, "rank": 4},
        train={"epochs": 1, "class_weights": "balanced"},
        tracking={"per_example": True, "every_steps": 3, "heldout": str(out / "heldout.jsonl")},
    )
    for key in ("num_examples", "num_classes"):
        cfg["data"].pop(key)
    result = Run(from_dict(cfg)).execute(tmp_path / "run")
    assert result["status"] == "ok"
    run = load_run(tmp_path / "run")
    report = entropy_analysis([run], n_boot=0, gate_margin=-1.0)  # count it whatever it learned
    per_run = report.per_run.set_index("items")
    assert per_run.loc["train", "n"] == manifest["rows"]["tracked"] == 48  # the 78 bulk rows are not analysed
    assert per_run.loc["heldout", "n"] == 12
    assert per_run.loc["train", "majority_rate"] == pytest.approx(1 / 3)  # the 12 balanced SNLI rows
    assert per_run.loc["train", "test_majority_rate"] == pytest.approx(manifest["majority_rate"]["heldout"])
    assert per_run.loc["train", "val_accuracy"] == pytest.approx(result["val_accuracy"])
    tracked = report.items[report.items["items"] == "train"]
    assert set(tracked["uid"]) == set(chaos["uid"]) - set(load_chaosnli(out / "heldout.jsonl")["uid"])
    # T = step 0, steps 3 and 6, the epoch end (step 8 of 126 rows at batch 16)
    assert run.dynamics.ckpt_step.tolist() == [0, 3, 6, 8]


def test_train_role_records_the_tracked_rows_only_and_changes_nothing_else(study, tmp_path):
    """tracking.train_role=tracked: the every_steps checkpoints evaluate the 48 tracked rows, not all 126; the
    recorded logits, the metrics and the analysis are those of the run that records every row."""
    out, manifest, _ = study

    def run(name: str, **tracking: object):
        cfg = tiny_config(
            tmp_path / name,
            data={"source": "chaosnli", "train": str(out / "train.jsonl"), "validation": str(out / "validation.jsonl")},
            method={"name": "lora", "preset": None, "rank": 4},
            train={"epochs": 2, "class_weights": "balanced"},
            tracking={"per_example": True, "every_steps": 3, **tracking},
        )
        for key in ("num_examples", "num_classes"):
            cfg["data"].pop(key)
        result = Run(from_dict(cfg)).execute(tmp_path / name / "run")
        return result, load_run(tmp_path / name / "run")

    full_result, full = run("all")
    part_result, part = run("tracked", train_role="tracked")
    roles = load_chaosnli(out / "train.jsonl")["role"].to_numpy()
    tracked = np.flatnonzero(roles == "tracked")
    assert len(tracked) == manifest["rows"]["tracked"] == 48 and len(roles) == 126
    assert part.dynamics.arrays["ids"].tolist() == tracked.tolist()
    assert part.dynamics.ckpt_step.tolist() == full.dynamics.ckpt_step.tolist() == [0, 3, 6, 8, 9, 12, 15, 16]
    np.testing.assert_allclose(
        part.dynamics.arrays["ckpt_logits"], full.dynamics.arrays["ckpt_logits"][:, tracked], rtol=1e-5, atol=1e-6
    )
    assert part.dynamics.arrays["train_class_counts"].tolist() == np.bincount(full.dynamics.clean_labels).tolist()
    for key in ("train_loss", "val_loss", "val_accuracy"):
        assert part_result[key] == pytest.approx(full_result[key], rel=1e-6)
    a = entropy_analysis([full], n_boot=0, gate_margin=-1.0).items
    b = entropy_analysis([part], n_boot=0, gate_margin=-1.0).items
    cols = ["uid", "aulc", "loss_initial", "unlearning", "prior_loss"]
    pd.testing.assert_frame_equal(
        a[cols].sort_values("uid").reset_index(drop=True), b[cols].sort_values("uid").reset_index(drop=True)
    )


def test_train_role_refuses_what_it_cannot_honour(study, tmp_path):
    out, _, _ = study
    with pytest.raises(ConfigError, match="tracking.train_role"):
        from_dict(tiny_config(tmp_path, tracking={"per_example": True, "free": True, "train_role": "tracked"}))
    with pytest.raises(ConfigError, match="tracking.per_example"):
        from_dict(tiny_config(tmp_path, tracking={"train_role": "tracked"}))
    cfg = tiny_config(tmp_path, tracking={"per_example": True, "train_role": "tracked"})  # synthetic: no roles
    with pytest.raises(DataError, match="tracking.train_role: data.train has no kss_role field"):
        Run(from_dict(cfg)).execute(tmp_path / "run")
    assert not (tmp_path / "run").exists()
