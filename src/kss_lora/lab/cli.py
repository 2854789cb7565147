"""``kss sweep``, ``kss ls``, ``kss aggregate``, ``kss report``, ``kss mirror``: thin shells over the lab's functions.

Imported by ``kss_lora.cli`` at start-up; each ``@command`` registers a subcommand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..commands import command
from ..errors import KSSError


def _add_sweep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", help="sweep YAML path or shipped sweep name (see `kss sweep --list`)", nargs="?")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the base config, e.g. train.epochs=1")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=[V1,V2]",
        help="replace (or add) a grid axis, e.g. --grid train.seed=[0,1]",
    )
    p.add_argument("--executor", choices=("sequential", "local", "ray", "slurm"), help="default: the sweep file's")
    p.add_argument("--workers", type=int, help="parallel runs (local: processes; ray/slurm: concurrency)")
    p.add_argument("--runs-dir", help="default: the sweep file's runs_dir, else runs/<name>")
    p.add_argument("--retry-failed", action="store_true", help="run failed points again (finished ok runs never are)")
    p.add_argument("--dry-run", action="store_true", help="list the points and their state; run nothing")
    p.add_argument("--list", action="store_true", help="list the shipped sweeps")
    p.add_argument("--no-progress", action="store_true", help="no progress output")


@command("sweep", "expand a sweep (base config x grid) into runs and run what is not finished")(_add_sweep_args)
def _sweep(args: argparse.Namespace) -> int:
    from .sweep import adopt_finished, expand, load_sweep, point_state, run_sweep, shipped_sweeps

    if args.list or not args.sweep:
        for name, path in sorted(shipped_sweeps().items()):
            print(f"{name:32s} {path}")
        if not args.list:
            print("error: name a sweep file or one of the shipped sweeps above", file=sys.stderr)
        return 0 if args.list else 2
    spec = load_sweep(args.sweep, args.overrides, args.grid)
    if args.runs_dir:
        spec.runs_dir = Path(args.runs_dir)
    if args.workers is not None and args.workers < 1:
        raise KSSError(f"--workers must be at least 1, got {args.workers}")
    if args.dry_run:
        points = adopt_finished(expand(spec), spec.runs_dir)
        print(f"{spec.name}: {len(points)} runs in {spec.runs_dir}")
        for p in points:
            print(f"  {point_state(spec.runs_dir / p.name, p.run_id):10s} {p.name}")
        return 0
    summary = run_sweep(
        spec,
        executor=args.executor,
        workers=args.workers,
        retry_failed=args.retry_failed,
        progress=not args.no_progress,
    )
    print(
        f"{spec.name}: {summary.total} runs: {summary.skipped} already finished, {summary.done} done, "
        f"{summary.failed} failed, {summary.lost} lost (redone next time) in {summary.wall_s:.0f} s; "
        f"runs in {spec.runs_dir}"
    )
    if summary.corrupt:
        print(f"{summary.corrupt} runs had an unreadable record (corrupt) and were run again", file=sys.stderr)
    earlier = summary.still_failed - summary.failed
    if earlier:
        print(f"{earlier} runs failed in an earlier invocation (rerun them with --retry-failed)", file=sys.stderr)
    return 0 if summary.ok else 1


def _add_ls_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs_dir", help="a directory of run directories (a sweep's runs_dir)")
    p.add_argument(
        "--sweep",
        action="append",
        help="only this sweep's runs, labelled as it labels them (runs dirs can be shared); repeatable",
    )
    p.add_argument("--status", choices=("ok", "failed", "unfinished", "corrupt"), help="only runs with this status")
    p.add_argument("--csv", help="also write the full table of runs as CSV here")


@command("ls", "list the runs in a runs directory")(_add_ls_args)
def _ls(args: argparse.Namespace) -> int:
    from ..output_paths import check_output_file
    from .registry import format_runs, load_runs, points_not_run

    if args.csv:
        check_output_file(args.csv, "--csv")
    runs = load_runs(args.runs_dir, sweep=args.sweep)
    if args.status:
        runs = runs[runs["status"] == args.status]
    not_started = len(points_not_run(args.runs_dir, args.sweep))
    print(format_runs(runs, not_started=not_started))
    if args.csv:
        runs.to_csv(args.csv, index=False)
    return 0


def _add_aggregate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs_dir")
    p.add_argument(
        "--sweep",
        action="append",
        help="only this sweep's runs, labelled as it labels them (runs dirs can be shared); repeatable",
    )
    p.add_argument("--baseline", help="baseline arm (default: the sweep's baseline, else 'standard')")
    p.add_argument("--csv", help="write the tidy per-condition table as CSV")
    p.add_argument("--markdown", help="write the main columns as a Markdown table")


@command("aggregate", "per-condition statistics of a runs directory vs a baseline (CSV / Markdown)")(
    _add_aggregate_args
)
def _aggregate(args: argparse.Namespace) -> int:
    from ..output_paths import check_output_file
    from .registry import default_baseline, load_runs
    from .stats import aggregate, to_markdown

    for path, flag in ((args.csv, "--csv"), (args.markdown, "--markdown")):
        if path:
            check_output_file(path, flag)  # before any work: a folder named as the file is a one-line error
    runs = load_runs(args.runs_dir, sweep=args.sweep)
    table = aggregate(runs, baseline=args.baseline or default_baseline(args.runs_dir, runs, sweep=args.sweep))
    md = to_markdown(table)
    if args.csv:
        table.to_csv(args.csv, index=False)
    if args.markdown:
        Path(args.markdown).write_text(md + "\n")
    print(md)
    return 0


def _add_report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs_dir", help="a runs directory, or a runs.csv written by an earlier report")
    p.add_argument(
        "--sweep",
        action="append",
        help="only this sweep's runs, labelled as it labels them (runs dirs can be shared); repeatable",
    )
    p.add_argument("-o", "--output", default="report", help="output directory (default: report/)")
    p.add_argument("--baseline", help="baseline arm (default: the sweep's baseline, else 'standard')")
    p.add_argument("--title", help="page title")
    p.add_argument(
        "--claims",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="judge the published KSS-LoRA claims after your results and write claims.csv (default: --claims)",
    )


@command("report", "write an HTML report (plus PNG figures and a Markdown summary) of a runs directory")(
    _add_report_args
)
def _report(args: argparse.Namespace) -> int:
    from .report import write_report

    paths = write_report(
        args.runs_dir, args.output, baseline=args.baseline, title=args.title, sweep=args.sweep, claims=args.claims
    )
    for kind, path in paths.items():
        print(f"{kind:9s} {path}")
    return 0


def _add_mirror_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs_dir")
    p.add_argument(
        "--to",
        action="append",
        required=True,
        choices=("mlflow", "tensorboard", "wandb"),
        help="mirror target (repeatable)",
    )
    p.add_argument("--experiment", help="experiment / project name (default: the runs directory's name)")


@command("mirror", "copy every run of a runs directory to MLflow, TensorBoard or W&B")(_add_mirror_args)
def _mirror(args: argparse.Namespace) -> int:
    from .tracking import mirror_runs

    count, failures = mirror_runs(args.runs_dir, args.to, experiment=args.experiment, report_failures=True)
    print(f"mirrored {count} runs to {', '.join(args.to)}", file=sys.stderr)
    if failures:
        print(f"error: {failures} copies failed (see the warnings above)", file=sys.stderr)
        return 1
    return 0
