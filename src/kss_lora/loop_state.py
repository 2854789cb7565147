"""The epoch loop's own state, kept in one object so that a checkpoint can save it and a resumed run restore it.

:class:`LoopState` is where the loop is (epoch, position in the epoch's permutation, optimizer step), what it has
measured (epoch rows, the running loss of the epoch in progress, how many metrics lines it wrote), and the two
watchers that can end a run: early stopping on validation loss (:meth:`LoopState.evaluated`) and the divergence
guard on the training loss (:meth:`LoopState.check_divergence`). :class:`ProgressLine` is the log-friendly
progress report used when stderr is not a terminal.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from .errors import ConfigError, TrainingDiverged
from .run_result import DIVERGED_PREFIX

# A finite blow-up: a step's training loss this many times the first step's (the first floored at 0.01 nats, so
# that a run starting near zero loss is not called diverged for reaching 1 nat).
DIVERGENCE_FACTOR = 1e4
_FIRST_LOSS_FLOOR = 1e-2


@dataclass
class LoopState:
    """Position, measurements and early-stopping bookkeeping of one run's epoch loop (JSON round trip)."""

    epoch: int = 1
    position: int = 0  # index in the epoch's permutation of the next batch
    step: int = 0
    order_state: dict[str, Any] | None = None  # the data-order generator before this epoch's permutation
    running_sum: float = 0.0
    running_n: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)  # epoch rows
    metrics_lines: int = 0  # lines of metrics.jsonl written so far
    first_loss: float | None = None
    best_val_loss: float | None = None
    best_epoch: int | None = None
    best_step: int | None = None
    evaluations_since_best: int = 0
    stopped_early: bool = False
    elapsed_s: float = 0.0  # training time before a resume

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoopState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def running_loss(self) -> float:
        return self.running_sum / max(self.running_n, 1)

    def evaluated(self, val_loss: float, patience: int | None) -> tuple[bool, bool]:
        """Record one validation evaluation; returns (it is the best so far, patience is exhausted)."""
        best = self.best_val_loss is None or val_loss < self.best_val_loss
        if best:
            self.best_val_loss, self.best_epoch, self.best_step = val_loss, self.epoch, self.step
            self.evaluations_since_best = 0
        else:
            self.evaluations_since_best += 1
        stop = patience is not None and self.evaluations_since_best >= patience
        self.stopped_early = self.stopped_early or stop
        return best, stop

    def check_divergence(self, step_loss: float, step: int) -> None:
        """Raise :class:`TrainingDiverged` when a step's mean training loss blew up (finite or not)."""
        if not math.isfinite(step_loss):
            raise TrainingDiverged(f"{DIVERGED_PREFIX}training loss became {step_loss} at step {step}")
        if self.first_loss is None:
            self.first_loss = step_loss
            return
        bound = DIVERGENCE_FACTOR * max(self.first_loss, _FIRST_LOSS_FLOOR)
        if step_loss > bound:
            raise TrainingDiverged(
                f"{DIVERGED_PREFIX}training loss {step_loss:.4g} at step {step} is over {DIVERGENCE_FACTOR:g} times "
                f"the first step's {self.first_loss:.4g}"
            )

    def check_val_divergence(self, val_loss: float) -> None:
        if self.first_loss is not None and val_loss > DIVERGENCE_FACTOR * max(self.first_loss, _FIRST_LOSS_FLOOR):
            raise TrainingDiverged(
                f"{DIVERGED_PREFIX}val_loss {val_loss:.4g} at step {self.step} is over {DIVERGENCE_FACTOR:g} times "
                f"the first training step's loss {self.first_loss:.4g}"
            )


class ProgressLine:
    """A plain line to stderr at every 10% of the run (step, epoch, loss, elapsed) when it is not a terminal.

    A terminal gets tqdm's bar instead; a log file gets these ten lines rather than thousands of bar redraws.
    """

    def __init__(self, total: int, *, enabled: bool, t0: float, stream: TextIO | None = None):
        self.total, self.t0 = max(total, 1), t0
        self.stream = stream or sys.stderr
        self.enabled = enabled and not _is_terminal(self.stream)
        self.next_tenth = 1

    def update(self, step: int, epoch: int, loss: float) -> None:
        if not self.enabled:
            return
        tenth = min(10, step * 10 // self.total)
        if tenth >= self.next_tenth:  # one line per crossing, however many tenths a step crossed
            self.next_tenth = tenth + 1
            print(
                f"[kss] {tenth * 10}% step {step}/{self.total} epoch {epoch} loss {loss:.4f} "
                f"elapsed {time.time() - self.t0:.1f}s",
                file=self.stream,
                flush=True,
            )


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def check_loop_options(cfg: Any, *, sharded: bool) -> None:
    """Refuse, before anything is written, loop settings that cannot be honoured together."""
    tc = cfg.train
    if sharded and (tc.checkpoint_every or tc.restore_best):
        raise ConfigError(
            "train.checkpoint_every", "checkpoints and restore_best need replicated weights, not FSDP2 sharding"
        )
    if tc.checkpoint_every and cfg.tracking.per_example:
        raise ConfigError(
            "train.checkpoint_every", "cannot be combined with tracking.per_example (the dynamics record is not saved)"
        )
    if tc.restore_best and tc.early_stopping_patience is None and not tc.eval_every_steps and tc.epochs < 2:
        raise ConfigError("train.restore_best", "needs more than one evaluation (epochs >= 2 or eval_every_steps)")


def progress_bar(total: int, *, enabled: bool, desc: str) -> Any:
    from tqdm.auto import tqdm

    # disable=None lets tqdm switch itself off when stderr is not a terminal (logs stay readable).
    return tqdm(total=total, disable=True if not enabled else None, desc=desc, unit="step", leave=False)
