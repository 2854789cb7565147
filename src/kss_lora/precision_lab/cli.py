"""``kss precision RUN_CONFIG [overrides] [--steps N]``: what FP8/FP4 would do to this run's tensors.

Builds the run exactly as ``kss run`` would (model, adapters, data) but in float32, trains it for a
few steps while observing every Linear (see :mod:`kss_lora.precision_lab.probe`), and writes per-layer and
summary tables (CSV + Markdown), a gamma sweep of the LoRA update and a plot to
``<output.dir>/precision-<run_id>/`` (or ``--out``). Prints one JSON line with the headline numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

from kss_lora.commands import command
from kss_lora.errors import ConfigError
from kss_lora.precision_lab.probe import DEFAULT_GAMMAS, FORMAT_NAMES, SCALINGS


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML run config path or shipped config name (see `kss configs`)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. method.preset=standard")
    p.add_argument("--steps", type=int, default=3, help="training steps to observe (default 3)")
    p.add_argument("--out", help="output directory (default <output.dir>/precision-<run_id>)")
    p.add_argument("--gammas", type=float, nargs="+", help="gammas of the sweep (default 2^-8 .. 4)")
    p.add_argument("--formats", nargs="+", default=list(FORMAT_NAMES), help="formats (default e4m3 e5m2 e2m1)")
    p.add_argument(
        "--max-elements",
        type=int,
        default=1 << 16,
        help="values sampled per tensor and step, as whole rows (default 65536)",
    )


def check_args(args: argparse.Namespace) -> None:
    """Bad arguments are one-line ConfigErrors, before any model is loaded."""
    from kss_lora.precision.formats import get_format

    if args.steps < 1:
        raise ConfigError("--steps", f"must be at least 1, got {args.steps}")
    if args.max_elements < 1:
        raise ConfigError("--max-elements", f"must be at least 1, got {args.max_elements}")
    for g in args.gammas or ():
        if not (math.isfinite(g) and g > 0):
            raise ConfigError("--gammas", f"must be positive and finite, got {g}")
    for f in args.formats:
        get_format(f, "--formats")


@command("precision", "measure FP8/FP4 underflow, saturation and error per layer and tensor, and a γ sweep")(_add_args)
def _precision(args: argparse.Namespace) -> int:
    check_args(args)
    from kss_lora.config import PrecisionConfig, load_config
    from kss_lora.output_paths import check_output_dir
    from kss_lora.precision_lab.probe import probe_run
    from kss_lora.precision_lab.report import write_probe_outputs
    from kss_lora.runner import Run

    cfg = load_config(args.config, args.overrides)
    out = check_output_dir(args.out or Path(cfg.output.dir) / f"precision-{cfg.run_id()}", "--out")
    # Probe in float32: the question is what each format would do, so no format may be applied already.
    run = Run(dataclasses.replace(cfg, precision=PrecisionConfig()))
    formats = [f.lower() for f in args.formats]
    result = probe_run(
        run,
        args.steps,
        gammas=args.gammas or DEFAULT_GAMMAS,
        max_elements=args.max_elements,
        formats=formats,
        seed=cfg.train.seed,
    )
    context = {
        "config": args.config,
        "overrides": " ".join(args.overrides) or "none",
        "model": cfg.model.name,
        "method": run.method.label(),
        "gamma": run.method.gamma,
        "steps observed": args.steps,
        "probe precision": "float32 (the run's precision.mode is not applied)",
        "configured precision.mode": cfg.precision.mode,
        "LoRA layers": result.lora_layers,
        "loss per step": ", ".join(f"{x:.4f}" for x in result.losses),
    }
    if not result.gamma_rows:
        context["γ sweep"] = "skipped: the model has no LoRA layers"
    paths = write_probe_outputs(out, result, context=context, formats=formats, scalings=[s[0] for s in SCALINGS])
    headline = {
        f"{r['tensor']}/{r['format']}/{r['scaling']}": round(r["underflow_frac"], 4)
        for r in result.summary
        if r["tensor"] in ("base_grad_output", "lora_update") and r["scaling"] in ("none", "tensor")
    }
    print(
        json.dumps(
            {
                "out": str(out),
                "steps": args.steps,
                "lora_layers": result.lora_layers,
                "underflow": headline,
                "files": sorted(p.name for p in paths.values()),
            }
        )
    )
    return 0
