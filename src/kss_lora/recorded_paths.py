"""Data paths in a run directory's config.yaml: written absolute, read back wherever the run is analysed from.

A config file's relative data paths are read against its own folder (``DataConfig.path_bases``), so the same
text copied into ``runs/X/config.yaml`` would point into ``runs/X/`` on a rerun (``kss run runs/X/config.yaml``).
The saved config therefore holds the paths as they were read, made absolute; the run id is still computed from
the paths as written in the original config (the runner hashes the config it was given, not this copy).

Bottom layer: imports nothing from the package, so config.py (writing) and the analyses (reading) can use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["absolute_data_paths", "find_recorded_path"]


def absolute_data_paths(data: dict[str, Any], bases: Mapping[str, Path], keys: tuple[str, ...]) -> None:
    """Make the relative local paths under ``keys`` (dotted, e.g. ``data.train``) of the config mapping ``data``
    absolute, in place: against ``bases[key]`` when given (the config file's folder), else the working directory.

    A Hugging Face dataset name (``data.source: hf``) stays as written unless it names an existing local folder.
    """
    source = (data.get("data") or {}).get("source")
    for key in keys:
        block_name, field = key.split(".", 1)
        block = data.get(block_name)
        if not isinstance(block, dict) or not isinstance(block.get(field), str) or not block[field]:
            continue
        value = block[field]
        name, split = value, ""
        if source == "hf" and ":" in value:
            name, split = value.rsplit(":", 1)
        path = Path(name).expanduser()
        if not path.is_absolute():
            path = Path(bases[key]) / path if key in bases else Path.cwd() / path
        if source == "hf" and not path.is_dir():
            continue  # a dataset id on the Hub, not a local folder
        block[field] = str(path.resolve()) + (f":{split}" if split else "")


def find_recorded_path(run_dir: str | Path, raw: str) -> Path | None:
    """A data file named in a run's config.yaml: absolute in runs written by this version; a relative one (older
    runs, relative to the directory the run started from, usually the project root) is tried against the working
    directory, then the run directory's ancestors (runs live below the root). ``None`` when not found."""
    path = Path(raw).expanduser()
    if path.is_absolute():
        return path if path.is_file() else None
    for base in (Path.cwd(), *Path(run_dir).resolve().parents):
        if (base / path).is_file():
            return base / path
    return None
