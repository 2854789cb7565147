"""The ``kss`` command line. Each subcommand is a thin shell over a library function.

Errors the user can fix (bad config, bad data, bad arguments) print one line and exit with code 2.
A run that starts but fails (e.g. the loss diverges) is recorded in its ``result.json`` and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from . import __version__
from .commands import COMMANDS, command, quiet_libraries
from .errors import KSSError

# Kept for scripts that import it from here (benchmarks/); the registry and this helper live in .commands.
_quiet_libraries = quiet_libraries


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config path or shipped config name (see `kss configs`)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. method.preset=kss-sparse train.seed=1")
    p.add_argument("--run-dir", help="write the run here instead of output.dir/<name>")
    p.add_argument(
        "--launcher",
        choices=("none", "accelerate", "torchrun"),
        help="start data-parallel processes (overrides launcher.name)",
    )
    p.add_argument(
        "--profile",
        help="ddp (replicated weights), fsdp2 (sharded) or an accelerate config file (overrides launcher.profile)",
    )
    p.add_argument("--nproc", type=int, help="processes per machine (overrides launcher.num_processes)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue a killed run from its run directory's checkpoint (train.checkpoint_every; same config)",
    )


@command("run", "train one run and write its run directory")(_add_run_args)
def _run(args: argparse.Namespace) -> int:
    from .config import load_config

    overrides = list(args.overrides)
    for flag, key in (
        (args.launcher, "launcher.name"),
        (args.profile, "launcher.profile"),
        (args.nproc, "launcher.num_processes"),
    ):
        if flag is not None:
            overrides.append(f"{key}={flag}")
    cfg = load_config(args.config, overrides)
    from . import launch

    if cfg.launcher.name != "none" and not launch.launched():
        child = ["run", args.config, *overrides] + (["--run-dir", args.run_dir] if args.run_dir else [])
        child += ["--resume"] if args.resume else []
        return launch.relaunch(cfg.launcher, child)
    from .lab.tracking import metrics_stream
    from .runner import default_run_dir, run

    main_rank = int(os.environ.get("RANK", "0")) == 0  # only rank 0 writes metrics, so only it streams them
    stream = metrics_stream(cfg, args.run_dir or default_run_dir(cfg)) if main_rank else None
    try:
        result = run(cfg, args.run_dir, resume=args.resume, on_metrics=stream)
    finally:
        launch.shutdown_distributed()
    if int(os.environ.get("RANK", "0")) != 0:  # data-parallel: rank 0 speaks for the run
        return 0 if result["status"] == "ok" else 1
    from .run_result import RunResult
    from .run_summary import human_summary
    from .runner import default_run_dir

    # For a person on stderr; the JSON line stays the last line of stdout, for scripts.
    where = args.run_dir or default_run_dir(cfg)
    print(human_summary(result, where, task=cfg.model.task), file=sys.stderr)
    print(json.dumps(RunResult.from_dict(result).summary(cfg.model.task)))
    if result["status"] != "ok":
        print(f"error: run failed: {result.get('error')}", file=sys.stderr)
        return 1
    return 0


@command("configs", "list the configs shipped with the package")(lambda p: None)
def _configs(args: argparse.Namespace) -> int:
    from .config import shipped_configs

    for name, path in sorted(shipped_configs().items()):
        print(f"{name:32s} {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    register_feature_commands()
    parser = argparse.ArgumentParser(prog="kss", description="KSS-LoRA fine-tuning and measurement lab")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.add_args(p)
        p.set_defaults(handler=cmd.handler)
    return parser


def register_feature_commands() -> None:
    """Import each feature's command module; its ``@command`` decorators register its subcommands.

    Named one by one (no discovery): this list is what ``kss`` offers, and the import graph test reads it.
    """
    from . import predict_cli
    from .detect import cli as detect_cli
    from .dynamics import cli as dynamics_cli
    from .eval import cli as eval_cli
    from .lab import cli as lab_cli
    from .precision_lab import cli as precision_cli

    del lab_cli, dynamics_cli, detect_cli, precision_cli, eval_cli, predict_cli  # imported for their registrations


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_libraries()
    parser = build_parser()
    # key=value overrides may come after options (`kss run cfg --run-dir d lr=1`): argparse stops
    # collecting the positional list at the first option, so pick the stragglers up here.
    args, extra = parser.parse_known_args(argv)
    stray = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        return int(args.handler(args) or 0)
    except KSSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def entry() -> Any:
    from .optional_imports import defer_torchao

    # The process is ours (the `kss` command), so hide torchao before transformers loads: it is imported only
    # for precision.mode fp8. Not in main(), which Python callers (tests) share a process with.
    defer_torchao()
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`kss sweep --dry-run | head`): not an error of ours, and no traceback. Point
        # stdout at devnull so the interpreter's final flush does not raise again.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141  # 128 + SIGPIPE, what a shell reports for a command killed by a closed pipe
    sys.exit(code)


if __name__ == "__main__":
    entry()
