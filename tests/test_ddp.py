"""Data-parallel training: 2 CPU processes (gloo) equal one process on the same global batch; masks agree."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from kss_lora.cli import main
from kss_lora.config import from_dict
from kss_lora.launch import DistContext, build_command, mask_digest, profile_path

QA = [(f"question number {i} about topic {i % 3}", f"answer {i % 5} for {i % 3}") for i in range(22)]


def ddp_config(tmp_path: Path) -> dict:
    rows = "".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in QA)
    (tmp_path / "train.jsonl").write_text(rows)
    # 18 training examples, global batch 8 (shards 4+4, last batch 2 -> 1+1), 2 micro-batches per step,
    # KSS masks at rho = 0.3, no dropout: everything that could differ between 1 and 2 processes.
    return {
        "model": {"name": "tiny-llama", "task": "causal-lm", "max_length": 32},
        "data": {"source": "file", "train": str(tmp_path / "train.jsonl"), "val_fraction": 0.2},
        "method": {"name": "kss", "sparsity": 0.3, "gamma": 1.0, "rank": 4},
        "train": {
            "seed": 0,
            "epochs": 2,
            "batch_size": 8,
            "grad_accum": 2,
            "lr": 1e-2,
            "progress": False,
            "threads": 1,
            "device": "cpu",
        },  # gloo, also on a machine with GPUs
        "tracking": {"per_example": True, "free": True},
        "output": {"dir": str(tmp_path / "runs")},
    }


def load_adapter(run_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def test_shards_cover_each_global_batch_once():
    batch = np.arange(10, 17)
    shards = [DistContext(rank=r, world_size=3).shard(batch) for r in range(3)]
    assert np.concatenate(shards).tolist() == batch.tolist() and [len(s) for s in shards] == [3, 2, 2]
    assert DistContext().shard(batch).tolist() == batch.tolist()


def test_eval_shards_reassemble_in_example_order():
    from kss_lora.tasks.base import EvalOutput

    full = EvalOutput(
        loss=np.arange(5.0),
        record=np.arange(10, dtype=np.float32).reshape(5, 2),
        correct=np.array([1, 0, 1, 0, 1], dtype=bool),
    )
    shards = [np.array([3, 4]), np.array([], dtype=np.int64), np.array([0, 1, 2])]  # one rank got nothing
    got = EvalOutput.assemble([(i, full.subset(i)) for i in shards], 5)
    np.testing.assert_array_equal(got.loss, full.loss)
    np.testing.assert_array_equal(got.record, full.record)
    np.testing.assert_array_equal(got.correct, full.correct)
    assert got.tokens is None


@pytest.mark.slow
def test_two_process_ddp_equals_single_process(tmp_path):
    from kss_lora.dynamics.records import load_dynamics
    from kss_lora.runner import Run

    cfg = ddp_config(tmp_path)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    single = Run(from_dict(cfg))
    ref = single.execute(tmp_path / "single")
    assert ref["status"] == "ok"
    masks = mask_digest(_masker_at(single), [0, ref["steps"] - 1])

    rc = main(["run", str(path), "--launcher", "torchrun", "--nproc", "2", "--run-dir", str(tmp_path / "ddp")])
    assert rc == 0
    got = json.loads((tmp_path / "ddp" / "result.json").read_text())
    assert got["status"] == "ok", got["error"]
    dist = got["distributed"]
    assert dist["world_size"] == 2 and dist["backend"] == "gloo" and dist["masks_agree"] and dist["params_agree"]
    assert dist["mask_digest"] == masks  # the ranks drew the single process's masks, not just each other's
    assert dist["strategy"] == "ddp" and dist["param_mb_per_rank"][0] == dist["param_mb_per_rank"][1] > 0  # replicated
    a, b = load_adapter(tmp_path / "single"), load_adapter(tmp_path / "ddp")
    assert a.keys() == b.keys() and any(np.abs(v).max() > 0 for k, v in a.items() if "lora_B" in k)
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=1e-5, err_msg=key)
    for key in ("train_loss", "val_loss", "train_loss_running"):
        assert got[key] == pytest.approx(ref[key], rel=1e-4), key
    # per-example records from both ranks were gathered: every training example, every epoch
    free = load_dynamics(tmp_path / "ddp").free()
    np.testing.assert_allclose(free.loss, load_dynamics(tmp_path / "single").free().loss, rtol=1e-4)
    only_rank0_wrote = sorted(p.name for p in (tmp_path / "ddp").iterdir())
    assert only_rank0_wrote == sorted(p.name for p in (tmp_path / "single").iterdir())


def _masker_at(run) -> object:
    """A masker over the run's LoRA tensors with its KSS config (to recompute the masks it drew)."""
    from kss_lora.methods import masked_parameters
    from kss_lora.methods.kss import KSSMasker

    return KSSMasker(masked_parameters(run.model, run.method), run.method.kss_config(run.cfg.train.seed))


def test_launch_commands():
    acc = SimpleNamespace(name="accelerate", profile="ddp", num_processes=4, args=["--num_machines", "2"])
    cmd = build_command(acc, ["run", "cfg.yaml"])
    assert cmd[1:4] == ["launch", "--config_file", str(profile_path("ddp"))]
    assert cmd[4:] == ["--num_processes", "4", "--num_machines", "2", "-m", "kss_lora.cli", "run", "cfg.yaml"]
    assert yaml.safe_load(profile_path("ddp").read_text())["distributed_type"] == "MULTI_GPU"
    tr = SimpleNamespace(name="torchrun", profile="ddp", num_processes=2, args=[])
    assert build_command(tr, ["run", "x"]) == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "-m",
        "kss_lora.cli",
        "run",
        "x",
    ]


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--launcher", "accelerate", "--profile", "zero3"], "launcher.profile: unknown profile 'zero3'"),
        (["--launcher", "accelerate", "--profile", "zero3.yaml"], "launcher.profile: unknown profile 'zero3.yaml'"),
        (["--launcher", "torchrun", "--nproc", "0"], "launcher.num_processes"),
        (["launcher.name=mpi"], "launcher.name"),
    ],
)
def test_bad_launch_input_is_one_line_exit_2(tmp_path, capsys, args, expected):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(ddp_config(tmp_path)))
    assert main(["run", str(path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err and "\n" not in err
    assert not (tmp_path / "runs").exists()


def test_single_process_result_has_no_distributed_block(tmp_path):
    from kss_lora.runner import Run

    cfg = ddp_config(tmp_path)
    cfg["train"].update(epochs=1, max_steps=1)
    cfg["tracking"] = {}
    result = Run(from_dict(cfg)).execute(tmp_path / "one")
    assert result["status"] == "ok" and "distributed" not in result
    assert torch.distributed.is_available()
