"""Data-parallel training: starting processes (accelerate / torchrun) and what the runner needs inside them.

How a multi-process run works (see ``docs/scale-out.md``):

- ``kss run CONFIG --launcher accelerate --profile ddp`` (or ``launcher:`` in the config) re-executes
  itself under ``accelerate launch --config_file <shipped profile>`` or ``torchrun``; the children see
  ``WORLD_SIZE``/``RANK`` and run the same config.
- Each optimizer step's *global* batch is drawn from the same seeded permutation on every rank and split
  into contiguous shards; each rank backpropagates ``sum(its losses) / global batch size`` and the
  gradients are summed across ranks (one bucketed all-reduce per step). The result is the single-process
  gradient of the same global batch, so the run equals single-process training to float tolerance.
- No model wrapper: parameter names stay those of the single-process model, so KSS masks — a function of
  (seed, step, parameter name) — are identical on every rank by construction (checked at the end of the
  run by comparing a hash of the masks across ranks), and parameters stay identical because every rank
  applies the same masked update to the same summed gradient.
- Evaluation passes are sharded too and gathered; only rank 0 writes the run directory.

Why not ``DistributedDataParallel``: its wrapper renames parameters (``module.``), its bucketing hooks
fire before our per-step mask would be applied, and our loop already owns the step; summing gradients
explicitly keeps the loop one plain PyTorch loop for 1 or N processes.

FSDP2 (profile ``fsdp2``, :mod:`kss_lora.fsdp`): parameters are sharded across ranks with ``fully_shard``
(names unchanged), the backward reduce-scatters (sums) the gradients, and each rank masks its gradient
shard with its part of the full-size KSS mask, so the run still equals single-process training. Every
forward is a collective under FSDP2, so every rank runs the same number of forward passes: micro-batches
and evaluation shards are padded to equal counts (padding carries zero weight and is dropped).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import check_launcher_args
from .errors import ConfigError
from .fsdp import FSDPOptions, full_tensor

LAUNCHED_ENV = "KSS_LORA_LAUNCHED"
BUCKET_ELEMENTS = 1 << 24  # 16M floats (64 MB) per all-reduce call


# ----------------------------------------------------------------------------- inside the processes


@dataclass
class DistContext:
    """This process's place in a data-parallel group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    fsdp: FSDPOptions | None = None  # set: parameters are sharded with FSDP2 (see kss_lora.fsdp)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, index: np.ndarray) -> np.ndarray:
        """This rank's contiguous share of ``index`` (ranks differ by at most one example)."""
        return np.array_split(np.asarray(index), self.world_size)[self.rank] if self.enabled else np.asarray(index)

    @property
    def strategy(self) -> str | None:
        return None if not self.enabled else ("fsdp2" if self.fsdp is not None else "ddp")

    def padded_shard(self, index: np.ndarray) -> tuple[np.ndarray, int]:
        """This rank's share of ``index`` padded to the largest rank's length, and how many are real.

        Under FSDP2 every forward pass is a collective, so every rank must run as many; the padding repeats
        an example of ``index`` and its outputs are dropped. Without FSDP2 there is no padding.
        """
        mine = self.shard(index)
        if self.fsdp is None or not len(index):
            return mine, len(mine)
        index = np.asarray(index)
        width = -(-len(index) // self.world_size)  # the first rank's share is the largest
        filler = mine[-1] if len(mine) else index[0]
        return np.concatenate([mine, np.full(width - len(mine), filler, dtype=index.dtype)]), len(mine)

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def all_reduce_grads(self, params: list[torch.nn.Parameter], extra: torch.Tensor) -> torch.Tensor:
        """Sum gradients (missing ones count as zero) and the small ``extra`` vector across ranks.

        ``extra`` rides in the first bucket, so loss sums, example counts and a divergence flag cost no
        separate collective. Returns the summed ``extra``. Under FSDP2 the backward has already summed
        (reduce-scattered) the gradients; only ``extra`` is summed here.
        """
        if not self.enabled:
            return extra
        if self.fsdp is not None:  # on the parameters' device: NCCL reduces GPU tensors only
            summed = extra.to(params[0].device if params else extra.device, torch.float32, copy=True)
            torch.distributed.all_reduce(summed)
            return summed.cpu()
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        buckets: list[list[torch.nn.Parameter]] = [[]]
        size = 0
        for p in params:
            if size and size + p.numel() > BUCKET_ELEMENTS:
                buckets.append([])
                size = 0
            buckets[-1].append(p)
            size += p.numel()
        summed_extra = extra
        for b, bucket in enumerate(buckets):
            parts = [p.grad.reshape(-1).float() for p in bucket]
            if b == 0:
                parts.append(extra.to(parts[0].device if parts else extra.device, torch.float32))
            flat = torch.cat(parts)
            torch.distributed.all_reduce(flat)
            offset = 0
            for p in bucket:
                p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
                offset += p.numel()
            if b == 0:
                summed_extra = flat[offset:].cpu()
        return summed_extra

    def broadcast_params(self, params: list[torch.nn.Parameter], device: torch.device | None = None) -> None:
        """Start every rank from rank 0's trainable weights (they are seeded alike; this makes it certain).

        Under FSDP2 this runs before sharding, while the weights are still on the CPU: ``device`` is where
        the backend can communicate (NCCL: the GPU), and each tensor travels through it.
        """
        if not self.enabled:
            return
        with torch.no_grad():
            for p in params:
                buf = p.data if device is None or p.device == device else p.data.to(device)
                torch.distributed.broadcast(buf, src=0)
                if buf is not p.data:
                    p.data.copy_(buf)

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()


def init_distributed(launcher: Any = None, device: str = "auto") -> DistContext:
    """Join the process group that torchrun/accelerate describe in the environment (no-op when alone).

    ``launcher`` (the run config's block) names the strategy through its profile; ``accelerate launch`` with
    an FSDP config of the user's own selects FSDP2 through the environment. ``device`` (``train.device``)
    picks the backend: NCCL for GPUs, gloo for a CPU run, also on a machine that has GPUs.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dist = torch.distributed
    if not dist.is_initialized():
        on_gpu = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        backend = "nccl" if on_gpu else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    fsdp = FSDPOptions.from_accelerate_env() or (fsdp_options(launcher) if launcher is not None else None)
    return DistContext(
        rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local, backend=dist.get_backend(), fsdp=fsdp
    )


def shutdown_distributed() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def mask_digest(masker: Any, steps: list[int]) -> str:
    """Hash of the KSS masks a masker would draw at ``steps`` (every parameter, sorted by name)."""
    h = hashlib.sha256()
    saved = masker.step
    try:
        for step in steps:
            masker.step = step
            for name in sorted(masker.params):
                keep = masker.keep(name, masker.params[name].shape, masker.params[name].device)
                h.update(name.encode())
                h.update(np.packbits(keep.cpu().numpy().ravel()).tobytes())
    finally:
        masker.step = saved
    return h.hexdigest()[:16]


def params_digest(params: dict[str, torch.nn.Parameter]) -> str:
    """Hash of parameter values (sorted by name): equal on every rank after a correct data-parallel run."""
    h = hashlib.sha256()
    for name in sorted(params):  # sharded (FSDP2) tensors are gathered whole: every rank runs this loop
        h.update(name.encode())
        h.update(full_tensor(params[name].detach()).float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def peak_memory_mb(device: torch.device) -> float:
    """This process's peak memory: allocated GPU memory on CUDA, else resident set size (whole process)."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # kB on Linux


# ----------------------------------------------------------------------------- starting the processes

PROFILES = ("ddp", "fsdp2")


def profile_path(profile: str) -> Path:
    """A shipped accelerate profile by name, or a path to the user's own accelerate config file."""
    path = Path(profile)
    if path.suffix in (".yaml", ".yml", ".json") and path.is_file():
        return path
    root = resources.files("kss_lora") / "configs" / "accelerate"
    shipped = Path(str(root / f"{profile}.yaml"))
    if profile in PROFILES and shipped.is_file():
        return shipped
    raise ConfigError(
        "launcher.profile",
        f"unknown profile {profile!r}; shipped: {', '.join(PROFILES)} (or a path to an accelerate config file)",
    )


def read_profile(launcher: Any) -> dict[str, Any]:
    import yaml

    path = profile_path(launcher.profile)
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - any parse error is the same one-line error
        raise ConfigError("launcher.profile", f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError("launcher.profile", f"{path} is not a mapping of accelerate settings")
    return data


def fsdp_options(launcher: Any) -> FSDPOptions | None:
    """The FSDP2 options the launcher's profile asks for; None for data parallelism with replicated weights.

    Raises a one-line ConfigError for what the runner cannot honour (FSDP1, DeepSpeed, Megatron ...).
    """
    profile = read_profile(launcher)
    kind = str(profile.get("distributed_type", "MULTI_GPU")).upper()
    if kind == "FSDP":
        return FSDPOptions.from_profile(profile.get("fsdp_config") or {})
    if kind in ("MULTI_GPU", "MULTI_CPU", "MULTI_XPU", "MULTI_NPU", "NO"):
        return None
    raise ConfigError(
        "launcher.profile",
        f"distributed_type {kind} is not supported by kss run; use a ddp (MULTI_GPU) or FSDP (fsdp_version: 2) profile",
    )


def check_supported(launcher: Any) -> None:
    """Refuse, as one line, what the runner cannot honour (before any process starts)."""
    check_launcher_args(launcher.name, list(launcher.args))
    fsdp_options(launcher)


def build_command(launcher: Any, cli_args: list[str]) -> list[str]:
    """The command that runs ``kss <cli_args>`` under ``launcher`` (accelerate or torchrun)."""
    check_supported(launcher)
    target = ["-m", "kss_lora.cli", *cli_args]
    if launcher.name == "accelerate":
        cmd = [_accelerate_exe(), "launch", "--config_file", str(profile_path(launcher.profile))]
        n = launcher.num_processes or torch.cuda.device_count()
        if n:
            cmd += ["--num_processes", str(n)]
        return cmd + list(launcher.args) + target
    if launcher.name == "torchrun":
        n = launcher.num_processes or (torch.cuda.device_count() or 2)
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(n),
            *list(launcher.args),
            *target,
        ]
    raise ConfigError("launcher.name", f"nothing to launch for {launcher.name!r}")


def _accelerate_exe() -> str:
    local = Path(sys.executable).with_name("accelerate")
    found = str(local) if local.is_file() else shutil.which("accelerate")
    if not found:
        raise ConfigError("launcher.name", "accelerate is not installed: pip install accelerate")
    return found


def launched() -> bool:
    """True inside a process that a launcher started (so ``kss run`` must not launch again)."""
    return os.environ.get(LAUNCHED_ENV) == "1" or int(os.environ.get("WORLD_SIZE", "1")) > 1


def relaunch(launcher: Any, cli_args: list[str]) -> int:
    """Run ``kss <cli_args>`` under the launcher; returns its exit code."""
    cmd = build_command(launcher, cli_args)
    env = {**os.environ, LAUNCHED_ENV: "1"}
    print("launching: " + " ".join(cmd), file=sys.stderr)
    return subprocess.call(cmd, env=env)
