"""benchmarks/bench_gpu_scale.py end to end on CPU with tiny shapes: the JSON the GPU run will write."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu_scale.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_gpu_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# tiny Llama (2 layers, hidden 64, kv 32, intermediate 128), LoRA r = 16 on the 7 linears of each layer
TINY_LORA_TENSORS = 2 * 7 * 2
TINY_LORA_PARAMETERS = 2 * 16 * ((64 + 64) * 2 + (64 + 32) * 2 + (64 + 128) * 2 + (128 + 64))


def test_tiny_run_writes_every_figure(tmp_path):
    pytest.importorskip("torchao")
    bench = load_script()
    out = tmp_path / "gpu_scale.json"
    result = bench.main(["--tiny", "--device", "cpu", "--small-steps", "4", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["kss_over_lora_step"] == pytest.approx(result["kss_over_lora_step"])
    for key in ("kss_over_lora_step", "kss_over_lora_peak_memory", "fp8_over_bf16_step", "fp8_val_loss_degradation"):
        assert key in saved, key
    assert saved["gpu"] is None and saved["device"] == "cpu" and saved["tiny"] is True
    assert saved["fp8_skipped"] is None and saved["native_fp8"] is False
    scale = saved["scale"]
    assert scale["lora_tensors"] == TINY_LORA_TENSORS and scale["lora_parameters"] == TINY_LORA_PARAMETERS
    assert scale["mask_steps"] == 3  # warm-up + timed steps of the KSS optimizer: the mask ran every time
    assert 0.1 < saved["kss_over_lora_step"] < 10 and saved["kss_over_lora_peak_memory"] is None  # no CUDA counter
    assert saved["fp8_step"]["fp8"]["float8_linear_modules"] == 14  # every base linear; lm_head stays
    assert saved["fp8_step"]["bf16"]["float8_linear_modules"] == 0
    assert 0.05 < saved["fp8_over_bf16_step"] < 50
    quality = saved["fp8_quality"]
    for mode in ("bf16", "fp8"):
        assert math.isfinite(quality[mode]["val_loss"]) and quality[mode]["val_loss"] > quality["entropy_rate_nats"]
    assert abs(saved["fp8_val_loss_degradation"]) < 0.2  # the same 4 steps from the same init


def test_without_torchao_the_fp8_parts_say_they_were_skipped(tmp_path, monkeypatch):
    bench = load_script()
    monkeypatch.setattr(bench, "torchao_available", lambda: False)
    out = tmp_path / "gpu_scale.json"
    bench.main(["--tiny", "--device", "cpu", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["fp8_skipped"] == "torchao is not installed"
    assert saved["fp8_over_bf16_step"] is None and saved["fp8_val_loss_degradation"] is None
    assert "fp8_step" not in saved and saved["kss_over_lora_step"] > 0


def test_markov_chain_data_has_the_stated_floor():
    bench = load_script()
    chain = bench.markov_chain(64, successors=8, seed=0)
    nxt, cum, entropy = chain
    assert nxt.shape == (64, 8) and cum[:, -1] == pytest.approx(1.0) and 0 < entropy < math.log(8)
    tokens = bench.sample_sequences(chain, 200, 20, seed=1)
    assert tokens.shape == (200, 20) and int(tokens.min()) >= 0 and int(tokens.max()) < 64
    # every transition is one of the chain's successors
    allowed = {(a, b) for a in range(64) for b in nxt[a]}
    pairs = zip(tokens[:, :-1].reshape(-1).tolist(), tokens[:, 1:].reshape(-1).tolist(), strict=True)
    assert all(pair in allowed for pair in pairs)


def test_a_failing_part_is_recorded_and_the_rest_still_written(tmp_path, monkeypatch):
    bench = load_script()

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    monkeypatch.setattr(bench, "torchao_available", lambda: True)
    monkeypatch.setattr(bench, "fp8_step_part", out_of_memory)
    out = tmp_path / "gpu_scale.json"
    bench.main(["--tiny", "--device", "cpu", "--budget-s", "0", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["kss_over_lora_step"] > 0  # the part that worked
    assert saved["fp8_step"] == {"error": "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"}
    assert saved["fp8_over_bf16_step"] is None and saved["fp8_speedup"] is None
    assert saved["fp8_quality"]["error"].startswith("skipped: past the time budget")
    assert saved["fp8_val_loss_degradation"] is None
