"""FSDP2: 2 CPU processes (gloo) with sharded weights train what one process trains; masks agree."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from conftest import tiny_config, with_blocks
from test_ddp import _masker_at, ddp_config, load_adapter

from kss_lora.cli import main
from kss_lora.config import from_dict
from kss_lora.errors import ConfigError
from kss_lora.fsdp import FSDPOptions, block_classes, resident_parameter_mb
from kss_lora.launch import DistContext, build_command, fsdp_options, mask_digest, profile_path


def launcher(profile: str | Path, name: str = "accelerate") -> SimpleNamespace:
    return SimpleNamespace(name=name, profile=str(profile), num_processes=2, args=[])


def test_shipped_profiles_name_their_strategy():
    assert fsdp_options(launcher("ddp")) is None
    options = fsdp_options(launcher("fsdp2"))
    assert options == FSDPOptions(reshard_after_forward=True, offload_params=False, layer_classes=())
    assert build_command(launcher("fsdp2"), ["run", "x"])[3] == str(profile_path("fsdp2"))


def test_profile_options_and_refusals(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text(
        yaml.safe_dump(
            {
                "distributed_type": "FSDP",
                "fsdp_config": {
                    "fsdp_version": 2,
                    "fsdp_reshard_after_forward": False,
                    "fsdp_offload_params": "true",
                    "fsdp_transformer_layer_cls_to_wrap": "LlamaDecoderLayer, LlamaRMSNorm",
                },
            }
        )
    )
    assert fsdp_options(launcher(own)) == FSDPOptions(False, True, ("LlamaDecoderLayer", "LlamaRMSNorm"))
    for profile, expected in (
        ({"distributed_type": "FSDP", "fsdp_config": {"fsdp_version": 1}}, "fsdp_version 1"),
        ({"distributed_type": "DEEPSPEED"}, "distributed_type DEEPSPEED"),
    ):
        own.write_text(yaml.safe_dump(profile))
        with pytest.raises(ConfigError, match=expected) as err:
            fsdp_options(launcher(own))
        assert err.value.field == "launcher.profile"


def test_accelerate_environment_selects_fsdp2(monkeypatch):
    assert FSDPOptions.from_accelerate_env() is None or os.environ.get("ACCELERATE_USE_FSDP")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    monkeypatch.setenv("FSDP_RESHARD_AFTER_FORWARD", "false")
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "BertLayer")
    assert FSDPOptions.from_accelerate_env() == FSDPOptions(False, False, ("BertLayer",))


def test_blocks_are_the_models_no_split_modules():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8)
    )
    assert block_classes(model) == {"LlamaDecoderLayer"}
    assert block_classes(model, ("MyBlock",)) == {"MyBlock"}


def test_padded_shards_have_equal_lengths_and_pad_with_real_examples():
    batch = np.arange(10, 17)  # 7 examples over 3 ranks: 3, 2, 2 real
    ctx = [DistContext(rank=r, world_size=3, fsdp=FSDPOptions()) for r in range(3)]
    shards = [c.padded_shard(batch) for c in ctx]
    assert [s.tolist() for s, _ in shards] == [[10, 11, 12], [13, 14, 14], [15, 16, 16]]
    assert [n for _, n in shards] == [3, 2, 2]
    # one example, three ranks: two ranks run a padding pass on it
    assert [c.padded_shard(np.array([5])) for c in ctx][2][0].tolist() == [5]
    assert [c.padded_shard(np.array([5]))[1] for c in ctx] == [1, 0, 0]
    # replicated weights need no padding
    assert DistContext(rank=1, world_size=3).padded_shard(batch)[0].tolist() == [13, 14]


def _run_fsdp(tmp_path: Path, cfg: dict, name: str) -> tuple[dict, dict]:
    """The same config as one process and as 2 FSDP2 processes; returns both results."""
    from kss_lora.runner import Run

    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    single = Run(from_dict(cfg))
    ref = single.execute(tmp_path / f"{name}-single")
    assert ref["status"] == "ok", ref["error"]
    ref["mask_digest"] = mask_digest(_masker_at(single), [0, ref["steps"] - 1])
    ref["param_mb"] = resident_parameter_mb(single.model)
    rc = main(
        [
            "run",
            str(path),
            "--launcher",
            "torchrun",
            "--profile",
            "fsdp2",
            "--nproc",
            "2",
            "--run-dir",
            str(tmp_path / f"{name}-fsdp"),
        ]
    )
    assert rc == 0
    got = json.loads((tmp_path / f"{name}-fsdp" / "result.json").read_text())
    assert got["status"] == "ok", got["error"]
    return ref, got


def _assert_same_training(tmp_path: Path, name: str, ref: dict, got: dict, keys: tuple[str, ...]) -> None:
    dist = got["distributed"]
    assert dist["world_size"] == 2 and dist["strategy"] == "fsdp2" and dist["masks_agree"] and dist["params_agree"]
    assert dist["mask_digest"] == ref["mask_digest"]  # each rank masked its shard with the one-process mask
    # sharded at rest: each rank holds about half the weights (chunks of odd-sized dims round up)
    assert len(dist["param_mb_per_rank"]) == 2 and sum(dist["param_mb_per_rank"]) == pytest.approx(
        ref["param_mb"], abs=0.01
    )
    assert max(dist["param_mb_per_rank"]) < 0.55 * ref["param_mb"]
    a, b = load_adapter(tmp_path / f"{name}-single"), load_adapter(tmp_path / f"{name}-fsdp")
    assert a.keys() == b.keys() and any(np.abs(v).max() > 0 for k, v in a.items() if "lora_B" in k)
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=1e-5, err_msg=key)
    for key in keys:
        assert got[key] == pytest.approx(ref[key], rel=1e-4), key


@pytest.mark.slow
def test_two_process_fsdp2_equals_single_process_causal_lm(tmp_path):
    from kss_lora.dynamics.records import load_dynamics

    # Global batch 5 over 2 ranks (3 + 2) in micro-batches of 1: rank 1 runs a padding-only pass each step;
    # update mode restores masked entries of each rank's shard after the step.
    cfg = with_blocks(ddp_config(tmp_path), train={"batch_size": 5, "grad_accum": 5}, method={"mask_mode": "update"})
    ref, got = _run_fsdp(tmp_path, cfg, "lm")
    _assert_same_training(tmp_path, "lm", ref, got, ("train_loss", "val_loss", "train_loss_running"))
    free = load_dynamics(tmp_path / "lm-fsdp").free()  # padding passes are not recorded
    single = load_dynamics(tmp_path / "lm-single").free()
    assert len(free.loss) == len(single.loss)
    np.testing.assert_allclose(free.loss, single.loss, rtol=1e-4)
    assert (tmp_path / "lm-fsdp" / "adapter" / "kss_config.json").is_file()


@pytest.mark.slow
def test_two_process_fsdp2_equals_single_process_classification(tmp_path):
    # A trainable classification head (PEFT modules_to_save), gradient clipping over shards; global batch 9
    # (5 + 4) in micro-batches of 3: rank 1's second micro-batch is one example + padding. tiny-llama, as
    # tiny-bert's dropout would draw different noise on each rank.
    cfg = tiny_config(
        tmp_path,
        model={"name": "tiny-llama"},
        data={"num_examples": 45},
        train={"batch_size": 9, "grad_accum": 3, "grad_clip": 0.5, "device": "cpu"},
        method={"preset": "kss-sparse"},
    )
    ref, got = _run_fsdp(tmp_path, cfg, "cls")
    _assert_same_training(tmp_path, "cls", ref, got, ("train_loss", "val_loss", "val_accuracy"))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["emu-fp8", "fp8"])
def test_low_precision_under_fsdp2_equals_ddp(tmp_path, mode):
    """Emulated FP8 and torchao FP8 (its emulate mode on CPU) see whole weights inside FSDP2's forward: the
    run is bit-for-bit the DDP run (not the one-process run: per-tensor scales follow each rank's batch)."""
    cfg = with_blocks(ddp_config(tmp_path), precision={"mode": mode}, train={"epochs": 1})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    results = {}
    for profile in ("ddp", "fsdp2"):
        run_dir = tmp_path / profile
        assert (
            main(
                [
                    "run",
                    str(path),
                    "--launcher",
                    "torchrun",
                    "--profile",
                    profile,
                    "--nproc",
                    "2",
                    "--run-dir",
                    str(run_dir),
                ]
            )
            == 0
        )
        results[profile] = json.loads((run_dir / "result.json").read_text())
    assert results["fsdp2"]["distributed"]["strategy"] == "fsdp2"
    assert results["ddp"]["distributed"]["strategy"] == "ddp"
    for key in ("train_loss", "val_loss"):
        assert results["fsdp2"][key] == pytest.approx(results["ddp"][key], rel=1e-6), key
    a, b = load_adapter(tmp_path / "ddp"), load_adapter(tmp_path / "fsdp2")
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-7, err_msg=key)


