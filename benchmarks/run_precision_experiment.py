"""Run the shipped precision experiment and write commit-ready tables and plots.

    .venv/bin/python benchmarks/run_precision_experiment.py precision_gamma_cpu --workers 2
    .venv/bin/python benchmarks/run_precision_experiment.py precision_gamma_cpu --no-run   # tables only

Stages: (1) every (precision, method, seed) run of the spec, each an ordinary ``kss run`` directory
under ``runs_dir`` (finished runs are skipped, so a rerun resumes); (2) ``kss precision``'s probe once
per method, for the underflow fractions each precision condition implies and the gamma sweep;
(3) ``results/precision/``: ``experiment.md``, ``runs.csv``, ``summary.csv``, ``underflow.csv``,
``gamma_sweep.csv``, ``degradation.png``, ``gamma_sweep.png``. No run directories are written there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from kss_lora.cli import _quiet_libraries  # noqa: E402
from kss_lora.precision_lab.experiment import degradation_table, load_spec, run_cells  # noqa: E402
from kss_lora.precision_lab.verdict import condition_quant, probe_methods, write_experiment_report  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("spec", nargs="?", default="precision_gamma_cpu", help="experiment spec (path or shipped name)")
    p.add_argument("--workers", type=int, default=2, help="parallel run processes (default 2)")
    p.add_argument("--seeds", type=int, nargs="*", help="subset of the spec's seeds")
    p.add_argument("--precisions", nargs="*", help="subset of the precision conditions (baseline always kept)")
    p.add_argument("--runs-dir", help="override the spec's runs_dir")
    p.add_argument("--out", default="results/precision", help="where tables and plots go")
    p.add_argument("--no-run", action="store_true", help="only tabulate runs that exist")
    p.add_argument("--no-probe", action="store_true", help="skip the per-method underflow probe")
    args = p.parse_args(argv)
    _quiet_libraries()

    spec = load_spec(args.spec)
    runs_dir = Path(args.runs_dir or spec.runs_dir)
    cells = spec.cells(args.seeds, args.precisions)
    t0 = time.time()
    if args.no_run:
        from kss_lora.precision_lab.experiment import finished

        results = {c.name: r for c in cells if (r := finished(runs_dir / c.name)) is not None}
    else:
        results = run_cells(cells, runs_dir, workers=args.workers)
    run_wall = time.time() - t0
    runs, summary = degradation_table(spec, cells, results)

    probes: dict[str, Any] = {}
    if not args.no_probe:
        t1 = time.time()
        probes = probe_methods(spec, steps=spec.probe_steps)
        print(f"probe: {time.time() - t1:.0f}s")
    out = Path(args.out)
    walls = [r["wall_time_s"] for r in runs if r["wall_time_s"]]
    context = {
        "runs finished": f"{len(walls)} of {len(runs)}",
        "run wall times": f"sum {sum(walls) / 60:.1f} min, median {statistics.median(walls):.0f} s per run"
        if walls
        else "n/a",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs, "
        f"{args.workers} runs in parallel, 1 torch thread each",
    }
    if not args.no_run:
        context["this invocation"] = f"{run_wall / 60:.1f} min of runs"
    write_experiment_report(out, spec, runs, summary, probes, condition_quant(spec), context=context)
    print(
        json.dumps(
            [
                {k: s[k] for k in ("precision", "method", "n", "val_loss_mean", "degradation_mean", "degradation_std")}
                for s in summary
            ],
            indent=1,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
