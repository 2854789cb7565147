"""Annotation entropy vs per-example learning dynamics in Steele's protocol (docs/spec.md §2, issue 15 item 1).

Prepares the pooled data once (``kss entropy-data``: SNLI bulk rows + the 80% of ChaosNLI-SNLI items that are
trained on and tracked; the other 20% held out), runs the three shipped conditions (MiniLM LoRA r=4, r=16 and
full fine-tuning; ``configs/dynamics/entropy_snli_minilm_*.yaml``) over the seeds, then ``kss entropy`` into
``results/annotation_entropy/`` (the gate, correlations_per_run.csv, claims.csv, verdicts) with each run's wall
time in ``runs.json``. Run directories are those ``kss run`` picks (``runs/dynamics/entropy_snli/<label>-<id>``);
a finished run is reused, so the script can be stopped and restarted.

    .venv/bin/python benchmarks/run_entropy_experiment.py                    # seeds 42 123 456, 2 workers
    .venv/bin/python benchmarks/run_entropy_experiment.py --seeds 42 123 --conditions lora4 fullft
    .venv/bin/python benchmarks/run_entropy_experiment.py --analyse-only     # re-analyse finished runs

Each run is one process with one torch thread (about 20 min for LoRA, 24 for full fine-tuning on this CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("runs/entropy_data/snli")
OUT = Path("results/annotation_entropy")
CONDITIONS = {
    "lora4": "entropy_snli_minilm_lora4",
    "lora16": "entropy_snli_minilm_lora16",
    "fullft": "entropy_snli_minilm_fullft",
}


def run_dir(config: str, seed: int) -> Path:
    """The directory ``kss run <config> train.seed=<seed>`` writes (its label and run id)."""
    from kss_lora.config import load_config
    from kss_lora.run_records import default_run_dir

    return default_run_dir(load_config(config, [f"train.seed={seed}"]))


def finished(path: Path) -> bool:
    """Finished ok (an unreadable result.json is a run to redo, as in ``kss sweep``)."""
    from kss_lora.rundir import RunDirectory

    return RunDirectory(path).state() == "ok"


def plan(seeds: list[int], conditions: list[str]) -> list[tuple[str, str, int]]:
    """(name, shipped config, seed), seed by seed so that an interrupted study has whole seeds."""
    return [(f"{c}-s{s}", CONDITIONS[c], s) for s in seeds for c in conditions]


def execute(runs: list[tuple[str, str, int]], workers: int) -> None:
    """At most ``workers`` runs at a time, each one process with one thread; logs next to the run dirs."""
    kss = str(Path(sys.executable).with_name("kss"))
    pending = [r for r in runs if not finished(run_dir(r[1], r[2]))]
    active: dict[str, tuple[subprocess.Popen, float]] = {}
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    logs = Path("runs/dynamics/entropy_snli")
    logs.mkdir(parents=True, exist_ok=True)
    while pending or active:
        while pending and len(active) < workers:
            name, config, seed = pending.pop(0)
            log = open(logs / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
            cmd = [kss, "run", config, f"train.seed={seed}"]
            active[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), time.time())
            print(f"started {name}", flush=True)
        time.sleep(5)
        for name in [n for n, (p, _) in active.items() if p.poll() is not None]:
            proc, t0 = active.pop(name)
            print(f"finished {name}: exit {proc.returncode} after {time.time() - t0:.0f} s", flush=True)


def analyse(runs: list[tuple[str, str, int]], n_boot: int) -> None:
    """``kss entropy`` over the finished runs, and runs.json with each run's wall time and accuracies."""
    from kss_lora.cli import main
    from kss_lora.rundir import RunDirectory

    done = {name: run_dir(config, seed) for name, config, seed in runs if finished(run_dir(config, seed))}
    if not done:
        raise SystemExit("no finished runs to analyse")
    OUT.mkdir(parents=True, exist_ok=True)
    if main(["entropy", *map(str, done.values()), "-o", str(OUT), "--n-boot", str(n_boot)]) != 0:
        raise SystemExit("kss entropy failed")
    keys = ("wall_time_s", "val_accuracy", "test_accuracy", "train_accuracy", "n_train", "steps")
    table = {}
    for name, path in done.items():
        result = RunDirectory(path).read_result().to_dict()
        table[name] = {"run_dir": str(path), **{k: result.get(k) for k in keys}}
    (OUT / "runs.json").write_text(json.dumps(table, indent=2) + "\n")
    hours = sum(r["wall_time_s"] or 0 for r in table.values()) / 3600
    print(f"wrote {OUT}: {len(table)} runs, {hours:.2f} CPU-hours (one thread each)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 123, 456])
    p.add_argument("--conditions", nargs="+", choices=sorted(CONDITIONS), default=list(CONDITIONS))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--analyse-only", action="store_true")
    args = p.parse_args()
    os.chdir(ROOT)
    runs = plan(args.seeds, args.conditions)
    if not args.analyse_only:
        if not (DATA / "manifest.json").is_file():
            from kss_lora.cli import main as kss

            if kss(["entropy-data", "-o", str(DATA)]) != 0:
                raise SystemExit("kss entropy-data failed")
        execute(runs, args.workers)
    analyse(runs, args.n_boot)


if __name__ == "__main__":
    main()
