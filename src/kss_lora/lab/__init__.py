"""The lab: sweeps you can kill and resume, a registry of runs, statistics over seeds, and reports.

Public API (the CLI is ``kss sweep`` / ``kss ls`` / ``kss aggregate`` / ``kss report`` / ``kss mirror``)::

    from kss_lora.lab import load_sweep, run_sweep, load_runs, aggregate, evaluate_claims, write_report

    spec = load_sweep("five_config_cpu")               # shipped name or a YAML path
    summary = run_sweep(spec, executor="local", workers=2)
    runs = load_runs(spec.runs_dir)                     # one row per run directory (pandas)
    table = aggregate(runs, baseline="standard")        # one row per condition, vs the baseline
    claims = evaluate_claims(runs)                      # docs/spec.md §4 claims: measured number, CI, verdict
    write_report(spec.runs_dir, "report/")              # index.html + summary.md + PNGs

Modules: ``sweep`` (spec, expansion, resume), ``executors`` (sequential/local/ray/slurm), ``registry``
(runs → table), ``stats`` (Welch, Mann-Whitney, bootstrap, overlap, aggregation), ``claims`` (verdicts),
``figures`` and ``report`` (the page), ``tracking`` (MLflow / TensorBoard / W&B mirrors), ``cli``.
"""

from importlib import import_module
from typing import Any

# Lazy: `kss` imports kss_lora.lab.cli at start-up, and pandas / scipy / matplotlib should load only when used.
_WHERE = {
    "ClaimResult": "claims",
    "evaluate_claims": "claims",
    "load_curves": "registry",
    "load_runs": "registry",
    "write_report": "report",
    "aggregate": "stats",
    "bootstrap_ci": "stats",
    "mannwhitney_p": "stats",
    "ranges_overlap": "stats",
    "welch_p": "stats",
    "SweepPoint": "sweep",
    "SweepSpec": "sweep",
    "SweepSummary": "sweep",
    "expand": "sweep",
    "load_sweep": "sweep",
    "parse_sweep": "sweep",
    "run_sweep": "sweep",
    "shipped_sweeps": "sweep",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
