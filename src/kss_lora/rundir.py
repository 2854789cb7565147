"""The run directory, and its one owner: :class:`RunDirectory` writes and reads every file in it.

Layout (``result.json`` is written last; its presence with a final status is what "finished" means)::

    .kss-run         marker: this directory was created by kss (only such a directory is ever replaced)
    config.yaml      resolved config: every default filled in, the method's resolved values (γ, ρ, dropout)
    env.json         package versions, git commit, hardware
    metrics.jsonl    one line per epoch (keys: epoch, step, time_s and the ``epoch`` fields of RunResult); with
                     train.log_every_steps / train.eval_every_steps also lines with ``"kind": "step"`` or
                     ``"kind": "eval"`` (an epoch line has no kind; :meth:`RunDirectory.read_metrics` returns
                     only epoch lines unless asked for the others)
    checkpoint/      with train.checkpoint_every: the latest training state (safetensors + state.json), for
                     ``kss run --resume``; removed when the run finishes ok
    noise.npz        clean/noisy labels and the truth mask, when noise was injected (classification)
    splits.json      causal-lm: which rows of the data files went to train/validation/test
    dynamics.npz     per-example logits, when tracking.per_example is on
    adapter/         plain PEFT adapter + kss_config.json, when output.save_adapter is on
    error.log        traceback of a failed run
    result.json      :class:`~kss_lora.run_result.RunResult`: settings, final metrics and status

Every write is atomic (a temporary file in the same directory, then a rename) and honours the umask, so
a reader sees the old file or the new one, never half, and colleagues can read a shared runs directory.
A directory written before the marker existed counts as a run directory when it holds config.yaml with
result.json (or with env.json: a run killed before its result); any other non-empty folder, the current
directory (or one above it) and a file are refused with a one-line error, and nothing is deleted.
A record that exists but cannot be read (not JSON, not a run record, a garbled metrics line) raises
:class:`CorruptRecord`; readers list such a run as ``corrupt`` and a sweep runs it again.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, DataError
from .run_result import RunResult

MARKER_NAME = ".kss-run"
RESULT_NAME = "result.json"
METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.yaml"
ENV_NAME = "env.json"
ERROR_NAME = "error.log"
ADAPTER_NAME = "adapter"
CHECKPOINT_NAME = "checkpoint"
CHECKPOINT_STATE = "state.json"
EPOCH_KIND = "epoch"  # a metrics line without "kind" is an epoch line (every file written before kinds existed)
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
RUN_STATES = ("ok", "failed", "unfinished", "corrupt")


class CorruptRecord(DataError):
    """A file of a run directory exists but does not hold what it should (garbage, a cut write, wrong type)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _json_has(path: Path, test: Any) -> bool:
    """Whether ``path`` is a readable JSON object passing ``test`` (False for anything else)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and bool(test(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temporary file in the same directory and rename: readers see old or new, never half.

    mkstemp creates its file 0600 whatever the umask; it gets the mode a plain ``open`` would give it.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
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


class RunDirectory:
    """One run directory: creating it safely, writing its files, reading them back."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def adapter(self) -> Path:
        return self.path / ADAPTER_NAME

    @property
    def name(self) -> str:
        return self.path.name

    # ------------------------------------------------------------------------------------ creating
    def is_run_directory(self) -> bool:
        """Created by kss: the marker, or (written before the marker existed) a config with a result, or with
        the environment record a run killed before its result still has."""
        p = self.path
        if not p.is_dir():
            return False
        if (p / MARKER_NAME).is_file():
            return True
        # Older runs are recognised by what kss wrote in them, not by file names a user's folder may share.
        return (p / CONFIG_NAME).is_file() and (
            _json_has(p / RESULT_NAME, lambda d: "run_id" in d and "status" in d)
            or _json_has(p / ENV_NAME, lambda d: "kss-lora" in (d.get("packages") or {}))
        )

    def check_replaceable(self) -> None:
        """Raise :class:`ConfigError` unless creating this run directory deletes nothing kss did not write."""
        p = self.path
        if p.exists() and not p.is_dir():
            raise ConfigError("run directory", f"{p} is a file, not a directory; name a new or empty directory")
        if not p.exists():
            return
        here, target = Path.cwd().resolve(), p.resolve()
        if target == here or target in here.parents:
            raise ConfigError("run directory", f"{p} is the current directory or above it; name a new directory")
        if any(p.iterdir()) and not self.is_run_directory():
            raise ConfigError(
                "run directory",
                f"{p} holds files that are not a kss run (no {MARKER_NAME}); name a new or empty directory",
            )

    def create(self) -> RunDirectory:
        """Start afresh (a rerun, or a run killed mid-way, leaves nothing stale), after :meth:`check_replaceable`."""
        self.check_replaceable()
        if self.is_run_directory():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / MARKER_NAME, "created by kss-lora; this directory may be replaced by a rerun\n")
        return self

    # ------------------------------------------------------------------------------------ writing
    def write_config(self, text: str) -> None:
        atomic_write_text(self.path / CONFIG_NAME, text)

    def write_env(self) -> None:
        atomic_write_json(self.path / ENV_NAME, environment())

    def append_metrics(self, row: dict[str, Any]) -> None:
        append_jsonl(self.path / METRICS_NAME, row)

    def keep_metrics_lines(self, count: int) -> None:
        """Keep the first ``count`` lines of metrics.jsonl (a resumed run drops what it will write again)."""
        path = self.path / METRICS_NAME
        lines = path.read_text().split("\n")[:count] if path.is_file() else []
        atomic_write_text(path, "".join(line + "\n" for line in lines))

    # ------------------------------------------------------------------------------------ checkpoints
    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_NAME

    def write_checkpoint(self, tensors: dict[str, dict[str, Any]], state: dict[str, Any]) -> Path:
        """Replace the checkpoint folder atomically: ``tensors`` groups go to ``<group>.safetensors``, ``state``
        to state.json. Written in a temporary folder, then renamed; the previous checkpoint is removed only
        once the new one is in place (a kill in between leaves the previous one as ``.checkpoint.old``)."""
        from safetensors.torch import save_file

        tmp = Path(tempfile.mkdtemp(dir=self.path, prefix=".checkpoint."))
        try:
            os.chmod(tmp, 0o777 & ~_umask())
            for group, named in tensors.items():
                save_file(named, str(tmp / f"{group}.safetensors"))
            atomic_write_json(tmp / CHECKPOINT_STATE, state)
            old = self.path / ".checkpoint.old"
            if old.exists():
                shutil.rmtree(old)
            if self.checkpoint.exists():
                os.replace(self.checkpoint, old)
            os.replace(tmp, self.checkpoint)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.checkpoint

    def _checkpoint_folder(self) -> Path | None:
        for folder in (self.checkpoint, self.path / ".checkpoint.old"):  # .old: killed while replacing
            if (folder / CHECKPOINT_STATE).is_file():
                return folder
        return None

    def read_checkpoint_state(self) -> dict[str, Any] | None:
        """state.json of the latest checkpoint; ``None`` when there is none."""
        folder = self._checkpoint_folder()
        if folder is None:
            return None
        try:
            return json.loads((folder / CHECKPOINT_STATE).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptRecord(f"{folder}: unreadable checkpoint ({_reason(exc)}); rerun without --resume") from None

    def read_checkpoint(self) -> tuple[dict[str, dict[str, Any]], dict[str, Any]] | None:
        """``(tensor groups, state)`` of the latest checkpoint; ``None`` when there is none."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        state = self.read_checkpoint_state()
        folder = self._checkpoint_folder()
        if state is None or folder is None:
            return None
        try:
            groups = {f.name.removesuffix(".safetensors"): load_file(str(f)) for f in folder.glob("*.safetensors")}
        except (OSError, SafetensorError) as exc:
            raise CorruptRecord(f"{folder}: unreadable checkpoint ({_reason(exc)}); rerun without --resume") from None
        return groups, state

    def remove_checkpoint(self) -> None:
        for folder in (self.checkpoint, self.path / ".checkpoint.old"):
            if folder.exists():
                shutil.rmtree(folder)

    def write_result(self, result: RunResult) -> None:
        atomic_write_json(self.path / RESULT_NAME, result.to_dict())

    def write_error(self, text: str) -> None:
        atomic_write_text(self.path / ERROR_NAME, text)

    def write_json(self, name: str, data: Any) -> None:
        """An extra file of the run (e.g. ``splits.json``)."""
        atomic_write_json(self.path / name, data)

    def write_arrays(self, name: str, arrays: dict[str, Any], *, compressed: bool = False) -> Path:
        """An extra ``.npz`` of the run (``noise.npz``, ``dynamics.npz``), written atomically."""
        import numpy as np

        path = self.path / name
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as fh:  # a plain open: the umask decides the mode
            (np.savez_compressed if compressed else np.savez)(fh, **arrays)
        tmp.replace(path)
        return path

    # ------------------------------------------------------------------------------------ reading
    def read_result(self) -> RunResult | None:
        """The run's record; ``None`` when there is none yet. Raises :class:`CorruptRecord` when unreadable."""
        path = self.path / RESULT_NAME
        if not path.exists():
            return None
        try:
            return RunResult.from_dict(json.loads(path.read_text()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
            raise CorruptRecord(f"{path}: not a readable run record ({_reason(exc)}); rerun it") from None

    def read_metrics(self, kinds: tuple[str, ...] = (EPOCH_KIND,)) -> list[dict[str, Any]]:
        """The epoch rows (or the rows of ``kinds``: ``"epoch"``, ``"step"``, ``"eval"``; a line without a kind
        is an epoch line). A last line cut by a kill is ignored; any other bad line raises :class:`CorruptRecord`."""
        path = self.path / METRICS_NAME
        if not path.is_file():
            return []
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise CorruptRecord(f"{path}: unreadable ({_reason(exc)}); rerun the run") from None
        lines = text.split("\n")
        rows = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):  # no newline after it: a write cut by a kill
                    continue
                raise CorruptRecord(f"{path}: line {number} is not JSON; rerun the run") from None
            if not isinstance(row, dict):
                raise CorruptRecord(f"{path}: line {number} is not a mapping of metrics; rerun the run")
            if row.get("kind", EPOCH_KIND) in kinds:
                rows.append(row)
        return rows

    def read_config(self) -> dict[str, Any] | None:
        """The resolved config as written (a mapping); ``None`` when absent."""
        path = self.path / CONFIG_NAME
        if not path.exists():
            return None
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise CorruptRecord(f"{path}: not a readable config ({_reason(exc)}); rerun the run") from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise CorruptRecord(f"{path}: not a mapping of config blocks; rerun the run")
        return data

    def read_arrays(self, name: str) -> dict[str, Any] | None:
        """An extra ``.npz`` of the run as ``{name: array}``; ``None`` when absent."""
        import numpy as np

        path = self.path / name
        if not path.is_file():
            return None
        try:
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise CorruptRecord(f"{path}: unreadable ({_reason(exc)}); rerun the run") from None

    def read_json(self, name: str) -> Any:
        """An extra JSON file of the run (e.g. ``splits.json``); ``None`` when absent."""
        path = self.path / name
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptRecord(f"{path}: not readable JSON ({_reason(exc)}); rerun the run") from None

    def state(self, run_id: str | None = None) -> str:
        """``ok`` / ``failed`` when finished (as ``run_id``, if given), ``corrupt``, else ``unfinished``."""
        try:
            result = self.read_result()
        except CorruptRecord:
            return "corrupt"
        if result is None or not result.finished or (run_id is not None and result.run_id != run_id):
            return "unfinished"
        return result.status


def find_run_directories(root: str | Path, *, exclude: tuple[str, ...] = ()) -> list[Path]:
    """Immediate subdirectories of ``root`` that look like runs (a marker, a config or a result), by name."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"no such runs directory: {root}")
    return sorted(
        d
        for d in root.iterdir()
        if d.is_dir()
        and not d.name.startswith(".")
        and d.name not in exclude
        and any((d / n).exists() for n in (MARKER_NAME, RESULT_NAME, CONFIG_NAME))
    )


def _reason(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


# Thin delegations kept for callers not yet migrated to RunDirectory (lab/report.py, lab/claims.py...).
def read_result(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's result as a mapping, or None when absent or unreadable (counts as unfinished)."""
    try:
        result = RunDirectory(run_dir).read_result()
    except CorruptRecord:
        return None
    return None if result is None else result.to_dict()


def read_metrics(run_dir: str | Path, kinds: tuple[str, ...] = (EPOCH_KIND,)) -> list[dict[str, Any]]:
    try:
        return RunDirectory(run_dir).read_metrics(kinds)
    except CorruptRecord:
        return []


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
