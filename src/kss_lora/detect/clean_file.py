"""Clean-and-retrain as a user's tool: the ranked issues table and a cleaned copy of the user's training file.

``kss detect CONFIG --write-clean OUT`` on a config whose ``data.train`` is the user's own file (csv, tsv,
jsonl, json, parquet) writes ``OUT``: the same file, same format, columns and header setting, with the rows the
primary detector flagged dropped (``drop``) or given the suggested label (``relabel``). Every other row is
copied as read, including rows detection did not score (a validation split carved off the file, rows left out
by ``data.max_train_examples``), so ``kss run CONFIG data.train=OUT`` takes the result as it is.

Row numbers are those of the training file: data rows counted from 1, a header row not counted (the same
convention as the data errors). Torch-free: it sees a :class:`~kss_lora.detect.pipeline.DetectionResult`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import RunConfig
from ..data.files import SUFFIX_FORMATS, read_table, resolve_path
from ..errors import ConfigError, DataError
from ..output_paths import check_output_file

__all__ = ["CLEAN_ACTIONS", "ISSUES_NAME", "CleanedFile", "check_clean_target", "issues_table", "write_clean_file"]

CLEAN_ACTIONS = ("drop", "relabel")
ISSUES_NAME = "label_issues.csv"


@dataclass
class CleanedFile:
    """What :func:`write_clean_file` wrote: the path, rows read and written, and which rows it changed."""

    path: Path
    action: str
    rows_in: int
    rows_out: int
    flagged_rows: list[int]  # row numbers (from 1) in the training file
    relabelled: int

    def summary(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "action": self.action,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "flagged": len(self.flagged_rows),
            "relabelled": self.relabelled,
        }


def _training_file(cfg: RunConfig) -> tuple[Path, str]:
    """The training file as read, and its format."""
    path, _ = resolve_path(cfg.data, str(cfg.data.train), "data.train")
    fmt = cfg.data.format or SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError("data.format", f"cannot infer from the suffix of {path.name!r}")
    return path, fmt


def check_clean_target(cfg: RunConfig, out: str | Path, *, action: str, overwrite: bool) -> Path:
    """``out`` as a path that :func:`write_clean_file` may write, checked before any training.

    Refused (one-line :class:`ConfigError`): a config that does not read the user's own file, one that injects
    noise (the labels scored would not be the file's), an unknown action, a folder, an existing file without
    ``overwrite``, and the training file itself (never overwritten: the program did not create it).
    """
    if action not in CLEAN_ACTIONS:
        raise ConfigError("--clean-action", f"unknown {action!r}; allowed: {', '.join(CLEAN_ACTIONS)}")
    if cfg.model.task != "classification":
        raise ConfigError("--write-clean", f"cleans classification data; model.task is {cfg.model.task}")
    if cfg.data.source != "file" or not cfg.data.train:
        raise ConfigError("--write-clean", f"cleans the user's own file (data.source: file); got {cfg.data.source}")
    if cfg.noise.active:
        raise ConfigError(
            "--write-clean",
            "the config injects label noise (noise.rate/transition); the file's labels are not the "
            "ones scored; set noise.rate=0 to clean the file as it is",
        )
    target = check_output_file(out, "--write-clean")
    source, _ = _training_file(cfg)
    if target.exists() and target.resolve() == source.resolve():
        raise ConfigError("--write-clean", f"{target} is the training file itself; name another file")
    if target.exists() and not overwrite:
        raise ConfigError("--write-clean", f"{target} exists; pass --overwrite to replace it, or name another file")
    return target


def issues_table(result: Any, *, rows: bool) -> pd.DataFrame:
    """Every training example, most suspicious first by the primary detector: ``rank``, ``row`` (the data row
    in the training file, from 1; when ``rows``), ``id``, ``text``, ``given_label``, ``suggested_label``,
    ``score``, ``flagged`` (+ ``text_pair``, and ``is_noisy`` when the truth is known)."""
    table = result.ranked(flagged_only=False)
    if rows:
        table.insert(1, "row", table["id"].to_numpy() + 1)
    return table


def _label_value(name: str, column: pd.Series) -> Any:
    """A label name as the column stores labels: integers stay integers in json/parquet (csv/tsv are text)."""
    if pd.api.types.is_integer_dtype(column.dtype):
        return int(name)
    return name


def _write(df: pd.DataFrame, path: Path, fmt: str, cfg: RunConfig, source: Path) -> None:
    if fmt in ("csv", "tsv"):
        # As the reader reads: tsv unquoted (its texts hold stray quotes), csv minimally quoted.
        df.to_csv(
            path,
            sep="\t" if fmt == "tsv" else ",",
            header=cfg.data.header,
            index=False,
            quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL,
        )
    elif fmt == "parquet":
        df.to_parquet(path, index=False)
    else:
        with source.open(encoding="utf-8") as fh:
            array = fh.read(4096).lstrip().startswith("[")
        if array:  # a JSON array of records in, a JSON array of records out
            records = json.loads(df.to_json(orient="records", force_ascii=False))
            path.write_text(json.dumps(records, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        else:
            df.to_json(path, orient="records", lines=True, force_ascii=False)


def write_clean_file(
    cfg: RunConfig, result: Any, out: Path, *, action: str, detector: str | None = None
) -> CleanedFile:
    """Write the training file without (``drop``) or with relabelled (``relabel``) flagged rows to ``out``.

    ``out`` must have passed :func:`check_clean_target`. Flags are ``detector``'s (default: the primary).
    """
    d = detector or result.primary
    source, fmt = _training_file(cfg)
    df = read_table(cfg.data, str(cfg.data.train), "data.train")
    flagged = np.asarray(result.ids)[np.asarray(result.flags[d], dtype=bool)]
    if flagged.size and (flagged.min() < 0 or flagged.max() >= len(df)):
        raise DataError(f"data.train: {source} changed since detection ran (row {flagged.max() + 1} is missing)")
    relabelled = 0
    if action == "drop":
        cleaned = df.drop(index=df.index[flagged])
    else:
        cleaned = df.copy()
        names = np.asarray(result.label_names, dtype=object)
        by_id = dict(zip(np.asarray(result.ids).tolist(), np.asarray(result.suggested_labels).tolist()))
        col = cfg.data.label_column
        position = cleaned.columns.get_loc(col)
        for row in flagged.tolist():
            new = _label_value(names[by_id[row]], cleaned[col])
            if str(cleaned.iat[row, position]).strip() != str(new):
                cleaned.iat[row, position] = new
                relabelled += 1
    if cleaned.empty:
        raise DataError(f"--write-clean: every row of {source} was flagged; nothing left to write")
    out.parent.mkdir(parents=True, exist_ok=True)
    _write(cleaned, out, fmt, cfg, source)
    return CleanedFile(out, action, len(df), len(cleaned), sorted((flagged + 1).tolist()), relabelled)
