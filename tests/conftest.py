"""Shared test set-up: offline, quiet, small. Real data is read in place from ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, above all on a shared CPU (runs set train.threads: 1 too)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available: {SHARED_DATA} is absent (a user's own checkout)")
    return SHARED_DATA


def tiny_config(tmp_path: Path, **blocks: dict) -> dict:
    """A config dict for a run that takes a couple of seconds: tiny random BERT on synthetic data."""
    cfg = {
        "model": {"name": "tiny-bert", "max_length": 16},
        "data": {"source": "synthetic", "num_examples": 64, "num_classes": 2},
        "method": {"name": "kss", "preset": "kss-default", "rank": 4},
        "train": {"seed": 0, "epochs": 2, "batch_size": 16, "lr": 5e-3, "progress": False, "threads": 1},
        "output": {"dir": str(tmp_path / "runs")},
    }
    return with_blocks(cfg, **blocks)


def with_blocks(cfg: dict, **blocks: dict) -> dict:
    """Update a config dict block by block (``train={"epochs": 1}`` changes only that key of train)."""
    for key, value in blocks.items():
        cfg.setdefault(key, {}).update(value)
    return cfg
