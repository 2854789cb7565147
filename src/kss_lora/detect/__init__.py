"""Label-noise detection: RACT (reconstructed) and baselines, one cleanlab-style API.

- :mod:`.scores`: pure per-example scores (higher = more suspicious) and :func:`flag_top`.
- :mod:`.evaluate`: precision/recall/F1 at k and at flags, AUROC, AUPRC, per class.
- :mod:`.estimate`: noise-rate estimation (confident learning), so flags need no oracle.
- :mod:`.pipeline`: :func:`detect_label_issues` trains what the detectors need and scores them
  (:mod:`.options`: its options and result; :mod:`.dual_lora`: the Delora-style detector).
- :mod:`.curves`: each detector's AUROC and each run's fitted share of noisy labels per checkpoint.
- :mod:`.human`: ChaosNLI's original labels vs the 100-vote majority (real human label errors).
- :mod:`.retrain`: clean (drop/relabel) and retrain against the clean-label ceiling and the noisy floor.

RACT ("Rank-Aware Curriculum Training", Steele, "Why LoRA Resists Label Noise") has no public algorithm;
what is here is the reconstruction of docs/spec.md §2. See docs/detection.md.
"""

from .curves import detector_curves, fitted_curves, prefix_scorers
from .estimate import estimate_noise_rate, noise_joint
from .evaluate import evaluate_detection, evaluate_per_class, evaluate_per_group, prf
from .human import HumanLabels, chaosnli_human_labels
from .options import DETECTORS, DetectionResult, DetectOptions
from .pipeline import cross_fit_folds, detect_label_issues
from .retrain import bounds, clean_and_retrain, retrain_table
from .scores import (
    aulc_scores,
    aum_scores,
    aum_threshold,
    cartography_scores,
    flag_top,
    forgetting_scores,
    hard_to_learn,
    rank_discrepancy_scores,
    self_confidence_scores,
    small_loss_scores,
)

__all__ = [
    "DETECTORS",
    "DetectOptions",
    "DetectionResult",
    "HumanLabels",
    "aulc_scores",
    "aum_scores",
    "aum_threshold",
    "bounds",
    "cartography_scores",
    "chaosnli_human_labels",
    "clean_and_retrain",
    "cross_fit_folds",
    "detect_label_issues",
    "detector_curves",
    "estimate_noise_rate",
    "evaluate_detection",
    "evaluate_per_class",
    "evaluate_per_group",
    "fitted_curves",
    "flag_top",
    "forgetting_scores",
    "hard_to_learn",
    "noise_joint",
    "prefix_scorers",
    "prf",
    "rank_discrepancy_scores",
    "retrain_table",
    "self_confidence_scores",
    "small_loss_scores",
]
