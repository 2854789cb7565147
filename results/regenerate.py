"""Rebuild the committed reports under results/ from their committed per-run tables (no training).

    PYTHONPATH=src python results/regenerate.py            # every folder below
    PYTHONPATH=src python results/regenerate.py five_config

Lab folders: ``kss report <folder>/runs.csv`` into a scratch directory, then the folder's README becomes its
hand-written preamble (everything above the generated title, kept as it is) followed by the new summary; the
report's claims.csv, conditions.csv and figures are copied beside it. ``loss_curves.png`` needs the run
directories' per-epoch metrics, which are not committed, so it stays as drawn from the original runs.
Precision, TruthfulQA and noise detection write their claims.csv (and a verdicts section) from their own committed tables.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
LAB = {  # folder: baseline arm of its sweep
    "five_config": "standard",
    "noise_sweep": "standard",
    "low_gamma": "kss ρ=0",
    "sparsity_sweep": "kss ρ=0",
    "overfit_encoder": "standard",
    "overfit_encoder_noise": "standard",
    "truthfulqa_sft": "standard",
    "truthfulqa_sft_noise": "standard",
    "rank_sweep": "dense γ=1.0",
}
COPIED = ("claims.csv", "conditions.csv", "run_tiles.png", "gap_vs_noise.png", "gap_vs_sparsity.png", "gap_vs_rank.png")


def lab_folder(name: str, baseline: str) -> None:
    from kss_lora.lab.report import write_report

    folder = HERE / name
    readme = (folder / "README.md").read_text()
    marker = readme.index("\n# KSS-LoRA lab report")
    preamble, title = readme[:marker], readme[marker + 3 :].splitlines()[0]
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(folder / "loss_curves.png", Path(tmp) / "loss_curves.png")
        paths = write_report(folder / "runs.csv", tmp, baseline=baseline, title=title)
        summary = paths["markdown"].read_text()
        for file in COPIED:
            if (Path(tmp) / file).is_file():
                shutil.copy(Path(tmp) / file, folder / file)
    (folder / "README.md").write_text(preamble.rstrip("\n") + "\n\n" + summary.rstrip("\n") + "\n")
    print(f"{name}: README.md, claims.csv, conditions.csv, figures")


def main(names: list[str]) -> int:
    for name in names or [*LAB, "precision", "truthfulqa", "truthfulqa_one_adapter", "noise_detection"]:
        if name in LAB:
            lab_folder(name, LAB[name])
        elif name == "precision":
            from kss_lora.precision_lab.verdict import write_precision_claims

            write_precision_claims(HERE / "precision")
            print("precision: runs.csv (condition column), claims.csv, verdicts.md")
        elif name == "truthfulqa":
            from kss_lora.eval.truthfulqa_runs import write_sweep_claims

            write_sweep_claims(HERE / "truthfulqa")
            print("truthfulqa: runs.csv (scores.csv + condition), claims.csv, verdicts.md")
        elif name == "truthfulqa_one_adapter":
            from kss_lora.eval.truthfulqa import write_truthfulqa_claims

            write_truthfulqa_claims(HERE / "truthfulqa_one_adapter")
            print("truthfulqa_one_adapter: runs.csv (per question), claims.csv, verdicts.md")
        elif name == "noise_detection":
            from kss_lora.detect.evaluate import write_detection_claims

            write_detection_claims(HERE / "noise_detection")
            print("noise_detection: runs.csv (detection.csv + condition), claims.csv, verdicts.md")
        else:
            print(f"error: unknown results folder {name!r}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
