"""Training state as plain tensors and JSON, so that a killed run can continue exactly where it was.

A checkpoint (written by :meth:`kss_lora.rundir.RunDirectory.write_checkpoint`) is a folder of safetensors files
plus one ``state.json``; nothing is pickled. This module turns the live objects of a run into those parts and
back: the trainable tensors (LoRA and head), the optimizer's per-parameter tensors (its scalar hyperparameters
and the scheduler's counters go to JSON), and every random number generator a training step draws from
(torch CPU and CUDA, numpy's and Python's global ones; the data-order generator is the runner's own).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from .config import RunConfig, to_yaml
from .errors import ConfigError, DataError
from .run_ids import NOT_HASHED
from .rundir import RunDirectory

CHECKPOINT_FORMAT = 1


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of every trainable tensor (what a run changes), by parameter name."""
    return {n: p.detach().to("cpu", copy=True).contiguous() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` into the model's trainable tensors; every one must be there with its shape."""
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(named) - set(state))
    if missing:
        raise DataError(f"checkpoint lacks trainable tensor {missing[0]} ({len(missing)} missing); rerun from scratch")
    with torch.no_grad():
        for name, p in named.items():
            if tuple(state[name].shape) != tuple(p.shape):
                raise DataError(
                    f"checkpoint tensor {name} has shape {tuple(state[name].shape)}, expected {tuple(p.shape)}"
                )
            p.copy_(state[name].to(p.device, p.dtype))


def optimizer_parts(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The optimizer's state dict split into tensors (``"<param index>.<key>"``) and JSON for the rest."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for index, values in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})  # moves the tensors to the params' device


def rng_parts() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The global generators' states: torch's as tensors, numpy's and Python's as JSON."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    meta = {
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(py_state), py_gauss],
    }
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda_"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, py_state, py_gauss = meta["python"]
    random.setstate((version, tuple(py_state), py_gauss))


def save_training_state(
    run_dir: RunDirectory,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    masker: Any,
    loop: dict[str, Any],
    run_id: str,
    best: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write the checkpoint a resumed run starts from (rank 0; every rank holds the same trainable tensors)."""
    opt_tensors, opt_meta = optimizer_parts(optimizer)
    rng_tensors, rng_meta = rng_parts()
    groups = {"trainable": trainable_state(model), "optimizer": opt_tensors, "rng": rng_tensors}
    if best is not None:
        groups["best"] = best
    state = {
        "format": CHECKPOINT_FORMAT,
        "run_id": run_id,
        "loop": loop,
        "optimizer": opt_meta,
        "scheduler": scheduler.state_dict(),
        "rng": rng_meta,
        "kss_step": None if masker is None else int(masker.step),
    }
    run_dir.write_checkpoint(groups, state)


def restore_training_state(
    run_dir: RunDirectory, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, masker: Any
) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Load the latest checkpoint into the live objects; returns (the loop's JSON state, the best adapter)."""
    found = run_dir.read_checkpoint()
    if found is None:
        raise DataError(f"{run_dir.path}: no checkpoint to resume from; rerun without --resume")
    groups, state = found
    load_trainable_state(model, groups["trainable"])
    load_optimizer(optimizer, groups.get("optimizer", {}), state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if masker is not None and state.get("kss_step") is not None:
        masker.step = int(state["kss_step"])  # the masks of the resumed steps are those the run would have drawn
    restore_rng(groups["rng"], state["rng"])
    return state["loop"], groups.get("best")


def check_resume(cfg: RunConfig, directory: Path) -> None:
    """Raise :class:`ConfigError` unless ``directory`` holds a checkpoint of this very config (before any work)."""
    from .methods import resolve_method

    run_dir = RunDirectory(directory)
    if not run_dir.is_run_directory():
        raise ConfigError("--resume", f"{directory} is not a kss run directory; run without --resume")
    state = run_dir.read_checkpoint_state()
    if state is None:
        raise ConfigError(
            "--resume", f"{directory} has no checkpoint (train.checkpoint_every was not set); run without --resume"
        )
    written = run_dir.read_config() or {}
    now = yaml.safe_load(to_yaml(cfg, resolve_method(cfg.method)))
    for key, old, new in _differences(written, now):
        raise ConfigError("--resume", f"{key} is {new!r} now but {old!r} in the run being resumed; use the same config")
    if state.get("run_id") != cfg.run_id():
        raise ConfigError("--resume", f"run id {cfg.run_id()} differs from the checkpoint's {state.get('run_id')}")


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Dotted keys whose values differ, outside the blocks that never change what is computed."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        if not prefix and key in NOT_HASHED:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append((f"{prefix}{key}", a, b))
    return out
