"""``kss detect CONFIG [overrides]``: run label-noise detectors and write what they found.

Writes to ``-o OUT`` (default ``runs/detect/<config name>``):

- ``suspected_label_errors.csv``: the primary detector's flagged examples, most suspicious first
  (``rank, id, text, given_label, suggested_label, score, flagged`` and ``is_noisy`` when known);
- ``label_issues.csv``: the same columns for every training example (+ ``row``, the data row in the user's
  training file counted from 1, when data.source is file);
- with ``--write-clean FILE``: the user's training file cleaned (``--clean-action drop|relabel``, see
  :mod:`.clean_file`), which ``kss run CONFIG data.train=FILE`` takes as it is;
- ``scores.csv``: every detector's score and flag for every training example;
- ``evaluation.csv`` / ``evaluation_per_class.csv``: P/R/F1 at k and at flags, AUROC, AUPRC, when the
  config injects noise (the truth is then known);
- ``curves.csv``: per checkpoint, each trajectory detector's AUROC / AUPRC / F1 at k and each run's share of
  noisy (and clean) examples whose prediction equals the given label, when the truth is known;
- ``retrain.csv`` with ``--retrain drop|relabel``: test accuracy after cleaning vs ceiling and floor;
- ``summary.json`` and the training runs under ``OUT/runs/``.

Imported by ``kss_lora.cli`` at start-up (``@command`` registers the subcommand).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..commands import command
from ..errors import KSSError


def _int_list(text: str, where: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise KSSError(f"{where}: expected comma-separated integers, got {text!r}") from None


def _add_detect_args(p: argparse.ArgumentParser) -> None:
    from .clean_file import CLEAN_ACTIONS
    from .options import DETECTORS

    p.add_argument("config", help="YAML config path or shipped config name (e.g. agnews-detect)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. noise.rate=0.4 train.seed=1")
    p.add_argument(
        "--detectors",
        default=",".join(DETECTORS),
        help=f"comma-separated subset of: {', '.join(DETECTORS)} (default: all)",
    )
    p.add_argument("-o", "--out", help="output directory (default runs/detect/<config name>)")
    p.add_argument("--rate", type=float, help="known noise rate; estimated by confident learning when absent")
    p.add_argument("--low-rank", type=int, default=1, help="RACT low LoRA rank (default 1)")
    p.add_argument("--high-rank", type=int, default=64, help="RACT high LoRA rank (default 64)")
    p.add_argument(
        "--high-rank-lr",
        type=float,
        help="learning rate of the high-rank run (default train.lr; lr * rank / high-rank keeps its step size)",
    )
    p.add_argument("--curriculum-ranks", default="8", help="ranks of RACT's curriculum stages (default 8)")
    p.add_argument("--curriculum-epochs", type=int, help="epochs per curriculum stage (default train.epochs)")
    p.add_argument(
        "--curriculum-seed",
        default="ract",
        choices=("ract", "ract-final", "ract-low"),
        help="score that picks what the curriculum's first stage drops (default ract, SPEC's)",
    )
    p.add_argument("--folds", type=int, default=3, help="k of the cross-fitting for confident learning (default 3)")
    p.add_argument("--aum-passes", type=int, default=2, help="AUM runs with disjoint threshold samples (default 2)")
    p.add_argument(
        "--dual-noisy",
        default="suspected",
        choices=("suspected", "all"),
        help="dual-lora: the noisy LoRA trains on the suspected examples (default) or is the reference run",
    )
    p.add_argument("--dual-epochs", type=int, help="epochs of the dual-LoRA runs (default train.epochs)")
    p.add_argument("--checkpoints-per-epoch", type=int, default=2, help="eval checkpoints per epoch (default 2)")
    p.add_argument(
        "--eval-examples", type=int, help="validation examples in auxiliary runs (no test pass there); default: all"
    )
    p.add_argument("--primary", help="detector whose ranking the suspected-errors CSV follows")
    p.add_argument(
        "--retrain",
        choices=("none", "drop", "relabel"),
        default="none",
        help="clean with the flags and retrain; compare with the clean-label ceiling and the floor",
    )
    p.add_argument("--retrain-detectors", help="comma-separated detectors to clean with (default: the primary)")
    p.add_argument(
        "--write-clean",
        metavar="FILE",
        help="write the training file (data.source: file) cleaned with the primary detector's flags, same format",
    )
    p.add_argument(
        "--clean-action",
        choices=CLEAN_ACTIONS,
        default="drop",
        help="--write-clean: drop flagged rows (default) or relabel them to the suggested label",
    )
    p.add_argument("--overwrite", action="store_true", help="--write-clean: replace FILE if it exists")


def write_outputs(result: Any, out: Path, *, rows: bool = False) -> dict[str, Any]:
    """Write the CSVs of a :class:`~kss_lora.detect.pipeline.DetectionResult`; return the summary dict.
    ``rows``: the ids are row positions in the user's training file (label_issues.csv gets ``row``)."""
    out.mkdir(parents=True, exist_ok=True)
    from .clean_file import ISSUES_NAME, issues_table

    result.ranked().to_csv(out / "suspected_label_errors.csv", index=False)
    issues_table(result, rows=rows).to_csv(out / ISSUES_NAME, index=False)
    table = pd.DataFrame({"id": result.ids, "given_label": result.labels, "suggested_label": result.suggested_labels})
    if result.is_noisy is not None:
        table["is_noisy"] = result.is_noisy_column()
        table["clean_label"] = pd.array(np.where(result.truth_known(), result.clean_labels, None), dtype="Int64")
    for d, s in result.scores.items():
        table[f"score_{d}"] = s
        table[f"flag_{d}"] = result.flags[d]
    table.to_csv(out / "scores.csv", index=False)
    summary: dict[str, Any] = {
        "n": int(result.ids.size),
        "primary": result.primary,
        "rate_estimate": result.rate_estimate,
        "rate_source": result.rate_source,
        "n_flagged": {d: int(f.sum()) for d, f in result.flags.items()},
        "runs": {k: str(v) for k, v in result.runs.items()},
        "extras": {k: v for k, v in result.extras.items() if not isinstance(v, np.ndarray)},
        "costs": result.costs,
        "timings": result.timings,
        "run_health": result.run_health,
        "near_prior": {d: names for d, names in result.near_prior.items() if names},
    }
    if result.curves:
        pd.DataFrame(result.curves).to_csv(out / "curves.csv", index=False)
    evaluation = result.evaluation()
    if evaluation is not None:
        evaluation.to_csv(out / "evaluation.csv", index=False)
        result.evaluation_per_class().to_csv(out / "evaluation_per_class.csv", index=False)
        summary["noise_rate_true"] = result.noise_rate_true
        if result.scored is not None:
            summary["n_scored"] = int(result.scored.sum())
        summary["evaluation"] = evaluation.to_dict(orient="records")
    return summary


