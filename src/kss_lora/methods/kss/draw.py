"""Drawing KSS masks cheaply: 16-bit uniform draws per tensor, applied to CPU gradients while in cache.

At 8B scale the mask covers 448 LoRA tensors (42M entries) every step, next to an AdamW step over the same
tensors; drawn as ``torch.rand`` (a Mersenne Twister, one 32-bit word per entry) and applied in two extra
passes it cost about as much as the AdamW step itself. Here:

- each entry gets a 16-bit uniform draw u and is dropped when u < t = round(ρ · 2¹⁶): ρ acts at a resolution
  of 2⁻¹⁶ and kept entries are rescaled by the exact 1 / P(keep) = 2¹⁶ / (2¹⁶ − t), so ĝ stays unbiased;
- on CPU the draws are numpy SFC64's raw 64-bit words cut in four (raw bit-generator streams are stable
  across numpy versions), from a generator whose state is set from the tensor's 63-bit mask seed alone, so a
  tensor's mask does not depend on which other tensors exist or on how they are split into shards;
- the CPU gradient is masked tensor by tensor in numpy (compare, multiply, scale) through reused per-thread
  buffers, with the tensors split over as many threads as torch uses (numpy releases the GIL);
- on accelerators the draw is ``torch.randint`` on the device's own generator (no host round trip), so a mask
  depends on (seed, step, name) and on the device type, as torch's generators always did.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

LEVELS = 1 << 16  # a mask entry is one 16-bit uniform draw
_HALF = 1 << 15  # draws are stored as int16: u − 2¹⁵
_MASK64 = (1 << 64) - 1
_LOCAL = threading.local()  # generators and scratch buffers are stateful: one set per thread


def mask_seed(seed: int, step: int, name: str) -> int:
    """A 63-bit generator seed that depends only on (seed, step, name)."""
    digest = hashlib.blake2b(f"{seed}/{step}/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def drop_threshold(sparsity: float) -> int:
    """t with P(drop) = t / 2¹⁶: an entry is dropped when its draw u ∈ [0, 2¹⁶) is below t (at most 2¹⁶ − 1)."""
    return min(round(sparsity * LEVELS), LEVELS - 1)


def keep_scale(sparsity: float) -> float:
    """The unbiased rescale of kept entries, 1 / P(keep), for the threshold that ρ becomes."""
    return LEVELS / (LEVELS - drop_threshold(sparsity))


def _splitmix64(x: int) -> tuple[int, int]:
    """One SplitMix64 step: (next state, output); the standard way to expand a seed into generator state."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x, z ^ (z >> 31)


def _sfc64(seed: int) -> np.random.SFC64:
    """This thread's SFC64, its state set from ``seed`` (cheaper than building one through a SeedSequence)."""
    gen = _LOCAL.__dict__.get("sfc64")
    if gen is None:
        gen = _LOCAL.sfc64 = np.random.SFC64(0)
    words = []
    x = seed
    for _ in range(3):
        x, out = _splitmix64(x)
        words.append(out)
    state = np.array([*words, 1], dtype=np.uint64)  # (a, b, c, counter)
    gen.state = {"bit_generator": "SFC64", "state": {"state": state}, "has_uint32": 0, "uinteger": 0}
    return gen