@pytest.fixture
def one_rank_group(tmp_path):
    """A one-process gloo group, so that FSDP2 (and its DTensors) run inside the test process."""
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.FileStore(str(tmp_path / "store"), 1))
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("mode", ["grad", "update"])
def test_masker_on_dtensor_parameters_matches_plain_parameters(one_rank_group, mode):
    """The masker's DTensor path (shard views, in-place masking, update-mode restore) in one process."""
    import torch
    from torch import nn
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from kss_lora.fsdp import is_sharded
    from kss_lora.methods.kss import KSSConfig, KSSMasker

    def build() -> tuple[nn.Module, dict[str, nn.Parameter]]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 5, bias=False), nn.Linear(5, 3, bias=False))
        return model, {"lora_A": model[0].weight, "lora_B": model[1].weight}

    config = KSSConfig(sparsity=0.4, gamma=1.0, mask_mode=mode, seed=3)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    plain, plain_params = build()
    sharded, _ = build()
    fully_shard(sharded, mesh=init_device_mesh("cpu", (1,)))
    sharded_params = {"lora_A": sharded[0].weight, "lora_B": sharded[1].weight}
    assert all(is_sharded(p) for p in sharded_params.values())
    for model, params in ((plain, plain_params), (sharded, sharded_params)):
        opt = torch.optim.AdamW(list(params.values()), lr=0.1)
        masker = KSSMasker(params, config).attach(opt)
        for _ in range(3):
            model(x).square().sum().backward()
            opt.step()
            opt.zero_grad()
        assert masker.step == 3
    for name in plain_params:
        got = sharded_params[name].full_tensor()
        torch.testing.assert_close(got, plain_params[name].detach(), rtol=0, atol=1e-6)
