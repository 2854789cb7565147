"""Apply low-precision emulation to a model's Linear layers, reversibly.

How: every selected ``nn.Linear`` gets an instance-level ``forward`` that computes
``F.linear(q_in(x), q_w(W), b)`` with straight-through quantizers, and wraps the output with
:func:`quantize_grad` so the backward pass sees a low-precision ``grad_output``. Why this design:

- Parameters are not touched: ``state_dict()`` keeps its keys and full-precision values, so checkpoints
  (and PEFT adapters) saved while emulating are plain; ``torch.nn.utils.parametrize`` would rename keys.
- The STE sends gradients to the full-precision master weights, which the optimizer updates.
- :meth:`EmulationHandle.remove` deletes the instance attribute (or restores a pre-existing one), so
  the module is exactly the original object again.

Roles: a Linear whose name ends in ``lora_A.<adapter>`` / ``lora_B.<adapter>`` (PEFT's layout) is a
LoRA factor (``lora_weight`` / ``lora_activation`` flags); every other Linear, including PEFT's
``base_layer`` and heads, is a base layer (``base_weight`` / ``base_input``). Biases stay in high
precision, as in FP8 training recipes. Only modules whose class uses ``nn.Linear.forward`` are
wrapped; Linear subclasses with their own forward (e.g. bitsandbytes) are listed in ``skipped``.
Not covered: LoRA on embeddings/convolutions, and DoRA's weight-norm term, which reads
``base_layer.weight`` / ``lora_A.weight`` directly rather than through ``forward``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kss_lora.precision.config import EmulationConfig
from kss_lora.precision.scaling import QuantSpec
from kss_lora.precision.ste import fake_quant_ste, quantize_grad

_MISSING = object()


def module_role(name: str) -> str:
    """``"lora_A"``, ``"lora_B"`` or ``"base"`` for a Linear's qualified name (PEFT naming)."""
    parts = name.split(".")
    if len(parts) >= 2 and parts[-2] in ("lora_A", "lora_B"):
        return parts[-2]
    return "base"


