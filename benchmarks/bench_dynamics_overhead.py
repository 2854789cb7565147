"""Cost of per-example dynamics recording: free recording per training step, and checkpoint passes.

Why: ``tracking.free`` promises per-example trajectories "at no extra compute" (it keeps the logits the
training step computed anyway), and checkpoint passes are a whole eval pass over the training set (plus
held-out items) each; a user choosing ``tracking.every_steps`` needs their price in training steps.

How: one process, one model (the runner's own :class:`~kss_lora.runner.Run`), the runner's training-step
body with and without ``DynamicsRecorder.record_batch``, timed in blocks whose order alternates (ABBA)
so machine load drifts hit both arms alike; the ratio is median(free) / median(none). The checkpoint
pass is the runner's own ``Run.checkpoint``, timed between the step blocks. The projected overhead of
checkpoints every E steps is ``t_checkpoint / (E * t_step)`` (epoch-end passes are not counted: they
compute ``train_loss`` anyway).

    .venv/bin/python benchmarks/bench_dynamics_overhead.py                 # MiniLM, prints a table
    .venv/bin/python benchmarks/bench_dynamics_overhead.py --model tiny-bert --reps 4

Writes ``benchmarks/results/dynamics_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from kss_lora.cli import _quiet_libraries  # noqa: E402
from kss_lora.config import from_dict  # noqa: E402
from kss_lora.dynamics.records import DynamicsRecorder  # noqa: E402
from kss_lora.runner import Run, collate  # noqa: E402


def make_run(args: argparse.Namespace) -> Run:
    cfg = from_dict(
        {
            "model": {"name": args.model, "max_length": args.max_length},
            "data": {"source": "synthetic", "num_examples": args.examples, "num_classes": 4},
            "method": {"name": "lora-dropout", "rank": 16, "gamma": 2.0, "dropout": 0.05},
            "train": {"batch_size": args.batch_size, "lr": 2e-4, "threads": args.threads, "progress": False},
            "tracking": {"per_example": True, "free": True},
        }
    )
    run = Run(cfg)
    run.recorder = DynamicsRecorder(
        labels=run.train_batches.labels, ids=run.train_batches.ids, clean_labels=run.train_batches.labels
    )
    return run


def step_block(
    run: Run,
    optimizer: torch.optim.Optimizer,
    batches: list[np.ndarray],
    *,
    free: bool,
    step0: int,
    record_times: list[float] | None = None,
) -> float:
    """The runner's training-step body (forward, optional free record, loss, backward, clip, step).

    ``record_times`` also collects the time of the recording call alone: a direct, load-insensitive
    measure of what free recording adds (the block ratio is noisier on a shared machine).
    """
    labels = torch.as_tensor(run.train_batches.labels)
    params = [p for p in run.model.parameters() if p.requires_grad]
    t0 = time.perf_counter()
    for i, index in enumerate(batches):
        inputs = collate(run.train_batches, index, run.pad_id, run.device)
        with run.precision.autocast():
            logits = run.model(**inputs).logits.float()
        if free:
            t_rec = time.perf_counter()
            run.recorder.record_batch(step0 + i + 1, index, logits.detach().cpu().numpy())
            if record_times is not None:
                record_times.append(time.perf_counter() - t_rec)
        loss = nn.functional.cross_entropy(logits, labels[index].to(run.device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - t0) / len(batches)


def measure(args: argparse.Namespace) -> dict:
    run = make_run(args)
    run.model.train()
    optimizer = torch.optim.AdamW([p for p in run.model.parameters() if p.requires_grad], lr=2e-4)
    rng = np.random.default_rng(0)
    n = len(run.train_batches)

    def batches() -> list[np.ndarray]:
        return [rng.choice(n, args.batch_size, replace=False) for _ in range(args.block)]

    step_block(run, optimizer, batches(), free=False, step0=0)  # warm-up (allocator, first-call costs)
    times: dict[str, list[float]] = {"none": [], "free": []}
    ckpt: list[float] = []
    record: list[float] = []
    step = 0
    for rep in range(args.reps):
        order = ("none", "free", "free", "none") if rep % 2 == 0 else ("free", "none", "none", "free")
        for arm in order:
            times[arm].append(
                step_block(run, optimizer, batches(), free=arm == "free", step0=step, record_times=record)
            )
            step += args.block
        t0 = time.perf_counter()
        run.checkpoint(step)
        ckpt.append(time.perf_counter() - t0)
    t_none, t_free = statistics.median(times["none"]), statistics.median(times["free"])
    t_ckpt = statistics.median(ckpt)
    projected = {str(e): round(t_ckpt / (e * t_none), 4) for e in args.every_steps}
    return {
        "model": args.model,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "n_train": n,
        "threads": torch.get_num_threads(),
        "reps": args.reps,
        "block_steps": args.block,
        "step_s_none": round(t_none, 5),
        "step_s_free": round(t_free, 5),
        "free_over_none": round(t_free / t_none, 4),
        "free_overhead_pct": round(100 * (t_free / t_none - 1), 2),
        "record_call_s": round(statistics.median(record), 7),
        "record_call_over_step": round(statistics.median(record) / t_none, 6),
        "free_block_ratios": [round(f / o, 4) for f, o in zip(times["free"], times["none"], strict=True)],
        "checkpoint_pass_s": round(t_ckpt, 4),
        "checkpoint_pass_in_steps": round(t_ckpt / t_none, 2),
        "checkpoint_per_item_ms": round(1000 * t_ckpt / n, 3),
        "checkpoint_overhead_ratio_by_every_steps": projected,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--examples", type=int, default=256, help="training items (the checkpoint pass covers all)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--block", type=int, default=3, help="steps per timed block")
    ap.add_argument("--reps", type=int, default=4, help="ABBA repetitions (4 blocks each)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--every-steps", type=int, nargs="+", default=[10, 24, 50, 100])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "dynamics_overhead.json"))
    args = ap.parse_args()
    _quiet_libraries()
    res = measure(args)
    print(
        f"model {res['model']}, batch {res['batch_size']}, max_length {res['max_length']}, N = {res['n_train']}, "
        f"{res['threads']} thread(s), load avg {res['load_avg_1min']}"
    )
    print(f"{'quantity':44s} {'value':>10s}")
    print(f"{'train step, no recording (s)':44s} {res['step_s_none']:10.4f}")
    print(f"{'train step, free recording (s)':44s} {res['step_s_free']:10.4f}")
    print(f"{'free / none, interleaved blocks (<= 1.03)':44s} {res['free_over_none']:10.4f}")
    print(f"{'recording call alone / step':44s} {res['record_call_over_step']:10.6f}")
    print(f"{'checkpoint pass over N items (s)':44s} {res['checkpoint_pass_s']:10.4f}")
    print(f"{'checkpoint pass, in training steps':44s} {res['checkpoint_pass_in_steps']:10.2f}")
    for e, r in res["checkpoint_overhead_ratio_by_every_steps"].items():
        print(f"{'checkpoints every ' + e + ' steps: time added / train':44s} {r:10.4f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
