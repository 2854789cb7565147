"""Bad input to the lab and analysis commands: one line naming the field and what is allowed, exit 2, nothing
written (issue 12 item 8: sweep workers, an output path that is a file, eval batch size, a baseline with no arm)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import tiny_config
from test_lab_report import fake_run
from test_lab_sweep import tiny_sweep

from kss_lora.cli import main
from kss_lora.errors import ConfigError
from kss_lora.lab.sweep import parse_sweep
from kss_lora.output_paths import check_output_dir, check_output_file, check_own_outputs


def one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def runs_dir(tmp_path: Path) -> Path:
    for arm in ("standard", "kss-default"):
        for seed in range(2):
            fake_run(
                tmp_path / "runs", arm=arm, preset=arm, method="kss", gamma=1.0, sparsity=0.1, seed=seed,
                noise=0.0, gap=0.2, val=1.2,
            )  # fmt: skip
    return tmp_path / "runs"


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("workers", ["two", 2.5, True, 0, -1, [2]])
def test_sweep_workers_must_be_a_whole_number(tmp_path, capsys, workers):
    with pytest.raises(ConfigError, match=r"^sweep.workers: must be a whole number of at least 1, got "):
        parse_sweep(tiny_sweep(tmp_path, workers=workers))
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(tiny_sweep(tmp_path, workers=workers)))
    assert main(["sweep", str(path)]) == 2
    one_line_error(capsys, "sweep.workers")
    assert not (tmp_path / "runs").exists()
    assert parse_sweep(tiny_sweep(tmp_path, workers=3)).workers == 3


def test_report_output_that_is_a_file_and_a_baseline_with_no_arm(tmp_path, capsys):
    runs = runs_dir(tmp_path)
    before = listing(runs)
    target = tmp_path / "report.html"
    target.write_text("mine")
    assert main(["report", str(runs), "-o", str(target)]) == 2
    one_line_error(capsys, "--output", "is a file")
    assert target.read_text() == "mine"
    assert main(["report", str(runs), "-o", str(target / "below")]) == 2
    one_line_error(capsys, "--output", "which is a file")
    assert main(["report", str(runs), "--baseline", "nosuch", "-o", str(tmp_path / "r")]) == 2
    one_line_error(capsys, "--baseline: no arm named 'nosuch' in these runs; arms: kss-default, standard")
    assert not (tmp_path / "r").exists() and listing(runs) == before
    # the arm named exists: a report, with that baseline
    assert main(["report", str(runs), "--baseline", "kss-default", "--no-claims", "-o", str(tmp_path / "r")]) == 0
    assert "Baseline arm: `kss-default`" in (tmp_path / "r" / "summary.md").read_text()


def test_aggregate_baseline_with_no_arm_lists_the_arms(tmp_path, capsys):
    runs = runs_dir(tmp_path)
    assert main(["aggregate", str(runs), "--baseline", "nosuch", "--csv", str(tmp_path / "t.csv")]) == 2
    one_line_error(capsys, "--baseline: no arm named 'nosuch'", "arms: kss-default, standard")
    assert not (tmp_path / "t.csv").exists()


@pytest.mark.parametrize("value", ["0", "-3"])
def test_eval_batch_size_must_be_positive(tmp_path, capsys, value):
    out = tmp_path / "tqa.json"
    assert main(["eval", "truthfulqa", "--model", "tiny-gpt", "--batch-size", value, "--out", str(out)]) == 2
    one_line_error(capsys, f"--batch-size: must be at least 1, got {value}")
    assert not out.exists()


def test_eval_out_that_is_a_directory(tmp_path, capsys):
    assert main(["eval", "truthfulqa", "--model", "tiny-gpt", "--out", str(tmp_path)]) == 2
    one_line_error(capsys, "--out", "is a directory; name a file")


def test_analysis_outputs_that_are_files(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("mine")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert main(["dynamics", str(run_dir), "-o", str(target)]) == 2
    one_line_error(capsys, "--out", "is a file")
    assert main(["entropy", str(run_dir), "-o", str(target)]) == 2
    one_line_error(capsys, "--out", "is a file")
    assert main(["optimal-rank", str(tmp_path), "-o", str(target)]) == 2
    one_line_error(capsys, "--out", "is a file")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tmp_path)))
    assert main(["detect", str(cfg), "-o", str(target)]) == 2
    one_line_error(capsys, "--out", "is a file")
    assert main(["precision", str(cfg), "--out", str(target)]) == 2
    one_line_error(capsys, "--out", "is a file")
    assert target.read_text() == "mine" and not (tmp_path / "runs").exists()


def test_output_path_checks_create_nothing(tmp_path):
    assert check_output_dir(tmp_path / "a" / "b", "-o") == tmp_path / "a" / "b"
    assert check_output_file(tmp_path / "a" / "f.json", "--out") == tmp_path / "a" / "f.json"
    assert list(tmp_path.iterdir()) == []


def test_optimal_rank_sweep_refuses_a_folder_of_the_users_tables(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "claims.csv").write_text("my claims\n")
    assert main(["optimal-rank", str(tmp_path), "--sweep", "s", "-o", str(out)]) == 2
    one_line_error(capsys, "--out", "did not write")
    assert (out / "claims.csv").read_text() == "my claims\n"


def test_entropy_refuses_a_folder_of_the_users_tables(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "runs.csv").write_text("my runs\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert main(["entropy", str(run_dir), "-o", str(out)]) == 2
    one_line_error(capsys, "--out", "did not write")
    assert (out / "runs.csv").read_text() == "my runs\n" and sorted(p.name for p in out.iterdir()) == ["runs.csv"]


def test_check_own_outputs_allows_a_folder_the_command_wrote(tmp_path):
    (tmp_path / "claims.csv").write_text("x\n")
    with pytest.raises(ConfigError, match="did not write"):
        check_own_outputs(tmp_path, ("claims.csv",), marker="cells.csv", field="-o")
    (tmp_path / "cells.csv").write_text("ours\n")
    check_own_outputs(tmp_path, ("claims.csv",), marker="cells.csv", field="-o")  # ours: rewritten
    check_own_outputs(tmp_path / "new", ("claims.csv",), marker="cells.csv", field="-o")  # nothing there
