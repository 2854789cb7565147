"""What a run's ``result.json`` holds, declared once: :class:`RunResult`.

Every field is listed here with what it means; the runner fills it, a failed preparation fills the same
record, and every reader (the lab's table of runs, the trackers, the CLI's one-line summary) takes its
column lists from the field tags below instead of keeping its own list of keys.

Tags (field metadata):

- ``column``: a column of ``kss ls`` / the lab's table of runs (:func:`columns`);
- ``final``: a final metric mirrored to trackers (:func:`final_keys`);
- ``epoch``: also a per-epoch metric of ``metrics.jsonl`` (:func:`epoch_keys`);
- ``optional``: left out of ``result.json`` while ``None`` (task- or launch-specific fields).

Keys a task adds that are not declared (a future task's metrics) are kept in :attr:`RunResult.extra` and
written back at the top level, so nothing a run measured is lost on a round trip.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("running", "ok", "failed")
FINISHED = ("ok", "failed")
# A run whose loss blew up is ``failed`` (so every reader counts it as not-ok, and a sweep does not retry it
# unless asked) with an error starting with this prefix: a non-finite loss, a training loss 1e4 times its first
# step's, or a validation loss beyond that bound (kss_lora.runner).
DIVERGED_PREFIX = "diverged: "


def _f(*tags: str, default: Any = None) -> Any:
    return field(default=default, metadata={tag: True for tag in tags})


@dataclass
class RunResult:
    """One run's record: its identity and settings, then its final metrics (docs/spec.md §2)."""

    status: str = _f("column", default="running")  # running (being written), ok, failed
    error: str | None = _f("column")  # first line of the failure, when failed
    stage: str | None = _f("optional")  # "prepare" when the run failed before training started
    run_id: str | None = _f("column")
    method: str | None = _f("column")  # resolved method name (a preset name resolves to kss)
    preset: str | None = _f("column")
    condition: str | None = None  # the method label: preset, else method name
    rank: int | None = _f("column")
    gamma: float | None = _f("column")  # resolved γ
    sparsity: float | None = _f("column")  # resolved ρ
    mask_mode: str | None = _f("column")
    seed: int | None = _f("column")
    noise_rate: float | None = _f("column")
    noise_kind: str | None = _f("column")
    precision: str | None = _f("column")
    model: str | None = _f("column")
    task: str | None = _f("column")
    lr: float | None = _f("column")
    n_train: int | None = _f("column")
    n_val: int | None = _f("column")
    n_test: int | None = _f("column")
    description: str | None = None
    chat_template: bool | None = _f("optional")  # causal-lm: formatted with the tokenizer's chat template
    n_truncated: int | None = _f("optional")  # causal-lm: examples cut at model.max_length
    epochs: int | None = _f("column")
    steps: int | None = _f("column")
    train_loss: float | None = _f("column", "final", "epoch")  # eval-mode, on the targets trained on
    train_loss_clean: float | None = _f("column", "final", "epoch")  # eval-mode, on the clean targets
    train_loss_running: float | None = _f("column", "epoch")  # mean of the training passes' own losses
    train_accuracy: float | None = _f("column", "epoch")
    val_loss: float | None = _f("column", "final", "epoch")
    val_accuracy: float | None = _f("column", "final", "epoch")
    gap: float | None = _f("column", "final", "epoch")  # val_loss - train_loss
    gap_clean: float | None = _f("column", "final", "epoch")  # val_loss - train_loss_clean
    test_loss: float | None = _f("column", "final")
    test_accuracy: float | None = _f("column", "final")
    train_token_loss: float | None = _f("optional")  # causal-lm: per-token loss and perplexity
    train_perplexity: float | None = _f("optional")
    val_token_loss: float | None = _f("optional")
    val_perplexity: float | None = _f("optional")
    test_token_loss: float | None = _f("optional")
    test_perplexity: float | None = _f("optional")
    noise_rate_realised: float | None = _f("column")  # fraction of training labels actually corrupted
    wall_time_s: float | None = _f("column", "final")
    stopped_early: bool | None = None  # train.early_stopping_patience ended the run before its last step
    best_epoch: int | None = None  # epoch of the lowest val_loss (its adapter is the saved one with restore_best)
    restored_best: bool | None = _f("optional")  # train.restore_best put the best evaluation's adapter back
    resumed_from_step: int | None = _f("optional")  # `kss run --resume`: the checkpoint's optimizer step
    distributed: dict[str, Any] | None = _f("optional")  # data-parallel ranks' agreement and memory
    extra: dict[str, Any] = field(default_factory=dict)  # undeclared keys, kept for the round trip

    def update(self, values: dict[str, Any]) -> RunResult:
        """Set declared fields from ``values``; undeclared keys go to :attr:`extra`."""
        names = _names()
        for key, value in values.items():
            if key in names:
                setattr(self, key, value)
            else:
                self.extra[key] = value
        return self

    def to_dict(self) -> dict[str, Any]:
        """The ``result.json`` mapping: declared fields in order (optional ones only when set), then extras."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and f.metadata.get("optional"):
                continue
            out[f.name] = value
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> RunResult:
        """Read a ``result.json`` mapping (older files lack some fields: they read as ``None``).

        Raises ``ValueError`` naming what is wrong when the mapping is not a run record.
        """
        if not isinstance(data, dict):
            raise ValueError(f"not a mapping but {type(data).__name__}")
        status = data.get("status")
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        for key in ("run_id", "error", "method"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ValueError(f"{key} must be a string, got {data[key]!r}")
        # NaN and inf are stored as strings (JSON has neither): read them back as numbers.
        values = {k: _number(v) if k in _FLOAT_FIELDS else v for k, v in data.items()}
        return cls().update(values)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def diverged(self) -> bool:
        """The run failed because its loss blew up (:data:`DIVERGED_PREFIX`)."""
        return self.status == "failed" and (self.error or "").startswith(DIVERGED_PREFIX)

    def summary(self, task: str | None = None) -> dict[str, Any]:
        """The CLI's one-line JSON summary of a run (perplexity for causal-LM runs, accuracy otherwise)."""
        keys = ["status", "method", "preset", "seed", "train_loss", "val_loss", "gap"]
        keys += (
            ["val_perplexity", "test_loss"] if (task or self.task) == "causal-lm" else ["val_accuracy", "test_accuracy"]
        )
        record = self.to_dict()
        return {k: record.get(k) for k in keys}


def _names() -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(RunResult) if f.name != "extra")


def _tagged(tag: str) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(RunResult) if f.metadata.get(tag))


def columns() -> tuple[str, ...]:
    """Columns of the lab's table of runs, in declaration order."""
    return _tagged("column")


def final_keys() -> tuple[str, ...]:
    return _tagged("final")


def epoch_keys() -> tuple[str, ...]:
    return _tagged("epoch")


_FLOAT_FIELDS = frozenset(f.name for f in dataclasses.fields(RunResult) if f.type in ("float | None", "float"))


def _number(value: Any) -> Any:
    if isinstance(value, str) and value.lower() in ("nan", "inf", "-inf", "infinity", "-infinity"):
        return float(value)
    return value
