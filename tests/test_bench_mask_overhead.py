"""benchmarks/bench_mask_overhead.py on one Llama layer: shapes, names and the JSON it writes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_mask_overhead.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_mask_overhead", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_llama_lora_shapes_are_those_of_llama_3_1_8b():
    bench = load_script()
    params = bench.llama_lora_parameters(layers=1, rank=16)
    assert len(params) == 14
    # per layer: q, o 4096->4096; k, v 4096->1024; gate, up 4096->14336; down 14336->4096; r = 16
    assert sum(p.numel() for p in params.values()) == 16 * (2 * 8192 + 2 * 5120 + 3 * 18432) == 1_310_720
    assert params["base_model.model.model.layers.0.mlp.down_proj.lora_A.default.weight"].shape == (16, 14336)
    assert params["base_model.model.model.layers.0.self_attn.k_proj.lora_B.default.weight"].shape == (1024, 16)
    assert 32 * 1_310_720 == 41_943_040  # the 8B adapter: 448 tensors, 41.9M parameters


def test_one_layer_run_writes_the_ratio(tmp_path):
    bench = load_script()
    out = tmp_path / "mask_overhead.json"
    threads = torch.get_num_threads()
    result = bench.main(["--layers", "1", "--reps", "2", "--warmup", "0", "--threads", "1", "--out", str(out)])
    assert torch.get_num_threads() == 1
    torch.set_num_threads(threads)
    saved = json.loads(out.read_text())
    assert saved["lora_tensors"] == 14 and saved["lora_parameters"] == 1_310_720
    assert saved["threads"] == 1 and saved["torch"] == torch.__version__ and set(saved["by_threads"]) == {"1"}
    assert set(saved["median_s"]) == {"adamw", "mask", "per_tensor_torch_rand"}
    assert saved["mask_over_adamw"] == saved["median_s"]["mask"] / saved["median_s"]["adamw"] > 0
    assert saved["meets_goal"] == (saved["mask_over_adamw"] <= 0.25)
    assert result["mask_over_adamw"] == saved["mask_over_adamw"]
