"""The executors behind extras, in their one-machine modes: a local Ray instance and submitit's local executor.

The executor contract is tested on a cheap function first (no training), then one real sweep per executor.
"""

from __future__ import annotations

import pytest
from conftest import tiny_config

from kss_lora.errors import ConfigError
from kss_lora.lab.executors import default_workers, map_unordered
from kss_lora.lab.registry import load_runs
from kss_lora.lab.sweep import parse_sweep, run_sweep


def square(x: int) -> int:
    if x < 0:
        raise RuntimeError("worker died")
    return x * x


def test_sequential_and_local_contract():
    assert sorted(r for _, r in map_unordered(square, [1, 2, 3])) == [1, 4, 9]
    out = dict(map_unordered(square, [1, 2, 3, -1], executor="local", workers=2))
    assert {k: v for k, v in out.items() if k > 0} == {1: 1, 2: 4, 3: 9}
    assert isinstance(out[-1], RuntimeError)  # reported, not raised: the sweep marks the run lost
    assert list(map_unordered(square, [], executor="local")) == []
    assert default_workers() >= 1
    with pytest.raises(ConfigError):
        list(map_unordered(square, [1], executor="kubernetes"))


def one_point_sweep(tmp_path, name: str, **extra) -> dict:
    base = tiny_config(tmp_path, train={"epochs": 1}, output={"save_adapter": False})
    return {"name": name, "base": base, "grid": {"train.seed": [0, 1]}, "runs_dir": str(tmp_path / name), **extra}


def test_ray_executor_local_instance(tmp_path):
    ray = pytest.importorskip("ray")
    assert dict(map_unordered(square, [2, 3], executor="ray", workers=2)) == {2: 4, 3: 9}
    assert not ray.is_initialized()  # we started it, we shut it down
    spec = parse_sweep(one_point_sweep(tmp_path, "ray", executor="ray", workers=2))
    summary = run_sweep(spec, progress=False)
    assert summary.done == 2
    runs = load_runs(spec.runs_dir)
    assert list(runs["status"]) == ["ok", "ok"]


def test_slurm_executor_via_submitit_local(tmp_path):
    pytest.importorskip("submitit")
    opts = {"cluster": "local", "timeout_min": 10, "poll_s": 0.5, "folder": str(tmp_path / "submitit")}
    assert dict(map_unordered(square, [2, 3], executor="slurm", workers=2, options=opts)) == {2: 4, 3: 9}
    spec = parse_sweep(one_point_sweep(tmp_path, "slurm", executor="slurm", workers=2, executor_options=opts))
    summary = run_sweep(spec, progress=False)
    assert summary.done == 2
    assert list(load_runs(spec.runs_dir)["status"]) == ["ok", "ok"]
