"""Real FP8 (torchao) vs BF16 on a GPU: training step time, peak memory and validation loss.

Why: the published FP8 claims (docs/spec.md §4) were made on H200s. On CPU we can only emulate FP8; this
script measures the real thing where the hardware has FP8 tensor cores (compute capability >= 8.9:
Ada, Hopper, Blackwell). For each precision it (1) times ``--steps`` training steps (forward, backward,
AdamW) after ``--warmup`` steps on a fixed set of batches, optionally under ``torch.compile`` (torchao's
FP8 speed-up relies on compile fusing the casts), and (2) trains a fresh run to the end with the
ordinary runner and records its validation loss, so the speed and the quality cost come from one
invocation on one card.

    .venv/bin/python benchmarks/bench_fp8_gpu.py                       # agnews / MiniLM defaults
    .venv/bin/python benchmarks/bench_fp8_gpu.py --config agnews model.name=smollm2-135m model.task=causal-lm ...
    .venv/bin/python benchmarks/bench_fp8_gpu.py --allow-cpu --config quickstart model.name=tiny-bert  # code check

Writes ``benchmarks/results/fp8_gpu_<device>_<time>.json``. On a machine without an FP8-capable GPU it
prints why and exits with status 2 (``--allow-cpu`` runs torchao's emulation instead, to check the code).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def fp8_gpu_available() -> tuple[bool, str]:
    """Whether this machine can run real FP8 matmuls, and a one-line reason when it cannot."""
    if not torch.cuda.is_available():
        return False, "no CUDA GPU is visible (CPU only)"
    cap = torch.cuda.get_device_capability()
    name = torch.cuda.get_device_name()
    if cap < (8, 9):
        return False, f"{name} has compute capability {cap[0]}.{cap[1]}; FP8 matmuls need >= 8.9 (Ada/Hopper)"
    return True, name


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(cfg: Any, *, steps: int, warmup: int, compile_model: bool) -> dict[str, Any]:
    """Mean/median seconds per optimizer step on fixed batches (no data-loading cost), and peak memory."""
    import numpy as np

    from kss_lora.runner import Run, collate

    run = Run(cfg)
    model, device, tc = run.model, run.device, cfg.train
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tc.lr)
    forward = torch.compile(model) if compile_model else model
    n = len(run.train_batches)
    order = np.random.default_rng(0).permutation(n)
    batches = []
    for i in range(min(8, max(1, n // tc.batch_size))):
        index = order[i * tc.batch_size : (i + 1) * tc.batch_size]
        batches.append(
            (
                collate(run.train_batches, index, run.pad_id, device),
                torch.as_tensor(run.train_batches.labels[index]).to(device),
            )
        )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    model.train()
    for step in range(warmup + steps):
        inputs, labels = batches[step % len(batches)]
        _sync(device)
        t0 = time.perf_counter()
        with run.precision.autocast():
            logits = forward(**inputs).logits.float()
        loss = torch.nn.functional.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if step >= warmup:
            times.append(time.perf_counter() - t0)
    converted = sum(type(m).__name__ == "Float8Linear" for m in model.modules())
    return {
        "step_s_mean": statistics.fmean(times),
        "step_s_median": statistics.median(times),
        "step_s_min": min(times),
        "steps_timed": len(times),
        "float8_linear_modules": converted,
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "compiled": compile_model,
        "batch_size": tc.batch_size,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Real FP8 vs BF16 step time and validation loss on a GPU")
    p.add_argument("--config", default="agnews", help="run config (path or shipped name)")
    p.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    p.add_argument("--modes", nargs="+", default=["bf16", "fp8"], help="precision modes to compare")
    p.add_argument("--steps", type=int, default=50, help="timed steps per mode")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (compile, autotuning)")
    p.add_argument("--no-compile", action="store_true", help="time eager mode (torchao FP8 is slow uncompiled)")
    p.add_argument("--no-train", action="store_true", help="skip the full training runs (timing only)")
    p.add_argument("--runs-dir", default="runs/bench_fp8_gpu", help="where the training runs go")
    p.add_argument("--out", default=str(RESULTS), help="directory for the JSON (default benchmarks/results)")
    p.add_argument("--allow-cpu", action="store_true", help="run on CPU with torchao's emulation (code check only)")
    args = p.parse_args(argv)

    ok, device_name = fp8_gpu_available()
    if not ok and not args.allow_cpu:
        print(
            f"bench_fp8_gpu: {device_name}. Real FP8 needs an FP8-capable NVIDIA GPU; GPU figures await a GPU "
            "session. (--allow-cpu checks the code path with torchao's emulation; its timings mean nothing.)",
            file=sys.stderr,
        )
        return 2

    from kss_lora.cli import _quiet_libraries
    from kss_lora.config import load_config
    from kss_lora.runner import run

    _quiet_libraries()
    base = [*args.overrides, "train.progress=false", "output.save_adapter=false"]
    if not ok:
        base.append("train.device=cpu")
    out: dict[str, Any] = {
        "device": device_name if ok else f"CPU emulation ({platform.processor() or 'cpu'})",
        "torch": torch.__version__,
        "config": args.config,
        "overrides": args.overrides,
        "modes": {},
    }
    try:
        import torchao

        out["torchao"] = torchao.__version__
    except ImportError:
        out["torchao"] = None
    for mode in args.modes:
        cfg = load_config(args.config, [*base, f"precision.mode={mode}"])
        entry: dict[str, Any] = {
            "timing": time_steps(cfg, steps=args.steps, warmup=args.warmup, compile_model=not args.no_compile and ok)
        }
        if not args.no_train:
            result = run(cfg, Path(args.runs_dir) / mode)
            entry["train"] = {
                k: result.get(k)
                for k in ("status", "error", "val_loss", "val_accuracy", "train_loss", "wall_time_s", "steps")
            }
        out["modes"][mode] = entry
        print(json.dumps({mode: entry}), flush=True)
    if "bf16" in out["modes"] and "fp8" in out["modes"]:
        b, f = out["modes"]["bf16"], out["modes"]["fp8"]
        out["speedup_fp8_vs_bf16"] = b["timing"]["step_s_median"] / f["timing"]["step_s_median"]
        if "train" in b and "train" in f and b["train"]["val_loss"] and f["train"]["val_loss"]:
            out["degradation_fp8_vs_bf16"] = (f["train"]["val_loss"] - b["train"]["val_loss"]) / b["train"]["val_loss"]
    results = Path(args.out)
    results.mkdir(parents=True, exist_ok=True)
    tag = "".join(c if c.isalnum() else "-" for c in out["device"])[:40]
    path = results / f"fp8_gpu_{tag}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
