"""A run's saved config.yaml reruns from anywhere: its data paths are absolute, its run id is the original's;
the analyses (`kss eval --holdout`, dynamics) find a data file named by a relative path in older runs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from kss_lora.cli import main
from kss_lora.config import load_config, to_yaml
from kss_lora.dynamics.runs import load_run
from kss_lora.eval.cli import trained_rows
from kss_lora.recorded_paths import absolute_data_paths, find_recorded_path


def write_project(tmp_path: Path) -> Path:
    """proj/configs/cfg.yaml naming proj/configs/data/{train,test}.csv by paths relative to the config file."""
    folder = tmp_path / "proj" / "configs"
    (folder / "data").mkdir(parents=True)
    rows = [(f"{word} text {i}", word) for word in ("neg", "pos") for i in range(16)]
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(folder / "data" / "train.csv", index=False)
    pd.DataFrame(rows[::4], columns=["text", "label"]).to_csv(folder / "data" / "test.csv", index=False)
    cfg = {
        "model": {"name": "tiny-bert", "max_length": 16},
        "data": {"source": "file", "train": "data/train.csv", "test": "data/test.csv"},
        "method": {"name": "lora", "rank": 4},
        "train": {"seed": 0, "epochs": 1, "batch_size": 8, "lr": 5e-3, "progress": False, "threads": 1},
        "output": {"dir": str(tmp_path / "runs")},
    }
    (folder / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return folder / "cfg.yaml"


def test_rerunning_a_runs_config_reads_the_same_files_and_keeps_the_run_id(tmp_path, monkeypatch):
    config = write_project(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["run", str(config), "--run-dir", str(tmp_path / "first")]) == 0
    saved = yaml.safe_load((tmp_path / "first" / "config.yaml").read_text())
    data_folder = (config.parent / "data").resolve()
    assert saved["data"]["train"] == str(data_folder / "train.csv")
    assert saved["data"]["test"] == str(data_folder / "test.csv")
    first = json.loads((tmp_path / "first" / "result.json").read_text())
    # the run id is the original config's (paths as written), wherever it was run from
    monkeypatch.chdir(config.parent)
    assert first["run_id"] == load_config("cfg.yaml").run_id() == load_config(str(config)).run_id()
    # `kss run runs/X/config.yaml` from yet another folder trains on the same files, to the same numbers
    monkeypatch.chdir(elsewhere)
    assert main(["run", str(tmp_path / "first" / "config.yaml"), "--run-dir", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "result.json").read_text())
    assert again["status"] == "ok" and again["n_train"] == first["n_train"]
    for key in ("train_loss", "val_loss", "test_loss", "test_accuracy"):
        assert again[key] == pytest.approx(first[key], abs=1e-6), key


def test_absolute_data_paths_bases_working_directory_and_hub_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "local_ds").mkdir()
    data = {
        "data": {"source": "file", "train": "a.csv", "validation": "/abs/v.csv", "test": None},
        "tracking": {"heldout": "h.csv"},
    }
    keys = ("data.train", "data.validation", "data.test", "tracking.heldout")
    absolute_data_paths(data, {"data.train": tmp_path / "cfgs"}, keys)
    assert data["data"] == {"source": "file", "train": str(tmp_path / "cfgs" / "a.csv"), "validation": "/abs/v.csv", "test": None}  # fmt: skip
    assert data["tracking"]["heldout"] == str(tmp_path / "h.csv")
    hub = {"data": {"source": "hf", "train": "glue:train", "validation": "local_ds:validation"}}
    absolute_data_paths(hub, {}, keys)
    assert hub["data"]["train"] == "glue:train"  # a Hub id stays as written
    assert hub["data"]["validation"] == f"{tmp_path / 'local_ds'}:validation"


def test_to_yaml_writes_paths_absolute_but_the_config_keeps_them_as_written(tmp_path, monkeypatch):
    config = write_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(str(config))
    text = to_yaml(cfg)
    assert yaml.safe_load(text)["data"]["train"] == str((config.parent / "data" / "train.csv").resolve())
    assert cfg.data.train == "data/train.csv"


def fake_causal_run(run_dir: Path, train_file: str, rows: list[int]) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "tiny-gpt"}, "data": {"train": train_file}}))
    (run_dir / "splits.json").write_text(json.dumps({"train": rows, "validation": [], "test": []}))


def test_eval_holdout_finds_the_training_csv_of_old_and_new_runs(tmp_path, monkeypatch):
    project = tmp_path / "proj"
    (project / "data").mkdir(parents=True)
    csv = project / "data" / "tqa.csv"
    csv.write_text("Question\n")
    fake_causal_run(project / "runs" / "old", "data/tqa.csv", [1, 4])  # relative to the project root
    fake_causal_run(project / "runs" / "new", str(csv), [2])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # neither the project root nor the run directory
    assert trained_rows(str(project / "runs" / "old"), str(csv)) == {1, 4}
    assert trained_rows(str(project / "runs" / "new"), str(csv)) == {2}
    assert find_recorded_path(project / "runs" / "old", "data/nope.csv") is None
    with pytest.raises(Exception, match="trained on data/tqa.csv, not on"):
        trained_rows(str(project / "runs" / "old"), str(tmp_path / "other.csv"))


def test_dynamics_load_run_reads_through_the_run_directory(tmp_path):
    from kss_lora.errors import DataError

    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(DataError, match="not a readable config") as err:
        load_run(run_dir)
    assert "\n" not in str(err.value)
    (run_dir / "config.yaml").write_text("- a list\n")
    with pytest.raises(DataError, match="not a mapping of config blocks"):
        load_run(run_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a run directory \\(no config.yaml\\)"):
        load_run(tmp_path / "empty")


def test_dynamics_run_with_an_unreadable_result_reads_as_corrupt_and_is_skipped(tmp_path):
    import numpy as np
    from test_entropy_analysis import fake_run, make_counts, write_chaosnli

    from kss_lora.dynamics.analysis import entropy_analysis, find_runs

    counts = make_counts(40, np.random.default_rng(0))
    items = tmp_path / "items.jsonl"
    write_chaosnli(items, counts)
    good = fake_run(tmp_path / "runs", "lora-s1", "lora", 1, counts, items, unlearn=True)
    bad = fake_run(tmp_path / "runs", "lora-s2", "lora", 2, counts, items, unlearn=True)
    (bad / "result.json").write_bytes(b"\xff{garbage")
    runs = [load_run(p) for p in find_runs([tmp_path / "runs"])]
    assert runs[0].run_dir == good and runs[0].result["status"] == "ok"
    assert runs[1].result["status"] == "corrupt" and "not a readable run record" in runs[1].result["error"]
    report = entropy_analysis(runs, n_boot=50)
    assert "skipped lora-s2: status corrupt" in report.notes
    assert set(report.per_run["run"]) == {"lora-s1"}
