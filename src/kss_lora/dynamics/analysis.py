"""The dynamics analyses in one import: reading runs back, per-example tables, capacity, the entropy analysis.

Each job has its own module; this one re-exports their public names (``kss dynamics``/``kss entropy``/
``kss optimal-rank`` and the tests import them from here):

- :mod:`.runs`: one run directory read back (:class:`RunInfo`, :func:`load_run`, :func:`find_runs`) and the
  ChaosNLI rows behind its items (:func:`chaosnli_items`).
- :mod:`.tables`: per-example tables of one run (:func:`run_tables`) and clean-vs-noisy separation over time
  (:func:`run_separation`).
- :mod:`.run_capacity`: the run's LoRA capacity against its training-set size (:func:`run_capacity`).
- :mod:`.entropy_analysis`: Steele's annotation-entropy analysis over many runs (:func:`entropy_analysis`,
  :func:`correlate`, :func:`item_frame`, the accuracy gate :func:`run_gate`); :mod:`.entropy_verdicts` judges
  his two claims; :mod:`.entropy_report` writes it as Markdown; :mod:`.entropy_data` builds the study's data.
- :mod:`.optimal_rank`: the best LoRA rank per noise rate (:func:`optimal_rank`).
"""

from __future__ import annotations

from .entropy_analysis import (
    CONFOUNDERS,
    GATE_MARGIN,
    PAPER_RHO_RANGE,
    PRIOR,
    EntropyReport,
    correlate,
    entropy_analysis,
    item_frame,
    run_gate,
)
from .entropy_report import entropy_markdown
from .optimal_rank import RANK_METRICS, optimal_rank
from .run_capacity import run_capacity
from .runs import RunInfo, chaosnli_items, find_runs, load_run
from .tables import SOURCES, per_epoch_heldout, run_separation, run_tables

__all__ = [
    "CONFOUNDERS",
    "GATE_MARGIN",
    "PAPER_RHO_RANGE",
    "PRIOR",
    "RANK_METRICS",
    "SOURCES",
    "EntropyReport",
    "RunInfo",
    "chaosnli_items",
    "correlate",
    "entropy_analysis",
    "entropy_markdown",
    "find_runs",
    "item_frame",
    "load_run",
    "optimal_rank",
    "run_gate",
    "per_epoch_heldout",
    "run_capacity",
    "run_separation",
    "run_tables",
]
