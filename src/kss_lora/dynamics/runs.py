"""One run directory read back for the dynamics analyses: :class:`RunInfo`, :func:`load_run`, :func:`find_runs`,
and the ChaosNLI rows behind a run's tracked items (:func:`chaosnli_items`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from kss_lora.errors import DataError
from kss_lora.methods.specs import recorded_uses_lora
from kss_lora.recorded_paths import find_recorded_path
from kss_lora.rundir import CONFIG_NAME, CorruptRecord, RunDirectory

from .entropy import load_chaosnli
from .records import DYNAMICS_NAME, Dynamics, load_dynamics

__all__ = ["RunInfo", "chaosnli_file", "chaosnli_items", "find_runs", "load_run"]


@dataclass
class RunInfo:
    """A run directory with its resolved config, result and recorded dynamics."""

    run_dir: Path
    config: dict[str, Any]
    result: dict[str, Any] | None
    dynamics: Dynamics

    def get(self, dotted: str, default: Any = None) -> Any:
        """A config value by dotted key (``"method.name"``); ``default`` when absent."""
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    @property
    def is_chaosnli(self) -> bool:
        return self.get("data.source") == "chaosnli"

    @property
    def method(self) -> str:
        return str(self.get("method.preset") or self.get("method.name", "?"))

    @property
    def uses_lora(self) -> bool:
        return recorded_uses_lora(self.get("method.name"))

    @property
    def condition(self) -> str:
        """What the run measures apart from its seed: model, method, (for LoRA) rank, learning rate, noise.

        The learning rate is part of it because runs of one method at two learning rates are two
        conditions (under Adam, LoRA's lr and gamma both scale the update), never seeds of one.
        """
        rank = f" r={self.get('method.rank')}" if self.uses_lora else ""
        lr = self.get("train.lr")
        noise = self.get("noise.rate") or 0.0
        return (
            f"{self.get('model.name')} {self.method}{rank}"
            + (f" lr={float(lr):g}" if lr is not None else "")
            + (f" noise={noise:g}" if noise else "")
        )

    @property
    def lora_rank(self) -> int | None:
        """The LoRA rank, None for full fine-tuning (and other methods without an adapter)."""
        rank = self.get("method.rank")
        return int(rank) if self.uses_lora and rank is not None else None

    @property
    def seed(self) -> int | None:
        return self.get("train.seed")


def load_run(run_dir: str | Path) -> RunInfo:
    """Read a run directory through :class:`kss_lora.rundir.RunDirectory`.

    A missing directory, config or dynamics file, or an unreadable config, is a one-line :class:`DataError`. An
    unreadable result.json is not: the run reads with ``result == {"status": "corrupt", "error": ...}`` so an
    analysis over many runs can skip it and say why.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise DataError(f"{path}: no such run directory")
    run = RunDirectory(path)
    config = run.read_config()  # CorruptRecord (a DataError) when it cannot be read or parsed
    if config is None:
        raise DataError(f"{path}: not a run directory (no {CONFIG_NAME})")
    result: dict[str, Any] | None
    try:
        record = run.read_result()
        result = None if record is None else record.to_dict()
    except CorruptRecord as exc:
        result = {"status": "corrupt", "error": str(exc)}
    try:
        dynamics = load_dynamics(path)
    except (OSError, ValueError, KeyError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path / DYNAMICS_NAME}: unreadable ({exc})") from None
    return RunInfo(path, config, result, dynamics)


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories named directly, or the run directories one level below a named folder.

    Why: ``kss entropy runs/dynamics/entropy`` should analyse every run a sweep or driver wrote there.
    A folder with neither ``dynamics.npz`` nor run directories below it is an error.
    """
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.is_dir():
            raise DataError(f"{p}: no such run directory")
        if RunDirectory(p).file(CONFIG_NAME).is_file():
            out.append(p)
            continue
        below = sorted(c for c in p.iterdir() if c.is_dir() and (c / DYNAMICS_NAME).is_file())
        if not below:
            raise DataError(f"{p}: neither a run directory nor a folder of runs with {DYNAMICS_NAME}")
        out.extend(below)
    return out


def _resolve_data_path(run: RunInfo, raw: str) -> Path | None:
    """A data file of the run's config: see :func:`kss_lora.recorded_paths.find_recorded_path`."""
    return find_recorded_path(run.run_dir, raw)


def chaosnli_file(run: RunInfo, key: str, *, required: bool = True) -> pd.DataFrame | None:
    """The ChaosNLI-format file a run's config names under ``key`` (``data.train``, ``data.validation``,
    ``data.test``, ``tracking.heldout``), read with :func:`load_chaosnli`; None when absent and not required."""
    raw = run.get(key)
    if not raw:
        if required:
            raise DataError(f"{run.run_dir}: the run has no {key}")
        return None
    path = _resolve_data_path(run, str(raw))
    if path is None:
        if required:
            raise DataError(
                f"{run.run_dir}: {key} file {raw!r} not found (paths are relative to the "
                "directory the run was started from; run this command from there)"
            )
        return None
    return load_chaosnli(path)


def chaosnli_items(run: RunInfo, which: str, *, required: bool = True) -> pd.DataFrame | None:
    """The ChaosNLI rows behind a run's training (``which='train'``) or held-out items, in file order.

    Item ids recorded by the runner are row numbers of that file, so ``items.iloc[ids]`` lines them up.
    """
    key = "data.train" if which == "train" else "tracking.heldout"
    items = chaosnli_file(run, key, required=required)
    if items is None:
        return None
    ids = run.dynamics.arrays["ids" if which == "train" else "heldout_ids"]
    if len(ids) and int(ids.max()) >= len(items):
        raise DataError(
            f"{run.get(key)}: has {len(items)} items but the run tracked item id {int(ids.max())}; "
            "the file changed since the run"
        )
    return items
