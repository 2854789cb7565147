"""Sweep throughput: runs per minute for the sequential executor and the ``local`` executor at 1 and 2 workers.

Why: the CPU sweeps are sized to a 2-core machine, and whether two single-threaded worker processes beat
one process with two torch threads decides how the shipped sweeps run. The same small sweep (MiniLM on
synthetic data by default, one epoch, N seeds) runs once per mode in a fresh runs directory.

    .venv/bin/python benchmarks/bench_sweep_throughput.py            # prints a table
    .venv/bin/python benchmarks/bench_sweep_throughput.py --model tiny-bert --runs 4

Writes ``benchmarks/results/sweep_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from kss_lora.cli import _quiet_libraries  # noqa: E402
from kss_lora.lab.sweep import parse_sweep, run_sweep  # noqa: E402

MODES = (("sequential", 1), ("local", 1), ("local", 2))


def base_config(model: str, examples: int) -> dict:
    return {
        "model": {"name": model, "max_length": 32},
        "data": {"source": "synthetic", "num_examples": examples, "num_classes": 4},
        "method": {"name": "kss", "preset": "kss-default", "rank": 8},
        "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "progress": False},
        "output": {"save_adapter": False},
    }


def measure(executor: str, workers: int, *, model: str, runs: int, examples: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="kss-bench-") as tmp:
        spec = parse_sweep(
            {
                "name": f"bench-{executor}-{workers}",
                "base": base_config(model, examples),
                "grid": {"train.seed": list(range(runs))},
                "runs_dir": tmp,
            }
        )
        t0 = time.perf_counter()
        summary = run_sweep(spec, executor=executor, workers=workers, progress=False)
        wall = time.perf_counter() - t0
    if summary.done != runs:
        raise RuntimeError(f"{executor}/{workers}: only {summary.done} of {runs} runs succeeded: {summary.statuses}")
    return {
        "executor": executor,
        "workers": workers,
        "runs": runs,
        "wall_s": round(wall, 2),
        "runs_per_min": round(60 * runs / wall, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--examples", type=int, default=1600, help="synthetic training examples per run")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sweep_throughput.json"))
    args = ap.parse_args()
    _quiet_libraries()
    load_before = os.getloadavg()
    rows = [measure(e, w, model=args.model, runs=args.runs, examples=args.examples) for e, w in MODES]
    load_after = os.getloadavg()
    by = {(r["executor"], r["workers"]): r for r in rows}
    ratio = by[("local", 2)]["runs_per_min"] / by[("local", 1)]["runs_per_min"]
    print(f"{'executor':12s} {'workers':>7s} {'runs':>5s} {'wall s':>8s} {'runs/min':>9s}")
    for r in rows:
        print(f"{r['executor']:12s} {r['workers']:7d} {r['runs']:5d} {r['wall_s']:8.1f} {r['runs_per_min']:9.2f}")
    print(f"local 2 workers / 1 worker throughput ratio: {ratio:.2f}x")
    print(
        f"load average (1, 5, 15 min) before {load_before}, after {load_after}: other work on the machine "
        "skews the ratio (more processes get a larger share of contended cores)"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "sweep_throughput",
                "model": args.model,
                "examples": args.examples,
                "rows": rows,
                "ratio_local2_vs_local1": round(ratio, 3),
                "cpu_count": os.cpu_count(),
                "machine": platform.platform(),
                "loadavg_before": load_before,
                "loadavg_after": load_after,
                "note": "sequential runs in-process with torch's default threads; local workers get cores // workers threads",
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
