"""`kss sweep`: grid expansion, stable run ids, resume after a kill, failures recorded, local == sequential."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config

from kss_lora.cli import main
from kss_lora.errors import ConfigError
from kss_lora.lab import sweep as sweep_mod
from kss_lora.lab.registry import load_runs
from kss_lora.lab.sweep import expand, load_sweep, parse_sweep, point_status, run_sweep, shipped_sweeps


def tiny_sweep(tmp_path: Path, grid: dict | None = None, **extra) -> dict:
    base = tiny_config(tmp_path, train={"epochs": 1}, output={"save_adapter": False})
    return {
        "name": "t",
        "base": base,
        "grid": grid or {"method.preset": ["standard", "kss-default"], "train.seed": [0, 1]},
        "runs_dir": str(tmp_path / "runs"),
        **extra,
    }


def test_grid_expands_to_the_full_product_with_stable_ids(tmp_path):
    spec = parse_sweep(
        tiny_sweep(
            tmp_path,
            grid={"method.preset": ["standard", "kss-sparse"], "noise.rate": [0.0, 0.2], "train.seed": [0, 1, 2]},
        )
    )
    points = expand(spec)
    assert len(points) == 12
    assert len({p.run_id for p in points}) == 12
    again = expand(
        parse_sweep(
            tiny_sweep(
                tmp_path,
                grid={"method.preset": ["standard", "kss-sparse"], "noise.rate": [0.0, 0.2], "train.seed": [0, 1, 2]},
            )
        )
    )
    assert [p.run_id for p in points] == [p.run_id for p in again]  # stable across expansions
    p = points[0]
    assert p.name == f"standard_noise0_s0-{p.run_id}"
    assert (p.arm, p.stratum, p.seed) == ("standard", "noise=0", 0)
    assert p.condition == "standard | noise=0"
    # the run id is the runner's hash of the resolved config: output settings do not change it
    other = parse_sweep(
        {
            **tiny_sweep(tmp_path),
            "runs_dir": str(tmp_path / "elsewhere"),
            "grid": {"method.preset": ["standard"], "noise.rate": [0.0], "train.seed": [0]},
        }
    )
    assert expand(other)[0].run_id == p.run_id


def test_conditions_are_crossed_with_the_grid_and_named(tmp_path):
    data = tiny_sweep(tmp_path, grid={"train.seed": [0, 1]})
    data["conditions"] = [
        {"name": "dense γ=1.0", "method.name": "lora", "method.preset": None, "method.gamma": 1.0},
        {"method.preset": "kss-default"},
    ]
    points = expand(parse_sweep(data))
    assert [p.arm for p in points] == ["dense γ=1.0", "dense γ=1.0", "kss-default", "kss-default"]
    assert points[0].name.startswith("dense-gamma1.0_s0-")


def test_a_typo_anywhere_in_the_grid_fails_before_anything_runs(tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown config key"):
        expand(parse_sweep(tiny_sweep(tmp_path, grid={"method.presett": ["standard"]})))
    with pytest.raises(ConfigError, match=r"sweep point .*method.sparsity=1.5"):
        expand(parse_sweep(tiny_sweep(tmp_path, grid={"method.sparsity": [0.1, 1.5]})))
    with pytest.raises(ConfigError, match="unknown sweep key"):
        parse_sweep({**tiny_sweep(tmp_path), "gird": {}})
    with pytest.raises(ConfigError, match="looks like a run config"):
        parse_sweep({"model": {"name": "minilm"}, "base": "agnews"})
    with pytest.raises(ConfigError, match="sweep.tracking"):
        parse_sweep({**tiny_sweep(tmp_path), "tracking": ["neptune"]})
    with pytest.raises(ConfigError, match="sweep.executor"):
        parse_sweep({**tiny_sweep(tmp_path), "executor": "kubernetes"})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tiny_sweep(tmp_path, grid={"train.sed": [0, 1]})))
    assert main(["sweep", str(path)]) == 2
    assert "train.sed" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing created


def count_executions(monkeypatch) -> list[str]:
    """Record every run the sweep actually executes (sequential executor: same process)."""
    seen: list[str] = []
    real = sweep_mod.run_task

    def spy(task):
        seen.append(task.name)
        return real(task)

    monkeypatch.setattr(sweep_mod, "run_task", spy)
    return seen


def test_resume_skips_finished_runs_and_redoes_killed_ones(tmp_path, monkeypatch):
    spec = parse_sweep(tiny_sweep(tmp_path))
    seen = count_executions(monkeypatch)
    first = run_sweep(spec, progress=False)
    assert (first.total, first.done, first.skipped, len(seen)) == (4, 4, 0, 4)
    runs_dir = spec.runs_dir
    names = [p.name for p in expand(spec)]
    mtimes = {n: (runs_dir / n / "result.json").stat().st_mtime_ns for n in names}

    # Simulate a `kill -9` at two moments: before result.json existed, and mid-write of result.json.
    (runs_dir / names[1] / "result.json").unlink()
    text = (runs_dir / names[2] / "result.json").read_text()
    (runs_dir / names[2] / "result.json").write_text(text[: len(text) // 2])
    assert point_status(runs_dir / names[2], expand(spec)[2].run_id) == "unfinished"

    seen.clear()
    second = run_sweep(spec, progress=False)
    assert sorted(seen) == sorted([names[1], names[2]])
    assert (second.skipped, second.done) == (2, 2)
    for n in (names[0], names[3]):  # untouched
        assert (runs_dir / n / "result.json").stat().st_mtime_ns == mtimes[n]
    for n in (names[1], names[2]):  # redone from scratch: a complete, valid result
        assert json.loads((runs_dir / n / "result.json").read_text())["status"] == "ok"

    seen.clear()
    third = run_sweep(spec, progress=False)
    assert seen == [] and third.skipped == 4


def test_failed_points_are_recorded_and_do_not_stop_the_sweep(tmp_path, monkeypatch):
    data = tiny_sweep(tmp_path, grid={"train.lr": [5e-3, 1e30], "model.name": ["tiny-bert", "no-such-model-xyz"]})
    spec = parse_sweep(data)
    seen = count_executions(monkeypatch)
    summary = run_sweep(spec, progress=False)
    assert summary.total == 4 and len(seen) == 4
    runs = load_runs(spec.runs_dir).set_index("name")
    ok = runs[runs["status"] == "ok"]
    failed = runs[runs["status"] == "failed"]
    assert len(ok) == 1 and summary.done == 1 and summary.failed == 3
    assert all(isinstance(e, str) and e for e in failed["error"])
    missing = [n for n in failed.index if "no-such-model" in (tmp_path / "runs" / n / "config.yaml").read_text()]
    assert len(missing) == 2
    for n in missing:  # a point that could not even start still has a run directory saying why
        result = json.loads((tmp_path / "runs" / n / "result.json").read_text())
        assert result["stage"] == "prepare" and (tmp_path / "runs" / n / "error.log").is_file()
    # failed runs are finished: not retried unless asked
    seen.clear()
    assert run_sweep(spec, progress=False).skipped == 4 and seen == []
    run_sweep(spec, progress=False, retry_failed=True)
    assert len(seen) == 3


def test_shared_points_are_run_once_across_sweeps(tmp_path):
    a = parse_sweep(tiny_sweep(tmp_path, grid={"method.preset": ["standard"], "train.seed": [0]}))
    run_sweep(a, progress=False)
    b = parse_sweep(
        {
            **tiny_sweep(tmp_path, grid={"method.preset": ["standard"], "noise.rate": [0.0, 0.25], "train.seed": [0]}),
            "name": "b",
        }
    )
    summary = run_sweep(b, progress=False)
    assert (summary.skipped, summary.done) == (1, 1)  # the 0% point is a's run, whatever its label
    assert len(load_runs(b.runs_dir, sweep="b")) == 2
    assert len([d for d in b.runs_dir.iterdir() if d.name.startswith("standard")]) == 2


def test_local_executor_with_two_workers_matches_sequential(tmp_path):
    grid = {"method.preset": ["standard", "kss-default"], "train.seed": [1]}
    seq = parse_sweep({**tiny_sweep(tmp_path, grid=grid), "runs_dir": str(tmp_path / "seq")})
    loc = parse_sweep({**tiny_sweep(tmp_path, grid=grid), "runs_dir": str(tmp_path / "loc")})
    run_sweep(seq, progress=False)
    summary = run_sweep(loc, executor="local", workers=2, progress=False)
    assert summary.done == 2
    a = load_runs(seq.runs_dir).set_index("run_id")
    b = load_runs(loc.runs_dir).set_index("run_id")
    assert sorted(a.index) == sorted(b.index)
    for col in ("train_loss", "val_loss", "gap", "val_accuracy"):
        assert b.loc[a.index, col].tolist() == pytest.approx(a[col].tolist(), rel=1e-6, abs=1e-7)


def test_cli_sweep_dry_run_ls_and_overrides(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(tiny_sweep(tmp_path, grid={"train.seed": [0, 1]})))
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 runs" in out and out.count("unfinished") == 2
    assert main(["sweep", str(path), "train.epochs=1", "--grid", "train.seed=[0]"]) == 0
    captured = capsys.readouterr()
    assert "1 done" in captured.out
    # progress without a terminal: one line per run with done / failed / remaining
    assert "sweep: 1 runs, 0 already finished, 1 to run" in captured.err and "(failed 0, remaining 0)" in captured.err
    assert main(["ls", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "kss-default" in out and " ok " in out and "1 runs: 1 ok" in out
    assert main(["aggregate", str(tmp_path / "runs"), "--csv", str(tmp_path / "t.csv")]) == 0
    assert (tmp_path / "t.csv").read_text().startswith("condition,")


def test_shipped_sweeps_expand(monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    shipped = shipped_sweeps()
    for name in (
        "five_config_cpu",
        "noise_sweep_cpu",
        "matched_lr_cpu",
        "rank_sweep_cpu",
        "sparsity_sweep_cpu",
        "five_config_gpu",
        "noise_sweep_gpu",
    ):
        assert name in shipped, name
    sizes = {name: len(expand(load_sweep(name))) for name in shipped}
    assert sizes["five_config_cpu"] == 25 and sizes["noise_sweep_cpu"] == 50 and sizes["low_gamma_cpu"] == 10
    five, noise = expand(load_sweep("five_config_cpu")), expand(load_sweep("noise_sweep_cpu"))
    # the noise sweep's 0% points are the five-config benchmark's standard / kss-default runs
    assert len({p.run_id for p in five} & {p.run_id for p in noise}) == 10


@pytest.mark.slow  # a real `kill -9` of a sweep subprocess, then a resume: ~20-40 s on 2 cores
def test_kill_9_of_the_whole_sweep_then_resume(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "s.yaml"
    data = tiny_sweep(tmp_path, grid={"train.seed": [0, 1, 2, 3]})
    data["base"]["train"]["epochs"] = 3
    path.write_text(yaml.safe_dump({**data, "executor": "local", "workers": 1}))
    runs_dir = tmp_path / "runs"
    kss = str(Path(sys.executable).parent / "kss")
    proc = subprocess.Popen(
        [kss, "sweep", str(path), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    # wait until one run has finished and the next has started writing
    while time.time() < deadline and proc.poll() is None:
        dirs = [d for d in runs_dir.glob("*-*") if d.is_dir()] if runs_dir.is_dir() else []
        done = [d for d in dirs if (d / "result.json").exists()]
        if done and len(dirs) > len(done):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep ended before it could be killed"
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)
    for pid in workers:  # the pool's workers died with the sweep: no orphan keeps writing
        assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]
    spec = load_sweep(str(path))
    before = {p.name: point_status(runs_dir / p.name, p.run_id) for p in expand(spec)}
    assert "ok" in before.values() and "unfinished" in before.values()
    finished = {n: (runs_dir / n / "result.json").stat().st_mtime_ns for n, s in before.items() if s == "ok"}
    summary = run_sweep(spec, executor="sequential", progress=False)
    assert summary.skipped == len(finished) and summary.done == 4 - len(finished)
    assert all((runs_dir / n / "result.json").stat().st_mtime_ns == t for n, t in finished.items())
    assert set(load_runs(runs_dir)["status"]) == {"ok"}
