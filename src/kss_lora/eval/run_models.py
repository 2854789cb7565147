"""The trained runs a benchmark scores: a run's adapter folder, its model, the rows it trained on, and the model to score."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DataError


def adapter_dir(path: str) -> Path:
    p = Path(path)
    for candidate in (p / "adapter", p):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    raise DataError(f"--adapter: no PEFT adapter in {path} (a run saved with output.save_adapter: true?)")


def run_config(run_dir: str) -> dict[str, Any] | None:
    from ..rundir import RunDirectory

    return RunDirectory(run_dir).read_config()


def run_model_name(run_dir: str) -> str | None:
    cfg = run_config(run_dir)
    return cfg["model"]["name"] if cfg else None


def trained_rows(run_dir: str, csv: str, *, strict: bool = True) -> set[int]:
    """CSV rows a run trained on (from its splits.json), when it trained on this CSV; else empty / an error."""
    from ..recorded_paths import find_recorded_path
    from ..rundir import RunDirectory
    from ..tasks.causal_lm import SPLITS_NAME

    cfg = run_config(run_dir)
    splits = RunDirectory(run_dir).read_json(SPLITS_NAME)
    if cfg is None or splits is None:
        if strict:
            raise DataError(f"--holdout: {run_dir} is not a causal-lm run directory (no config.yaml/splits.json)")
        return set()
    train_file = (cfg.get("data") or {}).get("train")
    # Absolute in runs written now; a relative path (older runs) is looked for where the run started from.
    recorded = find_recorded_path(run_dir, str(train_file)) if train_file else None
    same = recorded is not None and recorded.resolve() == Path(csv).resolve()
    if not same:
        if strict:
            raise DataError(f"--holdout: {run_dir} trained on {train_file}, not on {csv}; nothing to hold out")
        return set()
    return set(splits["train"])


def load_for_scoring(name: str, adapter: Path | None, *, dtype: Any, device: Any, seed: int = 0) -> tuple[Any, Any]:
    """Base causal LM (+ merged adapter) in eval mode, and its tokenizer. ``seed`` only matters for the
    random built-in test models, whose base weights are a function of the training seed."""
    from ..models import load_model, load_tokenizer

    tokenizer = load_tokenizer(name)
    model = load_model(name, task="causal-lm", tokenizer=tokenizer, seed=seed)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    model = model.to(device=device, dtype=dtype).eval()
    return model, tokenizer