class _GeneratorPool:
    """One seeded generator per device, so stochastic rounding is reproducible on CPU and GPU alike."""

    def __init__(self, seed: int):
        self.seed = seed
        self._gens: dict[torch.device, torch.Generator] = {}

    def get(self, device: torch.device) -> torch.Generator:
        if device not in self._gens:
            self._gens[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._gens[device]


class _QuantCache:
    """Reuse fake-quantized tensors that cannot have changed: a speed-up with identical results.

    Why: emulation on CPU costs more than the matmuls it wraps. Two kinds of work repeat:
    - frozen base weights are re-quantized on every forward although they never change; a weight is
      reused while its ``_version`` (bumped by every in-place update, e.g. the optimizer's) is unchanged;
    - one activation feeds several Linears (query/key/value and LoRA A all read the same hidden
      states), so the last input is reused when the very same tensor object comes again.
    A strong reference to the cached input keeps its memory from being recycled, so identity plus
    ``_version`` is a sound key; grad mode is part of the key so a tensor cached under ``no_grad`` never
    cuts a gradient. Only deterministic (nearest) rounding is cached: stochastic rounding must draw anew.
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._input: tuple[torch.Tensor, int, bool, torch.Tensor] | None = None

    def input(self, x: torch.Tensor, spec: QuantSpec, gen: torch.Generator | None) -> torch.Tensor:
        grad = torch.is_grad_enabled()
        hit = self._input
        if self.enabled and hit is not None and hit[0] is x and hit[1] == x._version and hit[2] == grad:
            return hit[3]
        q = fake_quant_ste(x, spec, generator=gen)
        if self.enabled:
            self._input = (x, x._version, grad, q)
        return q

    def clear(self) -> None:
        self._input = None


def _emulated_forward(
    module: nn.Linear,
    fwd: QuantSpec | None,
    quant_input: bool,
    quant_weight: bool,
    bwd: QuantSpec | None,
    gens: _GeneratorPool | None,
    cache: _QuantCache,
) -> Callable[[torch.Tensor], torch.Tensor]:
    weight_cache: list[Any] = [None]  # (version, data_ptr, dtype, device, quantized weight)

    def quant_weight_cached(w: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        # A frozen weight (no grad needed) is constant between in-place updates: quantize it once.
        constant = cache.enabled and not (w.requires_grad and torch.is_grad_enabled())
        key = (w._version, w.data_ptr(), w.dtype, w.device)
        if constant and weight_cache[0] is not None and weight_cache[0][:4] == key:
            return weight_cache[0][4]
        q = fake_quant_ste(w, fwd, generator=gen)
        weight_cache[0] = (*key, q.detach()) if constant else None
        return q

    def forward(input: torch.Tensor) -> torch.Tensor:
        gen = gens.get(input.device) if gens is not None else None
        x, w = input, module.weight
        if quant_input and fwd is not None:
            x = cache.input(x, fwd, gen)
        if quant_weight and fwd is not None:
            w = quant_weight_cached(w, gen)
        out = F.linear(x, w, module.bias)
        if bwd is not None and out.requires_grad:
            out = quantize_grad(out, bwd, generator=gen)
        return out

    return forward


@dataclass
class EmulationHandle:
    """Returned by :func:`apply_emulation`; ``remove()`` (or leaving a ``with`` block) undoes it.

    ``modules`` maps each wrapped module's name to its role (``base``, ``lora_A``, ``lora_B``);
    ``skipped`` lists Linear-like modules left alone, so callers can log what was not emulated.
    """

    config: EmulationConfig
    modules: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    _saved: list[tuple[nn.Module, Any]] = field(default_factory=list, repr=False)
    _cache: Any = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return bool(self._saved)

    def remove(self) -> None:
        """Restore every wrapped module's original ``forward``; safe to call more than once."""
        if self._cache is not None:
            self._cache.clear()
        while self._saved:
            module, previous = self._saved.pop()
            del module.forward
            if previous is not _MISSING:
                module.forward = previous

    def __enter__(self) -> EmulationHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def apply_emulation(
    model: nn.Module,
    cfg: EmulationConfig,
    *,
    module_filter: Callable[[str, nn.Module], bool] | None = None,
) -> EmulationHandle:
    """Emulate ``cfg``'s low precision in ``model``'s Linear layers until ``handle.remove()``.

    ``module_filter(name, module) -> bool`` can exclude layers (e.g. the classification head, which
    FP8 recipes often keep in high precision). Applying twice to the same modules is refused, because
    the second wrapper would bypass the first.
    """
    fwd = cfg.forward_spec()
    bwd = cfg.backward_spec() if cfg.grad_output else None
    gens = _GeneratorPool(cfg.seed) if cfg.rounding == "stochastic" else None
    cache = _QuantCache(enabled=cfg.rounding == "nearest")
    handle = EmulationHandle(config=cfg, _cache=cache)
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if type(module).forward is not nn.Linear.forward:
            handle.skipped.append(name)
            continue
        if module_filter is not None and not module_filter(name, module):
            handle.skipped.append(name)
            continue
        if getattr(module.forward, "_kss_emulated", False):
            handle.remove()
            raise RuntimeError(f"{name!r} is already emulated; remove the first handle before applying again")
        role = module_role(name)
        if role == "base":
            q_in, q_w = cfg.base_input, cfg.base_weight
        else:
            q_in, q_w = cfg.lora_activation, cfg.lora_weight
        if not (q_in or q_w or bwd is not None):
            continue
        forward = _emulated_forward(module, fwd, q_in, q_w, bwd, gens, cache)
        forward._kss_emulated = True  # type: ignore[attr-defined]
        handle._saved.append((module, module.__dict__.get("forward", _MISSING)))
        module.forward = forward
        handle.modules[name] = role
    return handle
