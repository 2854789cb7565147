"""Generation-free benchmarks of base models and trained adapters (TruthfulQA MC1/MC2)."""

from .truthfulqa import (
    LoglikScorer,
    MCItem,
    Request,
    TruthfulQAResult,
    evaluate_truthfulqa,
    load_truthfulqa,
    mc_scores,
)

__all__ = [
    "LoglikScorer",
    "MCItem",
    "Request",
    "TruthfulQAResult",
    "evaluate_truthfulqa",
    "load_truthfulqa",
    "mc_scores",
]
