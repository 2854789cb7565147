"""The executors behind extras, in their one-machine modes: a local Ray instance and submitit's local executor.

The executor contract is tested on a cheap function first (no training), then one real sweep per executor.
"""

from __future__ import annotations

import json

import pytest
from conftest import tiny_config

from kss_lora.errors import ConfigError
from kss_lora.lab.executors import default_workers, map_unordered
from kss_lora.lab.registry import load_runs
from kss_lora.lab.sweep import parse_sweep, run_sweep

# A plain-Python library function, so Ray / submitit workers can import it (a function in this test module
# they cannot); parsing "{" raises, standing in for a worker that dies.
parse = json.loads


def test_sequential_and_local_contract():
    assert sorted(r for _, r in map_unordered(parse, ["1", "2", "3"])) == [1, 2, 3]
    out = dict(map_unordered(parse, ["1", "2", "3", "{"], executor="local", workers=2))
    assert {k: v for k, v in out.items() if k != "{"} == {"1": 1, "2": 2, "3": 3}
    assert isinstance(out["{"], ValueError)  # reported, not raised: the sweep marks the run lost
    assert list(map_unordered(parse, [], executor="local")) == []
    assert default_workers() >= 1
    with pytest.raises(ConfigError):
        list(map_unordered(parse, ["1"], executor="kubernetes"))


def one_point_sweep(tmp_path, name: str, **extra) -> dict:
    base = tiny_config(tmp_path, train={"epochs": 1}, output={"save_adapter": False})
    return {"name": name, "base": base, "grid": {"train.seed": [0, 1]}, "runs_dir": str(tmp_path / name), **extra}


@pytest.mark.slow  # starting a local Ray instance takes 10-60 s on 2 cores
def test_ray_executor_local_instance(tmp_path):
    ray = pytest.importorskip("ray")
    out = dict(map_unordered(parse, ["4", "9", "{"], executor="ray", workers=2))
    assert (out["4"], out["9"]) == (4, 9) and isinstance(out["{"], Exception)
    assert not ray.is_initialized()  # we started it, we shut it down
    spec = parse_sweep(one_point_sweep(tmp_path, "ray", executor="ray", workers=2))
    summary = run_sweep(spec, progress=False)
    assert summary.done == 2
    runs = load_runs(spec.runs_dir)
    assert list(runs["status"]) == ["ok", "ok"]


@pytest.mark.slow  # each submitit local job is a fresh Python process importing torch
def test_slurm_executor_via_submitit_local(tmp_path):
    pytest.importorskip("submitit")
    opts = {"cluster": "local", "timeout_min": 10, "poll_s": 0.5, "folder": str(tmp_path / "submitit")}
    out = dict(map_unordered(parse, ["4", "9", "{"], executor="slurm", workers=2, options=opts))
    assert (out["4"], out["9"]) == (4, 9) and isinstance(out["{"], Exception)
    spec = parse_sweep(one_point_sweep(tmp_path, "slurm", executor="slurm", workers=2, executor_options=opts))
    summary = run_sweep(spec, progress=False)
    assert summary.done == 2
    assert list(load_runs(spec.runs_dir)["status"]) == ["ok", "ok"]


def test_local_workers_keep_torchao_off_when_the_command_does(monkeypatch):
    """`kss sweep` hides torchao (no warnings on every run); its spawned workers must too, and only then."""
    pytest.importorskip("torchao")
    import importlib.util

    ((_, shown),) = list(map_unordered(importlib.util.find_spec, ["torchao"], executor="local", workers=1))
    assert shown is not None  # a plain Python caller: the worker's imports are left alone
    monkeypatch.setitem(__import__("sys").modules, "torchao", None)  # what kss_lora.cli.entry does
    ((_, hidden),) = list(map_unordered(importlib.util.find_spec, ["torchao"], executor="local", workers=1))
    assert hidden is None