def _draws_cpu(numel: int, seed: int) -> np.ndarray:
    words = _sfc64(seed).random_raw((numel + 3) // 4)
    return words.astype("<u8", copy=False).view("<i2")[:numel]


def uniform16(numel: int, seed: int, device: torch.device) -> torch.Tensor:
    """``numel`` uniform 16-bit draws, as int16 (u − 2¹⁵), from a stream that depends on ``seed`` alone."""
    if device.type == "cpu":
        return torch.from_numpy(_draws_cpu(numel, seed))
    return _draws_torch(numel, seed, device)


def _draws_torch(numel: int, seed: int, device: torch.device) -> torch.Tensor:
    """The accelerator draw: ``torch.randint`` on the device's generator (its own stream, e.g. Philox on CUDA)."""
    cache = _LOCAL.__dict__.setdefault("generators", {})
    gen = cache.get(device)
    if gen is None:  # one generator per device, re-seeded per mask: creating one per call costs more
        gen = cache[device] = torch.Generator(device=device)
    gen.manual_seed(seed)
    return torch.randint(-_HALF, _HALF, (numel,), generator=gen, device=device, dtype=torch.int16)


def keep_from_draws(draws: torch.Tensor, sparsity: float) -> torch.Tensor:
    """True where an entry is kept: u ≥ t."""
    return draws >= drop_threshold(sparsity) - _HALF


def _scratch(dtype: np.dtype, numel: int) -> np.ndarray:
    """A per-thread reusable buffer (fresh memory every step would cost page faults every step)."""
    buffers = _LOCAL.__dict__.setdefault("scratch", {})
    buf = buffers.get(dtype)
    if buf is None or buf.size < numel:
        buf = buffers[dtype] = np.empty(numel, dtype=dtype)
    return buf[:numel]


def cpu_fast_path(grad: torch.Tensor) -> bool:
    """Gradients masked in numpy: plain (not sharded) contiguous float32/float64 CPU tensors."""
    return (
        type(grad) is torch.Tensor
        and grad.device.type == "cpu"
        and grad.dtype in (torch.float32, torch.float64)
        and grad.is_contiguous()
    )


def _mask_one(grad: torch.Tensor, seed: int, sparsity: float, want_keep: bool) -> torch.Tensor | None:
    """grad ← grad ⊙ M / P(keep) in place, for one CPU tensor; returns M (a copy) when asked for it.

    A product, as the formula says: a dropped NaN/inf entry stays NaN (0 · NaN), where the torch path's
    ``masked_fill_`` would zero it; a step with non-finite gradients is lost either way.
    """
    flat = grad.detach().numpy().reshape(-1)
    keep = _scratch(np.dtype(bool), flat.size)
    np.greater_equal(_draws_cpu(flat.size, seed), drop_threshold(sparsity) - _HALF, out=keep)
    np.multiply(flat, keep, out=flat)
    flat *= flat.dtype.type(keep_scale(sparsity))
    return torch.from_numpy(keep.copy()).view(grad.shape) if want_keep else None


def device_fast_path(grad: torch.Tensor) -> bool:
    """Gradients masked by one multi-tensor multiply: plain (not sharded) float32/float64 accelerator tensors.

    Lower precisions take the per-tensor path, whose ``mul_(scale)`` computes in float32: a bf16 factor
    tensor would round 1 / P(keep) (1.1111 → 1.1094) and bias ĝ.
    """
    return type(grad) is torch.Tensor and grad.device.type != "cpu" and grad.dtype in (torch.float32, torch.float64)


def _factor_constants(device: torch.device, dtype: torch.dtype, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    cache = _LOCAL.__dict__.setdefault("constants", {})
    key = (device, dtype, scale)
    if key not in cache:  # 0-dim tensors on the device, made once (a fill per tensor per step would cost launches)
        cache[key] = (torch.tensor(scale, dtype=dtype, device=device), torch.zeros((), dtype=dtype, device=device))
    return cache[key]


def mask_device_gradients(
    grads: Sequence[torch.Tensor], seeds: Sequence[int], sparsity: float, *, want_keep: bool = False
) -> list[torch.Tensor | None]:
    """Mask accelerator gradients in place: per tensor a draw and a ``where`` (factor 1/P(keep) or 0), then one
    ``torch._foreach_mul_`` over all of them; few kernel launches for hundreds of LoRA tensors."""
    threshold = drop_threshold(sparsity) - _HALF
    factors: list[torch.Tensor] = []
    keeps: list[torch.Tensor | None] = []
    for grad, seed in zip(grads, seeds, strict=True):
        keep = (_draws_torch(grad.numel(), seed, grad.device) >= threshold).view(grad.shape)
        scale, zero = _factor_constants(grad.device, grad.dtype, keep_scale(sparsity))
        factors.append(torch.where(keep, scale, zero))
        keeps.append(keep if want_keep else None)
    if factors:
        torch._foreach_mul_(list(grads), factors)
    return keeps


_POOL: dict[int, ThreadPoolExecutor] = {}
_POOL_LOCK = threading.Lock()


def _forget_pools_after_fork() -> None:
    """A forked child inherits the executors but not their threads: work submitted there would never run."""
    global _POOL_LOCK
    _POOL.clear()
    _POOL_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_pools_after_fork)


def _pool(workers: int) -> ThreadPoolExecutor:
    with _POOL_LOCK:
        pool = _POOL.get(workers)
        if pool is None:
            pool = _POOL[workers] = ThreadPoolExecutor(workers, thread_name_prefix="kss-mask")
        return pool


def mask_cpu_gradients(
    grads: Sequence[torch.Tensor], seeds: Sequence[int], sparsity: float, *, want_keep: bool = False
) -> list[torch.Tensor | None]:
    """Mask CPU gradients in place (each with its own seed); the keep masks too when ``want_keep``.

    The tensors are split into contiguous runs of about equal size, one per torch thread. Every tensor's
    mask comes from its own seed, so the split (and the thread count) never changes a value.
    """
    workers = max(1, min(torch.get_num_threads(), len(grads)))
    if workers == 1:
        return [_mask_one(g, s, sparsity, want_keep) for g, s in zip(grads, seeds, strict=True)]
    sizes = np.cumsum([g.numel() for g in grads])
    cuts = (np.searchsorted(sizes, sizes[-1] * np.arange(1, workers) / workers) + 1).tolist()
    bounds = list(zip([0, *cuts], [*cuts, len(grads)], strict=True))

    def run(lo: int, hi: int) -> list[torch.Tensor | None]:
        return [_mask_one(grads[i], seeds[i], sparsity, want_keep) for i in range(lo, hi)]

    futures = [_pool(workers).submit(run, lo, hi) for lo, hi in bounds]
    return [keep for future in futures for keep in future.result()]
