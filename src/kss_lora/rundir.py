"""The run directory: atomic writes, environment capture, and reading results back.

Layout (``result.json`` is written last; its presence with ``status: ok`` is what "finished" means)::

    config.yaml      resolved config (every default filled in)
    env.json         package versions, git commit, hardware
    metrics.jsonl    one line per epoch
    noise.npz        clean/noisy labels and the truth mask, when noise was injected
    adapter/         plain PEFT adapter + kss_config.json
    error.log        traceback of a failed run
    result.json      final metrics and status
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

RESULT_NAME = "result.json"
METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.yaml"
ENV_NAME = "env.json"
TRACKED_PACKAGES = (
    "kss-lora",
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "datasets",
    "torchao",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "cleanlab",
)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temporary file in the same directory and rename: readers see old or new, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_safe(value: Any) -> Any:
    """NaN/inf are not JSON: store them as strings so the file stays standard and the value visible."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _json_safe(value.item())
    return value


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(_json_safe(data), indent=2, sort_keys=False) + "\n")


def append_jsonl(path: str | Path, row: dict[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(_json_safe(row)) + "\n")


def read_result(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's result, or None when absent or unreadable (a run killed mid-write counts as unfinished)."""
    path = Path(run_dir) / RESULT_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and "status" in data else None


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill: ignore it
            continue
    return rows


def git_commit(cwd: str | Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        commit = out.stdout.strip()
        if not commit:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd or Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict[str, Any]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    hardware: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import torch

        hardware["torch_threads"] = torch.get_num_threads()
        hardware["cuda"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            hardware["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return {"python": platform.python_version(), "packages": versions, "git_commit": git_commit(), "hardware": hardware}
