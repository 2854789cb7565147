"""Training-step cost of KSS-LoRA vs dense LoRA on the same model and batch.

Time: the two models are stepped alternately in one process (A B A B ...), so drift in machine load
hits both equally; we report medians and the ratio kss/lora for the full step (forward + backward +
optimizer) and for ``optimizer.step()`` alone (where the mask is applied).
Memory: peak resident memory of a child process per method (CPU has no per-allocation peak counter that
sees torch's allocator; on CUDA, ``torch.cuda.max_memory_allocated`` is used instead).

Usage:  python benchmarks/bench_kss_step.py [--model minilm] [--steps 30] [--batch 32] [--length 64]
Writes benchmarks/results/kss_step.json. Target on CPU for MiniLM: step-time ratio <= 1.03.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESULTS = Path(__file__).parent / "results"


def build(method: str, model_name: str, seed: int = 0):
    from kss_lora.config import from_dict
    from kss_lora.methods import masked_parameters, resolve_method, wrap_model
    from kss_lora.methods.kss import attach_kss
    from kss_lora.models import load_model

    cfg = from_dict({"model": {"name": model_name}, "method": {"name": method, "rank": 8}})
    resolved = resolve_method(cfg.method)
    base = load_model(model_name, task="classification", num_labels=4, seed=seed)
    model = wrap_model(base, resolved, task_type="SEQ_CLS")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    kss = resolved.kss_config(seed)
    if resolved.masked and kss is not None:
        attach_kss(model, opt, kss, params=masked_parameters(model, resolved))
    return model, opt


def batch(size: int, length: int, vocab: int = 30000, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1000, vocab, (size, length), generator=g), torch.randint(0, 4, (size,), generator=g)


def step(model, opt, x, y) -> tuple[float, float]:
    t0 = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(model(input_ids=x).logits, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    t1 = time.perf_counter()
    opt.step()
    opt.zero_grad(set_to_none=True)
    t2 = time.perf_counter()
    return t2 - t0, t2 - t1


def peak_rss_mb(method: str, args: argparse.Namespace) -> float:
    """Peak RSS of a fresh process (this script with --child) doing a few steps of one method."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        method,
        "--model",
        args.model,
        "--batch",
        str(args.batch),
        "--length",
        str(args.length),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def child(method: str, args: argparse.Namespace) -> None:
    import resource

    model, opt = build(method, args.model)
    x, y = batch(args.batch, args.length)
    for _ in range(3):
        step(model, opt, x, y)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # kB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--no-memory", action="store_true", help="skip the per-process peak-memory runs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args)

    x, y = batch(args.batch, args.length)
    models = {m: build(m, args.model) for m in ("lora", "kss-default")}
    times: dict[str, list[tuple[float, float]]] = {m: [] for m in models}
    for i in range(args.warmup + args.steps):
        for name, (model, opt) in models.items() if i % 2 == 0 else reversed(models.items()):
            t = step(model, opt, x, y)
            if i >= args.warmup:
                times[name].append(t)

    rows = {}
    for name, ts in times.items():
        rows[name] = {
            "step_s_median": statistics.median(t[0] for t in ts),
            "optimizer_s_median": statistics.median(t[1] for t in ts),
        }
    if not args.no_memory:
        for name in models:
            rows[name]["peak_rss_mb"] = peak_rss_mb(name, args)
    ratio = {k: rows["kss-default"][k] / rows["lora"][k] for k in rows["lora"]}
    print(f"{'method':12s} {'step (ms)':>10s} {'opt.step (ms)':>14s} {'peak RSS (MB)':>14s}")
    for name, r in rows.items():
        print(
            f"{name:12s} {1e3 * r['step_s_median']:10.1f} {1e3 * r['optimizer_s_median']:14.2f} "
            f"{r.get('peak_rss_mb', float('nan')):14.0f}"
        )
    print(
        f"{'ratio kss/lora':12s} {ratio['step_s_median']:10.3f} {ratio['optimizer_s_median']:14.3f} "
        f"{ratio.get('peak_rss_mb', float('nan')):14.3f}   (target step ratio <= 1.03)"
    )

    from kss_lora.rundir import atomic_write_json, environment

    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        RESULTS / "kss_step.json",
        {
            "benchmark": "kss_step",
            "model": args.model,
            "batch": args.batch,
            "length": args.length,
            "steps": args.steps,
            "threads": torch.get_num_threads(),
            "methods": rows,
            "ratio_kss_over_lora": ratio,
            "target_step_ratio": 1.03,
            "meets_target": ratio["step_s_median"] <= 1.03,
            "env": environment(),
        },
    )


if __name__ == "__main__":
    main()
