"""Annotation-entropy analysis on synthetic runs whose correlation and un-learning are known by design."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as sps

from kss_lora.cli import main
from kss_lora.dynamics.analysis import (
    PAPER_RHO_RANGE,
    correlate,
    entropy_analysis,
    entropy_markdown,
    find_runs,
    load_run,
)
from kss_lora.dynamics.entropy import annotation_entropy
from kss_lora.dynamics.records import DynamicsRecorder
from kss_lora.errors import DataError


def test_correlate_recovers_a_known_spearman():
    # Gaussian copula: Pearson r = 0.5 gives Spearman rho = (6/pi) asin(r/2) = 0.4826
    rng = np.random.default_rng(0)
    x, e = rng.normal(size=(2, 2000))
    y = 0.5 * x + math.sqrt(0.75) * e
    out = correlate(x, np.exp(y), rng.normal(size=(2000, 2)), n_boot=200)
    expected = 6 / math.pi * math.asin(0.25)
    assert abs(out["rho"] - expected) < 0.04
    assert out["ci_low"] < expected < out["ci_high"]
    assert abs(out["partial_rho"] - out["rho"]) < 0.03  # independent confounders change nothing


def test_partial_spearman_removes_a_confounder():
    rng = np.random.default_rng(1)
    length = rng.normal(size=2000)
    entropy = length + 0.5 * rng.normal(size=2000)
    aulc = length + 0.5 * rng.normal(size=2000)  # related to entropy only through length
    out = correlate(entropy, aulc, np.column_stack([length, rng.normal(size=2000)]), n_boot=200)
    assert out["rho"] > 0.6 and abs(out["partial_rho"]) < 0.06


# ------------------------------------------------------------------------------ synthetic runs


def write_chaosnli(path: Path, counts: np.ndarray) -> None:
    lines = []
    for i, c in enumerate(counts):
        rec = {
            "uid": f"u{i}",
            "label_count": [int(v) for v in c],
            "majority_label": "enc"[int(np.argmax(c))],
            "entropy": float(annotation_entropy(c)) / math.log(2),
            "example": {"premise": "w " * (5 + i % 7), "hypothesis": "h", "source": "snli"},
        }
        lines.append(json.dumps(rec))
    path.write_text("\n".join(lines) + "\n")


def make_counts(n: int, rng: np.random.Generator) -> np.ndarray:
    """Majority always label 0; the minority share sets the entropy (0 to contested)."""
    share = rng.uniform(0.0, 0.5, size=n)
    second = np.round(100 * share * 0.7).astype(int)
    third = np.round(100 * share * 0.3).astype(int)
    return np.column_stack([100 - second - third, second, third])


def write_validation(path: Path, n: int = 30) -> Path:
    """A balanced validation file (labels e, n, c in turn): majority-class rate 1/3."""
    write_chaosnli(path, np.array([[100 if k == i % 3 else 0 for k in range(3)] for i in range(n)]))
    return path


def fake_run(
    root: Path,
    name: str,
    method: str,
    seed: int,
    counts: np.ndarray,
    items: Path,
    unlearn: bool,
    *,
    val_accuracy: float = 0.6,
    validation: Path | None = None,
    rank: int = 4,
) -> Path:
    """A run directory with dynamics whose held-out losses rise with entropy (LoRA: contested items get
    *worse* over training) or all fall (full fine-tuning). Its validation accuracy (``val_accuracy``) is
    against a balanced validation file (majority-class rate 1/3): 0.6 passes the 10-point gate."""
    d = root / name
    d.mkdir(parents=True)
    h = annotation_entropy(counts)
    n, t = len(h), 6
    rng = np.random.default_rng(seed)
    # logit of the majority class (label 0); others at 0. Loss = ln(e^a + 2) - a decreases in a.
    progress = np.linspace(0, 1, t)[:, None]
    slope = 3.0 * (0.5 - h) if unlearn else np.full(n, 2.0)  # contested (h >= 0.7): loss rises
    a = progress * slope[None] * 2 + 0.05 * rng.normal(size=(t, n))
    logits = np.zeros((t, n, 3), np.float32)
    logits[..., 0] = a
    rec = DynamicsRecorder(
        labels=np.zeros(n, np.int64),
        ids=np.arange(n),
        clean_labels=np.zeros(n, np.int64),
        heldout_labels=np.zeros(n, np.int64),
        heldout_ids=np.arange(n),
        steps_per_epoch=2,
    )
    for step in range(t):
        rec.record_checkpoint(step, logits[step], logits[step])
    rec.save(d)
    validation = validation or write_validation(root / "validation.jsonl")
    cfg = {
        "model": {"name": "tiny-bert"},
        "data": {"source": "chaosnli", "train": str(items), "validation": str(validation)},
        "method": {"name": method, "rank": rank, "preset": None},
        "train": {"seed": seed},
        "tracking": {"per_example": True, "heldout": str(items)},
        "noise": {"rate": 0.0},
    }
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    (d / "result.json").write_text(json.dumps({"status": "ok", "val_accuracy": val_accuracy}))
    return d


@pytest.fixture(scope="module")
def synthetic_runs(tmp_path_factory) -> tuple[Path, np.ndarray]:
    root = tmp_path_factory.mktemp("entropy")
    counts = make_counts(240, np.random.default_rng(0))
    items = root / "items.jsonl"
    write_chaosnli(items, counts)
    for seed in (1, 2):
        fake_run(root / "runs", f"lora-s{seed}", "lora", seed, counts, items, unlearn=True)
        fake_run(root / "runs", f"full-s{seed}", "full-ft", seed, counts, items, unlearn=False)
    return root, annotation_entropy(counts)


def test_entropy_analysis_on_known_dynamics(synthetic_runs):
    root, h = synthetic_runs
    runs = [load_run(p) for p in find_runs([root / "runs"])]
    assert len(runs) == 4
    report = entropy_analysis(runs, n_boot=200)
    lora = report.per_run[(report.per_run["run"] == "lora-s1") & (report.per_run["items"] == "heldout")].iloc[0]
    # the rho the report gives is scipy's Spearman of the items' entropy and their AULC
    frame = report.items[(report.items["run"] == "lora-s1") & (report.items["items"] == "heldout")]
    assert lora["rho"] == pytest.approx(sps.spearmanr(frame["entropy"], frame["aulc"]).statistic)
    np.testing.assert_allclose(frame["entropy"], h)
    assert lora["rho"] > 0.9  # AULC rises monotonically with entropy by construction
    cond = report.per_condition.set_index(["condition", "items"])
    assert set(cond.index.get_level_values("items")) == {"heldout", "train"}
    assert (cond["runs"] == 2).all()
    delta = report.delta[report.delta["items"] == "heldout"].set_index(["condition", "bucket"])
    lora_cond = next(c for c in report.per_condition["condition"] if "lora" in c)
    full_cond = next(c for c in report.per_condition["condition"] if "full-ft" in c)
    assert delta.loc[(lora_cond, "contested"), "mean"] > 0 > delta.loc[(lora_cond, "clean"), "mean"]
    assert delta.loc[(full_cond, "contested"), "mean"] < 0
    cmp = report.lora_vs_full[report.lora_vs_full["items"] == "heldout"].iloc[0]
    assert cmp["n_contested"] == int((h >= 0.7).sum())
    assert cmp["diff"] > 0 and cmp["diff_ci_low"] > 0
    assert cmp["frac_unlearned_lora"] > 0.9 and cmp["frac_unlearned_full"] < 0.1
    # all items have majority label 0 ("e") here: one row per condition and item set
    assert set(report.by_label["majority_label"]) == {"e"} and len(report.by_label) == 4
    md = entropy_markdown(report)
    assert f"{PAPER_RHO_RANGE[0]}–{PAPER_RHO_RANGE[1]}" in md and "| lora-s1 |" in md


def test_entropy_cli_writes_report(synthetic_runs, tmp_path, capsys):
    root, _ = synthetic_runs
    out = tmp_path / "report"
    assert main(["entropy", str(root / "runs"), "-o", str(out), "--n-boot", "20"]) == 0
    for name in (
        "entropy.md",
        "correlations_per_run.csv",
        "correlations_per_condition.csv",
        "unlearning_by_bucket.csv",
        "lora_vs_full_contested.csv",
        "by_majority_label.csv",
        "entropy_vs_aulc_heldout.png",
        "unlearning_heldout.png",
        "loss_by_bucket_heldout.png",
    ):
        assert (out / name).is_file(), name
    assert (out / "entropy_vs_aulc_heldout.png").read_bytes()[:4] == b"\x89PNG"
    assert "paper 0.06-0.43" in capsys.readouterr().out


def test_missing_item_file_is_a_data_error(synthetic_runs, tmp_path):
    root, _ = synthetic_runs
    run = load_run(root / "runs" / "lora-s1")
    run.config["tracking"]["heldout"] = str(tmp_path / "gone.jsonl")
    with pytest.raises(DataError, match="not found"):
        entropy_analysis([run], n_boot=0)


def test_optimal_rank_per_noise_rate(tmp_path, capsys):
    from kss_lora.dynamics.analysis import optimal_rank

    # val_loss minimised at rank 16 without noise, rank 2 at 40% noise
    best = {0.0: 16, 0.4: 2}
    results = []
    for noise, r_best in best.items():
        for rank in (1, 2, 4, 16):
            for seed in (0, 1):
                loss = 1.0 + abs(math.log2(rank) - math.log2(r_best)) * 0.1 + 0.001 * seed
                results.append(
                    {
                        "status": "ok",
                        "method": "lora",
                        "rank": rank,
                        "noise_rate": noise,
                        "val_loss": loss,
                        "seed": seed,
                    }
                )
    results.append({"status": "failed", "method": "lora", "rank": 8, "noise_rate": 0.0, "val_loss": 0.1})
    cells, table = optimal_rank(results)
    assert dict(zip(table["noise_rate"], table["best_rank"], strict=True)) == best
    assert len(cells) == 8 and (cells["count"] == 2).all()
    runs = tmp_path / "runs"
    for i, r in enumerate(results):
        (runs / f"run-{i}").mkdir(parents=True)
        (runs / f"run-{i}" / "result.json").write_text(json.dumps(r))
    assert main(["optimal-rank", str(runs), "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "optimal_rank_best.csv").is_file()
    assert main(["optimal-rank", str(runs), "--metric", "nope"]) == 2
