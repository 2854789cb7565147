"""The run record's one owner: RunResult, RunDirectory (marker, umask, corrupt files), run ids, overrides."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import tiny_config

from kss_lora import run_result
from kss_lora.cli import main
from kss_lora.config import TrainConfig, apply_overrides, from_dict, load_config, parse_override, shipped_configs
from kss_lora.errors import ConfigError
from kss_lora.lab import registry, tracking
from kss_lora.lab.registry import format_runs, load_runs
from kss_lora.lab.sweep import expand, load_sweep, parse_sweep, point_state, run_sweep, shipped_sweeps
from kss_lora.run_result import RunResult
from kss_lora.rundir import MARKER_NAME, CorruptRecord, RunDirectory, atomic_write_json

# Run ids of every shipped run config, computed on main before the id scheme changed: they must not move
# (a sweep's "already done" check and every published run directory name depend on them).
SHIPPED_RUN_IDS = {
    "agnews": "8313d9a6c648",
    "agnews-detect": "b261480d32a7",
    "chaosnli-mnli-detect": "4034718318d3",
    "chaosnli-snli-detect": "28eb1b69ed55",
    "chaosnli-snli-pooled-detect": "6730e676478a",
    "chaosnli-mnli-pooled-detect": "b753e18c51b4",
    "entropy_minilm_fullft": "47cd4486ee0a",
    "entropy_minilm_lora": "f50dacb6dd38",
    "entropy_smollm2_lora": "55ec3471fc1b",
    # Steele's protocol (issue 15), shipped later; moved once by tracking.train_role before any run was published
    "entropy_snli_minilm_fullft": "2a2de97efe4b",
    "entropy_snli_minilm_lora16": "deada08faadc",
    "entropy_snli_minilm_lora4": "854c75821a94",
    "llama31_8b_truthfulqa_qa": "862bcd4591b3",
    "quickstart": "a32aa4baa0d3",
    "qwen25_7b_truthfulqa_qa": "7cbac2ab897f",
    "smollm2_agnews_instruct": "7e43961db829",
    "smollm2_truthfulqa_qa": "7e44d5ac8564",
}
# sha256 of the JSON {sweep name: [point run ids]} of every shipped sweep (402 points), computed on main
# before the id scheme changed.
SWEEP_IDS_DIGEST = "624d92ebeccbebe681adca2c9fd1377cc77d888a2a69b9dd9a5634e1ada4562e"
# Sweeps shipped later, pinned apart so that adding a sweep never touches the first digest: name -> (points, digest).
LATER_SWEEPS = {
    ("overfit_encoder_cpu", "overfit_encoder_gpu", "overfit_encoder_noise_cpu", "overfit_encoder_noise_gpu"): (
        160,
        "bf4fb2350d934de391e0b5f675113a59dcabc1f35245870f7eafc631f8212a1a",
    ),
    (
        "overfit_optimal_rank_cpu",
        "overfit_optimal_rank_gpu",
        "overfit_rank_cpu",
        "overfit_rank_gpu",
        "truthfulqa_sft_cpu",
        "truthfulqa_sft_gpu",
        "truthfulqa_sft_noise_cpu",
        "truthfulqa_sft_noise_gpu",
    ): (340, "fe50ceefdf642a8a6bd2eef9c209b57b1f5c997f48b59445c9fbf9a16ee9ca38"),
}


def test_every_shipped_config_keeps_its_run_id():
    ids = {name: load_config(str(path)).run_id() for name, path in shipped_configs().items()}
    assert ids == SHIPPED_RUN_IDS


def test_every_shipped_sweep_point_keeps_its_run_id(monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    ids = {name: [p.run_id for p in expand(load_sweep(str(path)))] for name, path in sorted(shipped_sweeps().items())}
    later = {name for group in LATER_SWEEPS for name in group}
    first = {k: v for k, v in ids.items() if k not in later}
    assert sum(len(v) for v in first.values()) == 402
    assert hashlib.sha256(json.dumps(first).encode()).hexdigest() == SWEEP_IDS_DIGEST
    for group, (points, digest) in LATER_SWEEPS.items():
        pinned = {name: ids[name] for name in group}
        assert sum(len(v) for v in pinned.values()) == points
        assert hashlib.sha256(json.dumps(pinned).encode()).hexdigest() == digest, group


def test_adding_a_defaulted_field_leaves_run_ids_unchanged():
    cfg = from_dict({"method": {"preset": "kss-default"}, "train": {"seed": 3}})
    # The same config, with a TrainConfig that has gained a new field at its default.
    grown = dataclasses.make_dataclass(
        "TrainConfig", [("new_knob", float, dataclasses.field(default=0.5))], bases=(TrainConfig,)
    )
    cfg_new = dataclasses.replace(cfg, train=grown(**dataclasses.asdict(cfg.train)))
    assert cfg_new.run_id() == cfg.run_id()
    cfg_set = dataclasses.replace(cfg, train=grown(**dataclasses.asdict(cfg.train), new_knob=0.7))
    assert cfg_set.run_id() != cfg.run_id()  # set away from its default, it changes what is computed
    # ...and fields that existed when ids were first published are hashed at their defaults too
    assert from_dict({"train": {"seed": 3, "lr": 5e-4}}).run_id() == from_dict({"train": {"seed": 3}}).run_id()
    assert from_dict({"train": {"seed": 3, "lr": 1e-3}}).run_id() != from_dict({"train": {"seed": 3}}).run_id()


def test_one_override_parser_for_runs_and_sweeps(tmp_path):
    assert parse_override(" train.epochs=2") == ("train.epochs", 2)
    assert parse_override("method.target_modules=[query, value]") == ("method.target_modules", ["query", "value"])
    # An empty value is null (back to the default) in `kss run` overrides and in sweeps alike.
    assert parse_override("method.gamma=") == ("method.gamma", None)
    assert parse_override("method.gamma=  ") == ("method.gamma", None)
    assert apply_overrides({"method": {"gamma": 2.0}}, ["method.gamma="]) == {"method": {"gamma": None}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"base": {"method": {"gamma": 2.0}}, "grid": {"train.seed": [0]}}))
    spec = load_sweep(str(path), overrides=["method.gamma="], grid=["noise.seed="])
    assert spec.base["method"]["gamma"] is None and spec.grid["noise.seed"] == [None]
    for bad in ("method.gamma", "=1"):
        with pytest.raises(ConfigError):
            parse_override(bad)


def test_run_result_round_trip_and_columns_from_the_declaration():
    r = RunResult(status="ok", run_id="abc", method="kss", train_loss=float("nan"), gap=0.1)
    r.update({"val_perplexity": 3.0, "a_future_metric": 7})
    d = r.to_dict()
    assert "distributed" not in d and "stage" not in d and d["a_future_metric"] == 7 and d["val_perplexity"] == 3.0
    back = RunResult.from_dict(json.loads(json.dumps({**d, "train_loss": "nan"})))
    assert np.isnan(back.train_loss) and back.extra == {"a_future_metric": 7} and back.gap == 0.1
    assert registry.RESULT_COLUMNS == run_result.columns()
    assert tracking.FINAL_KEYS == run_result.final_keys() and tracking.EPOCH_KEYS == run_result.epoch_keys()
    assert {"mask_mode", "noise_kind", "task", "n_test"} <= set(run_result.columns())
    assert r.summary("causal-lm")["val_perplexity"] == 3.0 and "val_accuracy" in r.summary("classification")
    for bad in ([], {"status": "done"}, {"status": "ok", "run_id": 5}):
        with pytest.raises(ValueError):
            RunResult.from_dict(bad)


# A result.json written before RunResult existed: no mask_mode, noise_kind, task, n_test; NaN as a string.
OLD_RESULT = {
    "status": "ok",
    "error": None,
    "run_id": "0123456789ab",
    "method": "kss",
    "preset": "kss-default",
    "condition": "kss-default",
    "rank": 8,
    "gamma": 1.0,
    "sparsity": 0.3,
    "seed": 0,
    "noise_rate": 0.0,
    "precision": "fp32",
    "model": "minilm",
    "lr": 0.0005,
    "n_train": 100,
    "n_val": 10,
    "train_loss": 0.5,
    "val_loss": 0.75,
    "gap": 0.25,
    "val_accuracy": "nan",
    "epochs": 3,
    "steps": 21,
    "wall_time_s": 12.0,
}


def test_a_run_directory_written_before_this_change_still_reads(tmp_path):
    old = tmp_path / "runs" / "kss-default-0123456789ab"
    old.mkdir(parents=True)
    (old / "result.json").write_text(json.dumps(OLD_RESULT))
    (old / "config.yaml").write_text("method: {name: kss, preset: kss-default, gamma: null}\n")
    (old / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 0.6}\n{"epoch": 2, "tr')  # cut by a kill
    run = RunDirectory(old)
    result = run.read_result()
    assert result.status == "ok" and result.mask_mode is None and result.gap == 0.25 and np.isnan(result.val_accuracy)
    assert run.read_metrics() == [{"epoch": 1, "train_loss": 0.6}] and run.is_run_directory()
    row = load_runs(tmp_path / "runs").iloc[0]
    assert row["status"] == "ok" and row["gap"] == 0.25 and row["arm"] == "kss-default"


def test_create_replaces_only_a_kss_run_directory(tmp_path, monkeypatch):
    thesis = tmp_path / "mine" / "thesis.tex"
    thesis.parent.mkdir()
    thesis.write_text("years of work")
    with pytest.raises(ConfigError, match="not a kss run"):
        RunDirectory(thesis.parent).create()
    assert thesis.read_text() == "years of work"
    with pytest.raises(ConfigError, match="is a file"):
        RunDirectory(thesis).create()
    monkeypatch.chdir(tmp_path / "mine")
    for here in (".", str(tmp_path)):  # the current directory and those above it, even if they look like runs
        with pytest.raises(ConfigError, match="current directory"):
            RunDirectory(here).create()
    assert thesis.read_text() == "years of work"
    # a new or an empty directory, a kss run directory (marker) and an older one (result + config) are fine
    fresh = RunDirectory(tmp_path / "new").create()
    (fresh.path / "stale.txt").write_text("from the last run")
    assert (fresh.path / MARKER_NAME).is_file()
    RunDirectory(fresh.path).create()
    assert not (fresh.path / "stale.txt").exists() and (fresh.path / MARKER_NAME).is_file()
    (tmp_path / "empty").mkdir()
    RunDirectory(tmp_path / "empty").create()
    old = tmp_path / "old"
    old.mkdir()
    (old / "result.json").write_text(json.dumps(OLD_RESULT))
    (old / "config.yaml").write_text("{}\n")
    RunDirectory(old).create()
    assert not (old / "result.json").exists()
    killed = tmp_path / "killed"  # an older version's run killed before its result: config + env
    killed.mkdir()
    (killed / "config.yaml").write_text("{}\n")
    (killed / "env.json").write_text(json.dumps({"python": "3.11.7", "packages": {"kss-lora": "0.1.0"}}))
    RunDirectory(killed).create()
    assert not (killed / "env.json").exists()
    users = tmp_path / "users"  # a user's own config.yaml + env.json / result.json: not kss's, never replaced
    users.mkdir()
    for name, text in (("config.yaml", "{}\n"), ("env.json", '{"name": "mine"}'), ("result.json", '{"score": 1}')):
        (users / name).write_text(text)
    with pytest.raises(ConfigError, match="not a kss run"):
        RunDirectory(users).create()
    assert (users / "env.json").read_text() == '{"name": "mine"}'
    lone = tmp_path / "lone"  # a config.yaml alone may be the user's
    lone.mkdir()
    (lone / "config.yaml").write_text("{}\n")
    with pytest.raises(ConfigError):
        RunDirectory(lone).create()


def test_kss_run_refuses_a_users_folder_and_dot(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tmp_path, train={"epochs": 1})))
    thesis = tmp_path / "mine" / "thesis.tex"
    thesis.parent.mkdir()
    thesis.write_text("years of work")
    assert main(["run", str(cfg), "--run-dir", str(thesis.parent)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a kss run" in err and "Traceback" not in err
    monkeypatch.chdir(thesis.parent)
    assert main(["run", str(cfg), "--run-dir", "."]) == 2
    assert "current directory" in capsys.readouterr().err
    assert main(["run", str(cfg), "--run-dir", "thesis.tex"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert sorted(p.name for p in thesis.parent.iterdir()) == ["thesis.tex"] and thesis.read_text() == "years of work"


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        run = RunDirectory(tmp_path / "run").create()
        run.write_result(RunResult(status="ok"))
        run.write_config("a: 1\n")
        run.write_arrays("noise.npz", {"x": np.arange(3)})
        atomic_write_json(tmp_path / "manifest.json", {"a": 1})
    finally:
        os.umask(old)
    for path in (run.file("result.json"), run.file("config.yaml"), run.file("noise.npz"), tmp_path / "manifest.json"):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


def test_corrupt_records_are_listed_never_a_traceback(tmp_path, capsys):
    runs = tmp_path / "runs"
    good = runs / "kss-default-aaaaaaaaaaaa"
    good.mkdir(parents=True)
    (good / "result.json").write_text(json.dumps({**OLD_RESULT, "run_id": "aaaaaaaaaaaa"}))
    (good / "config.yaml").write_text("{}\n")
    garbage = runs / "kss-default-bbbbbbbbbbbb"
    garbage.mkdir()
    (garbage / "result.json").write_bytes(b'{"status": "ok"\xff')  # one byte of garbage
    (garbage / "config.yaml").write_text("{}\n")
    bad_metrics = runs / "kss-default-cccccccccccc"
    bad_metrics.mkdir()
    (bad_metrics / "result.json").write_text(json.dumps({**OLD_RESULT, "run_id": "cccccccccccc"}))
    (bad_metrics / "metrics.jsonl").write_text('{"epoch": 1}\nnot json\n{"epoch": 2}\n')
    (runs / "sweeps").mkdir()
    (runs / "sweeps" / "broken.json").write_text("{not json")
    with pytest.raises(CorruptRecord):
        RunDirectory(garbage).read_result()
    assert point_state(garbage, "bbbbbbbbbbbb") == "corrupt"
    table = load_runs(runs).set_index("name")
    assert table.loc[garbage.name, "status"] == "corrupt" and "result.json" in table.loc[garbage.name, "error"]
    assert table.loc[bad_metrics.name, "status"] == "corrupt" and "line 2" in table.loc[bad_metrics.name, "error"]
    assert table.loc[good.name, "status"] == "ok"
    assert "3 runs: 1 ok, 0 failed, 0 unfinished, 2 corrupt" in format_runs(table.reset_index())
    assert main(["ls", str(runs)]) == 0
    captured = capsys.readouterr()
    assert "2 corrupt" in captured.out and "corrupt sweep manifest" in captured.err and "Traceback" not in captured.err
    assert main(["ls", str(runs), "--status", "corrupt"]) == 0
    capsys.readouterr()
    assert main(["ls", str(runs), "--sweep", "broken"]) == 2
    assert "unreadable manifests: broken.json" in capsys.readouterr().err
    assert main(["report", str(runs), "-o", str(tmp_path / "report")]) == 0
    assert "Traceback" not in capsys.readouterr().err and (tmp_path / "report" / "index.html").is_file()


def test_sweep_redoes_corrupt_runs_counts_unstarted_and_exits_1_while_runs_failed(tmp_path, capsys):
    base = tiny_config(tmp_path, train={"epochs": 1}, output={"save_adapter": False})
    sweep = {"name": "t", "base": base, "grid": {"train.seed": [0, 1]}, "runs_dir": str(tmp_path / "runs")}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(sweep))
    assert main(["sweep", str(path), "--no-progress", "--grid", "train.seed=[0]"]) == 0
    capsys.readouterr()
    # `kss ls --sweep` counts the point not started yet (seed 1), after the manifest names it
    spec = parse_sweep(sweep)
    points = expand(spec)
    from kss_lora.lab.sweep import write_manifest

    write_manifest(spec, points)
    assert main(["ls", str(tmp_path / "runs"), "--sweep", "t"]) == 0
    assert "1 runs: 1 ok, 0 failed, 0 unfinished, 0 corrupt; 1 not started yet" in capsys.readouterr().out
    done = tmp_path / "runs" / points[0].name
    (done / "result.json").write_text("garbage")
    summary = run_sweep(spec, progress=False)
    assert (summary.corrupt, summary.done, summary.skipped) == (1, 2, 0) and summary.ok
    assert RunDirectory(done).read_result().status == "ok"
    # a point that fails: the sweep exits 1, and a rerun that skips it still exits 1
    failing = {**sweep, "grid": {"model.name": ["tiny-bert", "no-such-model-xyz"]}}
    path.write_text(yaml.safe_dump(failing))
    assert main(["sweep", str(path), "--no-progress"]) == 1
    capsys.readouterr()
    assert main(["sweep", str(path), "--no-progress"]) == 1
    assert "failed in an earlier invocation" in capsys.readouterr().err


def test_config_yaml_holds_the_resolved_method(tmp_path):
    from kss_lora.runner import run

    cfg = from_dict(tiny_config(tmp_path, train={"epochs": 1, "max_steps": 1}, output={"save_adapter": False}))
    result = run(cfg, tmp_path / "r")
    written = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    method = written["method"]
    assert (method["name"], method["preset"]) == ("kss", "kss-default")
    assert method["gamma"] == result["gamma"] and method["sparsity"] == result["sparsity"] == 0.1
    assert method["dropout"] == 0.0 and None not in (method["gamma"], method["sparsity"], method["dropout"])
    assert from_dict(written).run_id() != "" and (tmp_path / "r" / MARKER_NAME).is_file()
    assert {"mask_mode", "noise_kind", "task"} <= set(result) and result["task"] == "classification"


def test_a_failed_preparation_is_recorded_by_the_runners_own_code(tmp_path):
    from kss_lora.methods import resolve_method
    from kss_lora.runner import new_result, record_prepare_failure

    cfg = from_dict(tiny_config(tmp_path, noise={"rate": 0.2, "kind": "symmetric"}))
    result = record_prepare_failure(cfg, tmp_path / "r", FileNotFoundError("no such file: train.csv"))
    assert (result["status"], result["stage"]) == ("failed", "prepare")
    assert result["error"] == "FileNotFoundError: no such file: train.csv"
    # the same fields as a run that trained, resolved the same way (mask_mode, noise_kind, task included)
    expected = new_result(cfg, resolve_method(cfg.method)).to_dict()
    assert {k: result[k] for k in expected if k not in ("status", "error")} == {
        k: v for k, v in expected.items() if k not in ("status", "error")
    }
    assert (result["mask_mode"], result["noise_kind"], result["task"], result["sparsity"]) == (
        "grad",
        "symmetric",
        "classification",
        0.1,
    )
    assert RunDirectory(tmp_path / "r").read_result().to_dict() == result
    assert (tmp_path / "r" / "error.log").is_file() and (tmp_path / "r" / MARKER_NAME).is_file()


def test_run_variants_are_checked_before_anything_loads():
    from kss_lora.variants import RunVariant

    RunVariant(train_index=np.arange(3), extra_classes=1).validate("classification")
    with pytest.raises(ConfigError, match="classification"):
        RunVariant(train_labels=np.zeros(3)).validate("causal-lm")
    with pytest.raises(ConfigError, match="checkpoints_per_epoch"):
        RunVariant(checkpoints_per_epoch=0).validate("classification")
    assert RunVariant(checkpoints_per_epoch=3).every_steps(n_train=100, batch_size=10) == 4  # 10 steps / 3
    assert RunVariant(checkpoints_per_epoch=1).every_steps(n_train=100, batch_size=10) is None


def test_run_id_ignores_fields_that_only_change_what_is_written():
    from kss_lora.config import load_config

    base = load_config("quickstart")
    for override in ("train.checkpoint_every=5", "train.log_every_steps=1", "tracking.stream=[tensorboard]"):
        assert load_config("quickstart", [override]).run_id() == base.run_id(), override
    assert load_config("quickstart", ["train.early_stopping_patience=2"]).run_id() != base.run_id()