@command("detect", "find label errors in a training set (RACT reconstruction and baselines)")(_add_detect_args)
def _detect(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..output_paths import check_output_dir
    from .clean_file import check_clean_target, write_clean_file
    from .options import NEAR_PRIOR_MARGIN
    from .pipeline import detect_label_issues
    from .retrain import bounds, clean_and_retrain, retrain_table
    from .training import DetectionRunFailed

    cfg = load_config(args.config, args.overrides)
    detectors = [d.strip() for d in args.detectors.split(",") if d.strip()]
    out = check_output_dir(args.out or Path("runs") / "detect" / Path(args.config).stem, "--out")
    clean_target = None
    if args.write_clean:  # checked before any training: a bad target is one line, nothing written
        clean_target = check_clean_target(cfg, args.write_clean, action=args.clean_action, overwrite=args.overwrite)
    try:
        result = detect_label_issues(
            cfg,
            out / "runs",
            detectors=detectors,
            rate=args.rate,
            low_rank=args.low_rank,
            high_rank=args.high_rank,
            high_rank_lr=args.high_rank_lr,
            curriculum_ranks=_int_list(args.curriculum_ranks, "--curriculum-ranks"),
            curriculum_epochs=args.curriculum_epochs,
            curriculum_seed=args.curriculum_seed,
            folds=args.folds,
            aum_passes=args.aum_passes,
            dual_noisy=args.dual_noisy,
            dual_epochs=args.dual_epochs,
            checkpoints_per_epoch=args.checkpoints_per_epoch,
            eval_examples=args.eval_examples,
            primary=args.primary,
        )
        summary = write_outputs(result, out, rows=cfg.data.source == "file")
        if clean_target is not None:
            cleaned = write_clean_file(cfg, result, clean_target, action=args.clean_action)
            summary["clean_file"] = cleaned.summary()
        if args.retrain != "none":
            chosen = [d.strip() for d in (args.retrain_detectors or result.primary).split(",") if d.strip()]
            unknown = [d for d in chosen if d not in result.flags]
            if unknown:
                raise KSSError(f"--retrain-detectors: {unknown[0]!r} was not run; run: {', '.join(result.flags)}")
            floor = result.run_results.get("reference")
            rows = bounds(cfg, out / "runs", floor_result=floor)
            for d in chosen:
                rows.append(
                    clean_and_retrain(
                        cfg,
                        result.flags[d],
                        out / "runs",
                        action=args.retrain,
                        suggested_labels=result.suggested_labels,
                        name=f"{args.retrain}-{d}",
                    )
                )
            table = retrain_table(rows)
            table.to_csv(out / "retrain.csv", index=False)
            summary["retrain"] = table.to_dict(orient="records")
    except DetectionRunFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    cols = ["detector", "f1_at_k", "f1_flags", "auroc", "auprc"]
    if "evaluation" in summary:
        print(pd.DataFrame(summary["evaluation"])[cols].to_string(index=False, float_format="%.3f"))
    for d, names in summary["near_prior"].items():
        print(
            f"warning: {d} reads run(s) {', '.join(names)} whose validation accuracy does not beat the "
            f"majority-class rate by {NEAR_PRIOR_MARGIN:.2f} (diverged or collapsed: lower train.lr, or "
            "--high-rank-lr for rank-high)",
            file=sys.stderr,
        )
    print(
        f"rate estimate {result.rate_estimate:.3f} ({result.rate_source}); "
        f"{int(result.flags[result.primary].sum())} flagged by {result.primary}; wrote {out}"
    )
    if "clean_file" in summary:
        c = summary["clean_file"]
        what = "dropped" if c["action"] == "drop" else f"relabelled {c['relabelled']} of"
        print(f"cleaned training file {c['path']}: {what} {c['flagged']} flagged rows, {c['rows_out']} rows")
    return 0
