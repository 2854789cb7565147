"""Data parallelism side by side: one process, DDP (replicated weights) and FSDP2 (sharded weights).

The same `kss run` (the built-in SmolLM2-135M on built-in synthetic instruction data, so no data files are
needed) is started once per strategy through `kss run --launcher torchrun --profile ...`, one after the
other on the same machine. From each run's result.json we report the wall time (training plus the SPEC's
per-epoch evaluation passes), the weights each rank holds at rest, each rank's peak memory (allocated CUDA
memory on GPUs; whole-process RSS on CPU, where every rank loads the full model before sharding), and
whether the trained adapters agree with the one-process adapter.

Usage:  python benchmarks/bench_data_parallel.py [--nproc 2] [--model smollm2-135m] [--steps 8] [KEY=VALUE ...]
Writes benchmarks/results/data_parallel.json. On a GPU machine the runs use NCCL and one GPU per process.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESULTS = Path(__file__).parent / "results"


def config(model: str, steps: int) -> dict:
    return {
        "model": {"name": model, "task": "causal-lm", "max_length": 64},
        "data": {"source": "synthetic", "num_examples": 96, "num_classes": 4, "val_fraction": 0.25},
        "method": {"name": "kss", "preset": "kss-default", "rank": 8},
        "train": {
            "seed": 0,
            "epochs": 1,
            "max_steps": steps,
            "batch_size": 8,
            "eval_batch_size": 16,
            "lr": 1e-3,
            "progress": False,
            "threads": 1,
        },
        "output": {"save_adapter": True},
    }


def run(strategy: str, path: Path, run_dir: Path, nproc: int, extra: list[str]) -> dict:
    from kss_lora.cli import main
    from kss_lora.rundir import RunDirectory

    args = ["run", str(path), *extra, "--run-dir", str(run_dir)]
    if strategy != "single":
        args += ["--launcher", "torchrun", "--profile", strategy, "--nproc", str(nproc)]
    t0 = time.perf_counter()
    rc = main(args)
    elapsed = time.perf_counter() - t0
    record = RunDirectory(run_dir).read_result()  # CorruptRecord (one line) if unreadable
    if record is None:
        raise SystemExit(f"{strategy}: no result.json in {run_dir} (exit {rc})")
    result = record.to_dict()
    if rc != 0 or result["status"] != "ok":
        raise SystemExit(f"{strategy}: run failed: {result.get('error')}")
    return {"result": result, "launch_to_exit_s": elapsed}


def adapter_max_diff(a: Path, b: Path) -> float:
    from safetensors.numpy import load_file

    x, y = (load_file(str(d / "adapter" / "adapter_model.safetensors")) for d in (a, b))
    return max(float(np.abs(x[k] - y[k]).max()) for k in x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the run config")
    args = parser.parse_args()

    import yaml

    from kss_lora.rundir import atomic_write_json, environment

    cfg, extra = config(args.model, args.steps), list(args.overrides)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(yaml.safe_dump(cfg))
        for strategy in ("single", "ddp", "fsdp2"):
            rows[strategy] = run(strategy, path, Path(tmp) / strategy, args.nproc, extra)
        diffs = {s: adapter_max_diff(Path(tmp) / "single", Path(tmp) / s) for s in ("ddp", "fsdp2")}

    table = {}
    for strategy, row in rows.items():
        r, d = row["result"], row["result"].get("distributed", {})
        table[strategy] = {
            "wall_time_s": r["wall_time_s"],
            "launch_to_exit_s": round(row["launch_to_exit_s"], 2),
            "param_mb_per_rank": d.get("param_mb_per_rank"),
            "peak_memory_mb_per_rank": d.get("peak_memory_mb_per_rank"),
            "peak_memory_kind": d.get("peak_memory_kind"),
            "train_loss": r["train_loss"],
            "val_loss": r["val_loss"],
            "adapter_max_abs_diff_vs_single": diffs.get(strategy, 0.0),
            "backend": d.get("backend"),
        }
    ratio = {
        "wall_time_fsdp2_over_ddp": table["fsdp2"]["wall_time_s"] / table["ddp"]["wall_time_s"],
        "param_mb_rank0_fsdp2_over_ddp": table["fsdp2"]["param_mb_per_rank"][0] / table["ddp"]["param_mb_per_rank"][0],
    }
    print(
        f"{'strategy':8s} {'wall (s)':>9s} {'weights/rank (MB)':>18s} {'peak/rank (MB)':>16s} {'max |Δ adapter|':>16s}"
    )
    for strategy, t in table.items():
        weights = t["param_mb_per_rank"][0] if t["param_mb_per_rank"] else float("nan")
        peak = t["peak_memory_mb_per_rank"][0] if t["peak_memory_mb_per_rank"] else float("nan")
        print(
            f"{strategy:8s} {t['wall_time_s']:9.1f} {weights:18.1f} {peak:16.0f} {t['adapter_max_abs_diff_vs_single']:16.2e}"
        )
    print(
        f"fsdp2/ddp: wall time {ratio['wall_time_fsdp2_over_ddp']:.2f}, "
        f"weights held by rank 0 {ratio['param_mb_rank0_fsdp2_over_ddp']:.2f}"
    )

    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        RESULTS / "data_parallel.json",
        {
            "benchmark": "data_parallel",
            "model": args.model,
            "nproc": args.nproc,
            "steps": args.steps,
            "config": cfg,
            "overrides": extra,
            "strategies": table,
            "ratios": ratio,
            "env": environment(),
            "note": "CPU peak memory is whole-process RSS: every rank loads the full model before FSDP2 shards it.",
        },
    )


if __name__ == "__main__":
    sys.exit(main())
