"""`kss report`: the page has the claims, config, matched-γ and noise tables and every figure; Chromium renders it.

The runs directory here is fabricated (result.json, metrics.jsonl, config.yaml written directly) so the test
is about the report, not about training, and takes a second or two.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from kss_lora.cli import main
from kss_lora.lab.report import write_report
from kss_lora.lab.sweep import condition_label

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def fake_run(
    runs_dir: Path,
    *,
    arm: str,
    preset: str | None,
    method: str,
    gamma: float,
    sparsity: float,
    seed: int,
    noise: float,
    gap: float,
    val: float,
    stratum: str = "",
    status: str = "ok",
    epochs: int = 3,
) -> dict:
    """Write a run directory as the runner would, with a plausible epoch curve ending at (train, val)."""
    run_id = f"{abs(hash((arm, seed, noise, stratum))) % 16**12:012x}"
    name = f"{arm.replace(' ', '-').replace('=', '')}_n{noise:g}_s{seed}-{run_id}"
    d = runs_dir / name
    d.mkdir(parents=True)
    train = val - gap
    result = {
        "status": status,
        "error": None if status == "ok" else "TrainingDiverged: loss became nan",
        "run_id": run_id,
        "method": method,
        "preset": preset,
        "condition": preset or method,
        "rank": 8,
        "gamma": gamma,
        "sparsity": sparsity,
        "mask_mode": "grad",
        "seed": seed,
        "noise_rate": noise,
        "noise_kind": "symmetric",
        "precision": "fp32",
        "model": "minilm",
        "lr": 5e-3,
        "n_train": 320,
        "n_val": 200,
        "epochs": epochs,
        "wall_time_s": 60.0,
    }
    if status == "ok":
        # under noise, the loss vs the noisy labels is higher than vs the clean ones
        result.update(
            train_loss=train + noise,
            train_loss_clean=train,
            val_loss=val,
            gap=gap - noise,
            gap_clean=gap,
            val_accuracy=0.8 - noise / 4,
            test_accuracy=0.8,
            train_accuracy=0.9,
        )
    (d / "result.json").write_text(json.dumps(result))
    cfg = {
        "model": {"name": "minilm", "max_length": 32},
        "data": {"source": "file", "train": "agnews/dev.tsv"},
        "method": {"name": method, "preset": preset, "rank": 8, "gamma": gamma},
        "precision": "fp32",
        "train": {"epochs": epochs, "batch_size": 32, "lr": 5e-3, "seed": seed},
        "noise": {"rate": noise},
    }
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    if status == "ok":
        with open(d / "metrics.jsonl", "w") as fh:
            for e in range(1, epochs + 1):
                f = e / epochs
                row = {
                    "epoch": e,
                    "train_loss": 1.4 - (1.4 - train) * f + noise,
                    "train_loss_clean": 1.4 - (1.4 - train) * f,
                    "val_loss": 1.4 - (1.4 - val) * f,
                    "gap": 0.0,
                    "gap_clean": 0.0,
                }
                fh.write(json.dumps(row) + "\n")
    return {"name": name, "run_id": run_id, "arm": arm, "stratum": stratum, "seed": seed, "params": {}}


def fake_runs_dir(root: Path, *, matched: bool = True, noise: bool = True, kss_gap: float = 0.05) -> Path:
    """standard vs kss presets (+ dense γ=1.0 / 1.5 controls) at 0% noise, and a small noise sweep."""
    rng = np.random.default_rng(0)
    runs_dir = root / "runs"
    points = []
    arms = [
        ("standard", "standard", "kss", 0.5, 0.0, 0.30),
        ("kss-default", "kss-default", "kss", 1.0, 0.1, kss_gap),
        ("kss-highgamma", "kss-highgamma", "kss", 1.5, 0.1, kss_gap + 0.01),
        ("kss-sparse", "kss-sparse", "kss", 1.0, 0.3, kss_gap),
        ("kss-verysparse", "kss-verysparse", "kss", 1.0, 0.5, kss_gap),
    ]
    if matched:  # dense LoRA at the KSS γs overfits like KSS here: the "γ effect" case
        arms += [
            ("dense γ=1.0", None, "lora", 1.0, 0.0, kss_gap),
            ("dense γ=1.5", None, "lora", 1.5, 0.0, kss_gap + 0.01),
        ]
    for arm, preset, method, gamma, rho, gap in arms:
        for seed in range(5):
            points.append(
                fake_run(
                    runs_dir,
                    arm=arm,
                    preset=preset,
                    method=method,
                    gamma=gamma,
                    sparsity=rho,
                    seed=seed,
                    noise=0.0,
                    gap=gap + rng.normal(0, 0.01),
                    val=1.2 + rng.normal(0, 0.01),
                )
            )
    if noise:
        for rate in (0.2, 0.5):
            for arm, preset, gamma, rho, gap in (
                ("standard", "standard", 0.5, 0.0, 0.25),
                ("kss-default", "kss-default", 1.0, 0.1, 0.04),
            ):
                for seed in range(5):
                    points.append(
                        fake_run(
                            runs_dir,
                            arm=arm,
                            preset=preset,
                            method="kss",
                            gamma=gamma,
                            sparsity=rho,
                            seed=seed,
                            noise=rate,
                            gap=gap + rng.normal(0, 0.01),
                            val=1.3,
                            stratum=f"noise={rate:g}",
                        )
                    )
    points.append(
        fake_run(
            runs_dir,
            arm="kss-sparse",
            preset="kss-sparse",
            method="kss",
            gamma=1.0,
            sparsity=0.3,
            seed=9,
            noise=0.0,
            gap=0.0,
            val=0.0,
            status="failed",
        )
    )
    for p in points:
        p["stratum"] = p["stratum"] or ("" if "_n0_" in p["name"] else p["stratum"])
    (runs_dir / "sweeps").mkdir()
    (runs_dir / "sweeps" / "fake.json").write_text(
        json.dumps({"name": "fake", "baseline": "standard", "points": points})
    )
    assert all(condition_label(p["arm"], p["stratum"]) for p in points)
    return runs_dir


def test_report_has_tables_figures_and_verdicts(tmp_path):
    runs_dir = fake_runs_dir(tmp_path)
    paths = write_report(runs_dir, tmp_path / "report")
    page = paths["html"].read_text()
    sections = ("your-results", "published-claims", "config-table", "matched-gamma-control", "noise-table")
    for section in (*sections, "all-conditions", "figures"):
        assert f"id='{section}'" in page, section
    for table in ("table-published-claims", "table-config-table", "table-noise-table", "table-matched-gamma-control"):
        assert f'id="{table}"' in page, table
    for fig in ("loss_curves", "run_tiles", "gap_vs_noise"):
        assert f"id='fig-{fig}'" in page and paths[fig].stat().st_size > 5000
    assert "gap_vs_rank" not in paths  # ranks do not vary here
    assert page.count("data:image/png;base64,") == 4  # self-contained (sparsity varies across presets)
    assert "<script" not in page
    # the caveat and its answer, in plain words
    assert "learning-rate" in page and "KSS does not beat dense LoRA at matched γ for every preset" in page
    # verdicts: big gap reduction vs standard holds in direction, not 33×; the control fails; some not measured
    md = paths["markdown"].read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if line.startswith("| ")}
    assert "does not hold" in rows["KSS default cuts the overfitting gap 33× vs dense LoRA (`standard`)"]
    # dense LoRA at the same γ overfits like KSS: "KSS smaller" is not shown (equal arms: inconclusive, not holds)
    control = rows[
        "(control) KSS beats dense LoRA at the *same* γ, so the gap reduction is the mask, not a γ/lr change"
    ]
    assert "| inconclusive |" in control or "| does not hold |" in control
    assert "| not measured |" in rows["TruthfulQA accuracy rises with kss-highgamma"]
    assert "holds" in rows["Every KSS run's gap is below every baseline run's (zero overlap)"]
    assert "![Loss per epoch, per condition](loss_curves.png)" in md
    assert "Failed and unfinished runs" in md and "TrainingDiverged" in md
    assert (tmp_path / "report" / "conditions.csv").read_text().startswith("condition,arm,stratum,n,")


def test_report_without_matched_control_says_so(tmp_path):
    runs_dir = fake_runs_dir(tmp_path, matched=False, noise=False)
    manifest = json.loads((runs_dir / "sweeps" / "fake.json").read_text())
    manifest["points"].append(
        {
            "name": "standard_s7-000000000000",
            "run_id": "000000000000",
            "arm": "standard",
            "stratum": "",
            "seed": 7,
            "params": {},
        }
    )  # a point the sweep never reached
    (runs_dir / "sweeps" / "fake.json").write_text(json.dumps(manifest))
    assert main(["report", str(runs_dir), "--sweep", "fake", "-o", str(tmp_path / "r")]) == 0
    page = (tmp_path / "r" / "index.html").read_text()
    assert "1 further points of the sweep were not run" in page
    assert "KSS-LoRA lab report: fake" in page
    assert "matched-γ control was not run here" in page
    assert "id='noise-table'" not in page and "fig-gap_vs_noise" not in page


def test_matched_text_uses_the_table_when_the_arms_are_not_presets():
    """A sparsity sweep (method kss, no preset) has its own dense arm at ρ = 0: the table is the control."""
    from kss_lora.lab.report import matched_text

    rows = [
        {"KSS arm": "kss ρ=0.3", "verdict": "KSS smaller"},
        {"KSS arm": "kss ρ=0.1", "verdict": "no significant difference"},
    ]
    text = matched_text([], rows)
    assert text.startswith("Dense LoRA at the same γ was run") and "1 of 2 KSS arms" in text and "(kss ρ=0.3)" in text
    assert "was not run here" in matched_text([], [{"KSS arm": "kss ρ=0.3", "verdict": "not measured here"}])


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is absent: apt-get install -y chromium")
def test_report_renders_in_headless_chromium(tmp_path):
    runs_dir = fake_runs_dir(tmp_path)
    paths = write_report(runs_dir, tmp_path / "report")
    shot = tmp_path / "shot.png"
    base = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    url = paths["html"].resolve().as_uri()
    subprocess.run(
        [*base, "--window-size=1280,4000", f"--screenshot={shot}", url], check=True, timeout=120, capture_output=True
    )
    assert shot.stat().st_size > 50_000  # tables and figures, not a blank page
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.std() > 20  # real content: text, coloured verdict cells, plots
    # the DOM after layout: every table and every figure image decoded with a real size
    dom = subprocess.run(
        [*base, "--dump-dom", "--virtual-time-budget=5000", url],
        check=True,
        timeout=120,
        capture_output=True,
        text=True,
    ).stdout
    assert len(re.findall(r"<table id=", dom)) >= 5
    assert dom.count("<img") == 4


def test_report_claims_csv_from_runs_csv_and_too_few_runs(tmp_path):
    """claims.csv recomputes from runs.csv; a report from that runs.csv gives the same verdicts; n < 3 has none."""
    import pandas as pd
    from test_claims_csv import recompute

    first = write_report(fake_runs_dir(tmp_path), tmp_path / "a")
    assert recompute(first["claims"], first["runs"]) >= 10
    again = write_report(first["runs"], tmp_path / "b")
    a, b = pd.read_csv(first["claims"]), pd.read_csv(again["claims"])
    pd.testing.assert_frame_equal(a, b)
    md = again["markdown"].read_text()
    # the user's own numbers lead; the published claims follow; units and no citation of files a user lacks
    assert md.index("## Your results") < md.index("## All conditions") < md.index("## Published claims")
    assert "test acc" in md and "val loss (nats)" in md and "docs/spec.md" not in md and "§" not in md
    assert md.count("Ratios are arm ÷ baseline") >= 1 and "baseline gap ÷ this gap" not in md
    runs = pd.read_csv(first["runs"])
    runs[runs["seed"] < 2].to_csv(tmp_path / "two.csv", index=False)
    two = write_report(tmp_path / "two.csv", tmp_path / "c")
    text = two["markdown"].read_text()
    assert "Fewer than 3 finished runs in: standard (n=2)" in text
    verdicts = pd.read_csv(two["claims"])
    assert "holds" not in set(verdicts["verdict"]) and "does not hold" not in set(verdicts["claim_verdict"])
    assert "too few runs" in set(verdicts["claim_verdict"])
    recompute(two["claims"], two["runs"])


def test_report_no_claims_and_bad_input(tmp_path, capsys):
    runs_dir = fake_runs_dir(tmp_path, matched=False, noise=False)
    assert main(["report", str(runs_dir), "--no-claims", "-o", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "summary.md").read_text()
    assert "## Your results" in md and "Published claims" not in md and "Config table" not in md
    assert not (tmp_path / "r" / "claims.csv").exists()
    assert main(["report", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "x")]) == 2
    assert "no such runs directory or runs.csv" in capsys.readouterr().err and not (tmp_path / "x").exists()
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    assert main(["report", str(tmp_path / "bad.csv"), "-o", str(tmp_path / "y")]) == 2
    assert "missing condition" in capsys.readouterr().err and not (tmp_path / "y").exists()


def test_report_counts_and_lists_corrupt_runs_and_reads_past_a_binary_config(tmp_path):
    """A corrupt run is counted in "What was run" and listed with its reason; a binary config.yaml in an ok run
    neither crashes the report nor drops the run."""
    runs_dir = tmp_path / "runs"
    for seed in range(3):
        info = fake_run(
            runs_dir, arm="standard", preset="standard", method="kss", gamma=0.5, sparsity=0.0, seed=seed,
            noise=0.0, gap=0.3, val=1.2,
        )  # fmt: skip
    (runs_dir / info["name"] / "config.yaml").write_bytes(b"\xff\xfe\x00not yaml")
    broken = runs_dir / "broken-0123456789ab"
    broken.mkdir()
    (broken / "result.json").write_bytes(b"\xff{garbage")
    paths = write_report(runs_dir, tmp_path / "rep", claims=False)
    md = paths["markdown"].read_text()
    assert "4 runs: 3 ok, 0 failed, 0 unfinished, 1 corrupt." in md
    failed = md[md.index("## Failed and unfinished runs") :]
    assert "corrupt (an unreadable result.json or metrics.jsonl" in failed
    assert "| broken-0123456789ab | corrupt |" in failed and "not a readable run record" in failed


def test_kss_ls_prints_missing_numbers_as_the_one_missing_mark(tmp_path, capsys):
    for status in ("ok", "failed"):
        fake_run(
            tmp_path / "runs", arm=f"a-{status}", preset=None, method="lora", gamma=1.0, sparsity=0.0, seed=0,
            noise=0.0, gap=0.25, val=1.2, status=status,
        )  # fmt: skip
    assert main(["ls", str(tmp_path / "runs")]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:-1]]
    by_status = {row[4]: row[5:8] for row in rows}
    assert by_status == {"ok": ["0.9500", "1.2000", "0.2500"], "failed": ["–", "–", "–"]}
