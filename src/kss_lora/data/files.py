"""Reading one data source into a table: files (csv, tsv, jsonl, json, parquet) or a ``datasets`` dataset.

Relative paths are read against the folder recorded for their config key in ``DataConfig.path_bases`` (a
config file's own folder, set by ``load_config``), else against the working directory; every error about a
path says which. The table's ``attrs["source"]`` names what was read, so later errors (a blank label in
row 12) can name the file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from ..config import DataConfig
from ..errors import ConfigError, DataError

SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}

# The split a role reads from a dataset when its name has no ':split' (data.train: glue → glue's train split).
ROLE_SPLITS = {"data.train": "train", "data.validation": "validation", "data.test": "test"}

_warned_headers: set[str] = set()  # files already warned about (the warning is said once per file)


# ----------------------------------------------------------------------------- paths


def resolve_path(cfg: DataConfig, value: str, where: str) -> tuple[Path, str]:
    """``value`` (the config key ``where``'s path) as it is read, and words for errors saying what a relative
    path was relative to ("" for an absolute path)."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path, ""
    base = cfg.path_bases.get(where)
    if base is not None:
        return base / path, f" (relative to {base}, the config file's folder)"
    return path, f" (relative to {Path.cwd()}, the working directory)"


def resolved_data_paths(cfg: DataConfig, tracking_heldout: str | None = None) -> dict[str, str]:
    """The data files a config reads, by key, as absolute paths (for a run record: the config keeps them as
    written). Dataset names that are not local folders are left as written."""
    values = {"data.train": cfg.train, "data.validation": cfg.validation, "data.test": cfg.test}
    values["tracking.heldout"] = tracking_heldout
    out = {}
    for key, value in values.items():
        if not value:
            continue
        name, split = _split_suffix(value) if cfg.source == "hf" else (value, "")
        path = resolve_path(cfg, name, key)[0]
        if cfg.source != "hf" or path.is_dir():
            out[key] = str(path.resolve()) + (f":{split}" if split else "")
        else:
            out[key] = value
    return out


# ----------------------------------------------------------------------------- tables


def read_table(cfg: DataConfig, value: str | None, where: str) -> pd.DataFrame:
    """The rows of one data source as strings (csv/tsv) or as stored (json, parquet, datasets)."""
    if not value:
        raise ConfigError(where, "required")
    if cfg.source == "hf":
        df = _read_hf(cfg, value, where)
    else:
        df = _read_file(cfg, value, where)
    if len(df) == 0:
        raise DataError(f"{where}: {df.attrs['source']} has no rows")
    return df


def _read_file(cfg: DataConfig, value: str, where: str) -> pd.DataFrame:
    path, relative = resolve_path(cfg, value, where)
    if path.is_dir():
        raise DataError(f"{where}: {value!r}{relative} is a folder, not a file")
    if not path.is_file():
        raise DataError(f"{where}: no such file {value!r}{relative}")
    fmt = cfg.format or SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        allowed = ", ".join(f"{s} ({f})" for s, f in SUFFIX_FORMATS.items())
        raise ConfigError("data.format", f"cannot infer from the suffix of {path.name!r}; suffixes: {allowed}")
    try:
        if fmt in ("json", "jsonl"):
            df = _read_json(path)
        elif fmt == "parquet":
            df = pd.read_parquet(path)
        else:
            # QUOTE_NONE for tsv: text fields contain stray quotes that would swallow lines.
            df = pd.read_csv(
                path,
                sep="\t" if fmt == "tsv" else ",",
                header=0 if cfg.header else None,
                names=cfg.column_names,
                quoting=3 if fmt == "tsv" else 0,
                dtype=str,
                keep_default_na=False,
            )
    except (OSError, ValueError, ImportError, pd.errors.ParserError) as exc:
        raise DataError(f"{where}: cannot read {path} as {fmt}: {_one_line(exc)}") from None
    df.attrs["source"] = str(path)
    if fmt in ("csv", "tsv") and not cfg.header:
        _warn_if_header_row(df, cfg, where)
    return df


def _read_json(path: Path) -> pd.DataFrame:
    """A JSON array of records (Alpaca's format) or JSON lines, told apart by the first character."""
    with path.open(encoding="utf-8") as fh:
        head = fh.read(4096).lstrip()
    if not head.startswith("["):
        return pd.read_json(path, lines=True)
    records = json.loads(path.read_text(encoding="utf-8"))
    bad = next((i for i, r in enumerate(records) if not isinstance(r, dict)), None)
    if bad is not None:
        raise ValueError(f"item {bad} of the array is a {type(records[bad]).__name__}, not an object of fields")
    return pd.DataFrame.from_records(records)


def _split_suffix(value: str) -> tuple[str, str]:
    name, _, split = value.partition(":")
    return name, split


def _read_hf(cfg: DataConfig, value: str, where: str) -> pd.DataFrame:
    """``name[:split]``: a folder saved with ``save_to_disk``, a folder of data files, or a hub dataset name
    (with ``data.hf_config``); the split defaults to the role's name (train, validation, test)."""
    import datasets

    name, split = _split_suffix(value)
    split = split or ROLE_SPLITS.get(where, "train")
    folder, relative = resolve_path(cfg, name, where)
    saved = folder.is_dir() and any((folder / f).is_file() for f in ("dataset_dict.json", "state.json"))
    try:
        if saved:
            if cfg.hf_config is not None:
                raise ConfigError("data.hf_config", f"{folder} was saved with save_to_disk and has no configs")
            ds = datasets.load_from_disk(str(folder))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise DataError(f"{where}: {folder} has no split {split!r}; splits: {', '.join(ds)}")
                ds = ds[split]
            elif ":" in value:
                raise DataError(f"{where}: {folder} holds one dataset, not splits; drop ':{split}'")
        else:
            source = str(folder) if folder.is_dir() else name
            ds = datasets.load_dataset(source, cfg.hf_config, split=split)
    except (ConfigError, DataError):
        raise
    except Exception as exc:  # datasets raises many types; the user needs one line
        config = f" (config {cfg.hf_config!r})" if cfg.hf_config else ""
        tried = "" if folder.is_dir() or not relative else f"no folder {name!r}{relative} and "
        raise DataError(
            f"{where}: cannot load dataset {name!r}{config}, split {split!r}: {tried}{_one_line(exc)}"
        ) from None
    df = ds.to_pandas()
    df.attrs["source"] = f"{folder if folder.is_dir() else name} (split {split})"
    return df


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- a header row read as data


def _warn_if_header_row(df: pd.DataFrame, cfg: DataConfig, where: str) -> None:
    """``header: false`` on a file that has a header makes the header an example (and its label a class):
    say so once per file when the first row's label cell looks like a column name."""
    source = df.attrs["source"]
    if cfg.label_column not in df.columns or len(df) < 2 or source in _warned_headers:
        return
    column = df[cfg.label_column].astype(str).str.strip()
    first, others = column.iloc[0], column.iloc[1:]
    if _looks_like_header(first, others, cfg):
        _warned_headers.add(source)
        print(
            f"warning: {where}: the first row of {source} looks like a header (label cell {first!r}) but "
            "data.header is false, so it is read as an example; set data.header: true if it is one",
            file=sys.stderr,
        )


def _looks_like_header(first: str, others: pd.Series, cfg: DataConfig) -> bool:
    names = {cfg.label_column, cfg.text_column, *(cfg.column_names or [])}
    if first in names or first.lower() in {n.lower() for n in names}:
        return True
    if cfg.label_names:
        return first not in cfg.label_names and bool(others.isin(cfg.label_names).all())
    if _is_int(first):
        return False
    if others.map(_is_int).all():
        return True
    counts = others.value_counts()
    return first not in counts.index and len(others) >= 10 and int(counts.min()) >= 3


def _is_int(value: str) -> bool:
    return value.lstrip("+-").isdigit()
