"""Measure, on a few real training steps, what each low-precision format would do to each tensor.

Why on real steps: underflow and saturation depend on the actual magnitudes of activations, weights
and gradients of *this* model on *this* data, and the LoRA factor B starts at zero, so a freshly
initialised adapter says nothing about the update. :func:`probe_run` therefore trains the run for a
few optimizer steps in full precision (AdamW at the run's learning rate, constant, no KSS mask) and,
at every step, hands each Linear's input, weight and output gradient to :class:`TensorProbe`, which
fake-quantizes a row sample to every (format, scaling) pair and accumulates counts.

Sampling: large tensors are reduced to a random subset of whole rows (last dim kept), so block
scaling sees the same blocks it would see on the full tensor, and per-tensor scaling uses the *full*
tensor's amax (the sample is pre-divided by ``amax / fmt.max``, which is exactly what tensor scaling
does). Only NVFP4's second-level float32 scale is computed on the sample; with it the E4M3 block
scales stay in range either way, so the effect is at most a rounding difference in a scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from kss_lora.precision.diagnostics import gamma_sweep, underflow_stats
from kss_lora.precision.emulate import module_role
from kss_lora.precision.formats import get_format, quantize

FORMAT_NAMES: tuple[str, ...] = ("e4m3", "e5m2", "e2m1")
# (label, scaling, block_format): the modes docs/spec.md §3 names.
SCALINGS: tuple[tuple[str, str, str], ...] = (
    ("none", "none", "mx"),
    ("tensor", "tensor", "mx"),
    ("block-mx", "block", "mx"),
    ("block-nvfp4", "block", "nvfp4"),
)
DEFAULT_GAMMAS: tuple[float, ...] = (2.0**-8, 2.0**-6, 2.0**-4, 2.0**-3, 2.0**-2, 0.5, 1.0, 2.0, 4.0)
# The published claims' threshold gamma >= 2**-(b-4): 1/16 at 8 bits, 1 at 4 bits.
CLAIMED_THRESHOLD: dict[str, float] = {"e4m3": 2.0**-4, "e5m2": 2.0**-4, "e2m1": 1.0}


def sample_rows(x: torch.Tensor, max_elements: int, generator: torch.Generator) -> torch.Tensor:
    """A float32 matrix of at most ``max_elements`` values made of whole rows of ``x`` (last dim kept)."""
    x = x.detach().float()
    mat = x.reshape(-1, x.shape[-1]) if x.dim() > 1 else x.reshape(1, -1)
    rows = max(1, max_elements // max(1, mat.shape[1]))
    if mat.shape[0] > rows:
        index = torch.randperm(mat.shape[0], generator=generator)[:rows]
        mat = mat[index]
    return mat


@dataclass
class _Acc:
    """Pooled counts over steps for one (layer, tensor, format, scaling) cell."""

    count: int = 0
    nonzero: int = 0
    underflow: float = 0.0
    saturate: float = 0.0
    sq_err: float = 0.0
    sq_norm: float = 0.0
    steps: int = 0

    def add(self, stats: dict[str, Any], sq_norm: float) -> None:
        self.count += stats["count"]
        self.nonzero += stats["nonzero"]
        self.underflow += stats["underflow_frac"] * stats["nonzero"]
        self.saturate += stats["saturate_frac"] * stats["count"]
        self.sq_err += (stats["rel_error"] ** 2) * sq_norm
        self.sq_norm += sq_norm
        self.steps += 1

    def row(self) -> dict[str, Any]:
        return {
            "underflow_frac": self.underflow / self.nonzero if self.nonzero else 0.0,
            "saturate_frac": self.saturate / self.count if self.count else 0.0,
            "rel_error": math.sqrt(self.sq_err / self.sq_norm) if self.sq_norm > 0 else 0.0,
            "nonzero_frac": self.nonzero / self.count if self.count else 0.0,
            "elements": self.count,
            "steps": self.steps,
        }


@dataclass
class TensorProbe:
    """Accumulates low-precision statistics for named tensors; one entry per (layer, tensor kind)."""

    formats: Sequence[str] = FORMAT_NAMES
    scalings: Sequence[tuple[str, str, str]] = SCALINGS
    max_elements: int = 1 << 16
    seed: int = 0
    cells: dict[tuple[str, str, str, str], _Acc] = field(default_factory=dict)
    meta: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._gen = torch.Generator().manual_seed(self.seed)

    def observe(self, layer: str, tensor: str, x: torch.Tensor, role: str = "") -> None:
        """Fake-quantize a row sample of ``x`` to every (format, scaling) and pool the counts."""
        sample = sample_rows(x, self.max_elements, self._gen)
        finite = torch.isfinite(sample)
        amax_full = float(torch.nan_to_num(x.detach().float().abs(), nan=0.0, posinf=0.0).amax()) if x.numel() else 0.0
        sq_norm = float(torch.where(finite, sample, 0.0).double().pow(2).sum())
        self.meta.setdefault((layer, tensor), {"role": role, "shape": "x".join(map(str, x.shape)), "amax": 0.0})
        self.meta[(layer, tensor)]["amax"] = max(self.meta[(layer, tensor)]["amax"], amax_full)
        for fmt_name in self.formats:
            fmt = get_format(fmt_name)
            for label, scaling, block_format in self.scalings:
                if scaling == "tensor":
                    # Tensor scaling with the full tensor's amax == raw cast of the pre-scaled sample.
                    factor = fmt.max_value / amax_full if amax_full > 0 else 1.0
                    stats = underflow_stats(sample * factor, fmt, scaling="none")
                else:
                    stats = underflow_stats(sample, fmt, scaling=scaling, block_format=block_format)
                key = (layer, tensor, fmt_name, label)
                self.cells.setdefault(key, _Acc()).add(stats, sq_norm)

    def rows(self) -> list[dict[str, Any]]:
        """One row per (layer, tensor, format, scaling), sorted as observed."""
        out = []
        for (layer, tensor, fmt_name, label), acc in self.cells.items():
            meta = self.meta[(layer, tensor)]
            out.append(
                {
                    "layer": layer,
                    "tensor": tensor,
                    "role": meta["role"],
                    "shape": meta["shape"],
                    "amax": meta["amax"],
                    "format": fmt_name,
                    "scaling": label,
                    **acc.row(),
                }
            )
        return out


def _owner_name(name: str) -> str:
    """``a.b.query.lora_B.default`` -> ``a.b.query`` (the PEFT LoRA layer that owns a factor)."""
    return name.rsplit(".", 2)[0]


def _short(name: str) -> str:
    return name.removeprefix("base_model.model.")


def _scaling_of(module: nn.Module | None, adapter: str) -> float:
    scaling = getattr(module, "scaling", None)
    return float(scaling.get(adapter, 1.0)) if isinstance(scaling, dict) else 1.0


def attach_hooks(
    model: nn.Module,
    probe: TensorProbe,
    active: Callable[[], bool],
    lora_outputs: dict[str, torch.Tensor] | None = None,
) -> list[Any]:
    """Forward hooks on every Linear: input and weight now, the output gradient during backward.

    Tensor kinds: ``base_input``/``base_weight``/``base_grad_output`` for frozen (or head) layers,
    ``lora_A_input`` (x), ``lora_A_weight``, ``lora_B_input`` (A x), ``lora_B_weight`` and their
    ``*_grad_output``, plus ``lora_update`` = gamma * B A x, the term LoRA adds to the layer output.
    When ``lora_outputs`` is given, every lora_B output (B A x, without gamma) is also stored there
    under the owning layer's name, for the gamma sweep of LoRA activations.
    """
    modules = dict(model.named_modules())
    handles = []
    for name, module in modules.items():
        if not isinstance(module, nn.Linear):
            continue
        role = module_role(name)
        gamma = _scaling_of(modules.get(_owner_name(name)), name.rsplit(".", 1)[-1]) if role == "lora_B" else 1.0

        def hook(
            mod: nn.Module,
            args: tuple[Any, ...],
            output: torch.Tensor,
            *,
            layer: str = _short(name),
            prefix: str = role,
            role: str = role,
            gamma: float = gamma,
        ) -> None:
            if not args or not torch.is_tensor(args[0]) or not torch.is_tensor(output):
                return
            if role == "lora_B" and lora_outputs is not None:
                lora_outputs[_owner_name(layer)] = output.detach().float()
            if not active():
                return
            probe.observe(layer, f"{prefix}_input", args[0], role)
            probe.observe(layer, f"{prefix}_weight", mod.weight, role)
            if role == "lora_B":
                probe.observe(layer, "lora_update", output * gamma, role)
            if output.requires_grad:
                output.register_hook(lambda g: probe.observe(layer, f"{prefix}_grad_output", g, role))

        handles.append(module.register_forward_hook(hook))
    return handles


def lora_pairs(model: nn.Module) -> Iterable[tuple[str, torch.Tensor, torch.Tensor, float, torch.Tensor | None]]:
    """``(layer, A, B, gamma, W0)`` for every PEFT LoRA layer (adapter ``default`` or the first one)."""
    for name, module in model.named_modules():
        lora_a, lora_b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
        if not isinstance(lora_a, nn.ModuleDict) or not lora_a:
            continue
        adapter = "default" if "default" in lora_a else next(iter(lora_a))
        base = getattr(module, "base_layer", None)
        w0 = base.weight.detach() if isinstance(getattr(base, "weight", None), torch.Tensor) else None
        yield (
            _short(name),
            lora_a[adapter].weight.detach(),
            lora_b[adapter].weight.detach(),
            _scaling_of(module, adapter),
            w0,
        )


def merge_loss(w0: torch.Tensor, delta: torch.Tensor, fmt: str, scaling: str) -> dict[str, float]:
    """What is left of an update ``delta`` merged into ``w0`` and stored in ``fmt``.

    ``lost_frac``: fraction of nonzero entries of ``delta`` for which ``q(w0 + delta) == q(w0)``: the
    update vanished into W0's rounding (swamping, which no per-tensor scale can prevent because the
    scale is set by W0). ``rel_error``: ``||q(w0 + delta) - q(w0) - delta|| / ||delta||``. Scaling
    ``tensor`` uses W0's amax for both casts (the merged weight's scale is W0's up to the update).
    """
    fmt_ = get_format(fmt)
    w0, delta = w0.float(), delta.float()
    factor = 1.0
    if scaling == "tensor":
        amax = float(w0.abs().amax())
        factor = fmt_.max_value / amax if amax > 0 else 1.0
    q0 = quantize(w0 * factor, fmt_) / factor
    q1 = quantize((w0 + delta) * factor, fmt_) / factor
    nonzero = delta != 0
    n = int(nonzero.sum())
    norm = float(delta.norm())
    return {
        "lost_frac": float(((q1 == q0) & nonzero).sum()) / n if n else 0.0,
        "rel_error": float((q1 - q0 - delta).norm()) / norm if norm > 0 else 0.0,
        "nonzero": n,
        "count": delta.numel(),
    }


def gamma_rows(
    model: nn.Module,
    activations: dict[str, torch.Tensor],
    gammas: Sequence[float],
    formats: Sequence[str] = FORMAT_NAMES,
) -> list[dict[str, Any]]:
    """Gamma sweep of the LoRA update, pooled over layers, per format and scaling.

    ``delta_w``: gamma * B @ A of each LoRA layer (the weight update a merge would add);
    ``lora_activation``: gamma * B A x captured at the last step (``activations[layer]`` holds B A x);
    ``merged_w``: the update merged into the base weight, ``q(W0 + gamma B A)``; its ``underflow_frac``
    is the fraction of update entries lost in W0's rounding (see :func:`merge_loss`).
    All come from the trained factors, so the run's own gamma is divided out: the sweep asks what the
    same factors would give at another gamma.
    """
    tensors: dict[str, list[torch.Tensor]] = {"delta_w": [], "lora_activation": []}
    merges: list[tuple[torch.Tensor, torch.Tensor]] = []
    for layer, a, b, _, w0 in lora_pairs(model):
        delta = (b.float() @ a.float()).reshape(-1, a.shape[1])
        tensors["delta_w"].append(delta)
        if w0 is not None and w0.shape == delta.shape:
            merges.append((w0, delta))
        if layer in activations:
            act = activations[layer]
            tensors["lora_activation"].append(act.reshape(-1, act.shape[-1]))
    rows = []
    for kind, parts in tensors.items():
        if not parts:
            continue
        for fmt in formats:
            # Pool layers: stats per layer, counts summed (layers differ in width, so no concatenation).
            pooled: dict[tuple[float, str], _Acc] = {}
            for t in parts:
                sq_norm = float(t.double().pow(2).sum())
                for row in gamma_sweep(t, fmt, gammas, scalings=("none", "tensor", "block")):
                    pooled.setdefault((row["gamma"], row["scaling"]), _Acc()).add(row, sq_norm * row["gamma"] ** 2)
            for (gamma, scaling), acc in pooled.items():
                r = acc.row()
                rows.append(
                    {
                        "tensor": kind,
                        "format": fmt,
                        "scaling": scaling,
                        "gamma": gamma,
                        "underflow_frac": r["underflow_frac"],
                        "saturate_frac": r["saturate_frac"],
                        "rel_error": r["rel_error"],
                        "nonzero_frac": r["nonzero_frac"],
                        "elements": r["elements"],
                        "claimed_threshold": CLAIMED_THRESHOLD[fmt],
                    }
                )
    for fmt in formats if merges else ():
        for gamma in gammas:
            for scaling in ("none", "tensor"):
                acc = _Acc()
                for w0, delta in merges:
                    m = merge_loss(w0, gamma * delta, fmt, scaling)
                    acc.add(
                        {
                            "count": m["count"],
                            "nonzero": m["nonzero"],
                            "underflow_frac": m["lost_frac"],
                            "saturate_frac": 0.0,
                            "rel_error": m["rel_error"],
                        },
                        float(delta.double().pow(2).sum()) * gamma**2,
                    )
                r = acc.row()
                rows.append(
                    {
                        "tensor": "merged_w",
                        "format": fmt,
                        "scaling": scaling,
                        "gamma": float(gamma),
                        "underflow_frac": r["underflow_frac"],
                        "saturate_frac": 0.0,
                        "rel_error": r["rel_error"],
                        "nonzero_frac": r["nonzero_frac"],
                        "elements": r["elements"],
                        "claimed_threshold": CLAIMED_THRESHOLD[fmt],
                    }
                )
    return rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (tensor kind, format, scaling): element-weighted means over layers of the three fractions."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["tensor"], r["format"], r["scaling"]), []).append(r)
    out = []
    for (tensor, fmt, scaling), rs in groups.items():
        w = np.array([r["elements"] for r in rs], dtype=float)
        wz = np.array([r["elements"] * r["nonzero_frac"] for r in rs], dtype=float)

        def mean(key: str, weights: np.ndarray, rs: list[dict[str, Any]] = rs) -> float:
            vals = np.array([r[key] for r in rs], dtype=float)
            return float((vals * weights).sum() / weights.sum()) if weights.sum() > 0 else 0.0

        out.append(
            {
                "tensor": tensor,
                "format": fmt,
                "scaling": scaling,
                "layers": len(rs),
                "underflow_frac": mean("underflow_frac", wz),
                "saturate_frac": mean("saturate_frac", w),
                "rel_error": mean("rel_error", w),
                "max_underflow_frac": max(r["underflow_frac"] for r in rs),
            }
        )
    return out


@dataclass
class ProbeResult:
    """What :func:`probe_run` measured: per-layer rows, their summary, and the gamma sweep."""

    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    gamma_rows: list[dict[str, Any]]
    losses: list[float]
    lora_layers: int


def probe_run(
    run: Any,
    steps: int,
    *,
    gammas: Sequence[float] = DEFAULT_GAMMAS,
    max_elements: int = 1 << 16,
    formats: Sequence[str] = FORMAT_NAMES,
    seed: int = 0,
) -> ProbeResult:
    """Train ``run`` (a prepared :class:`kss_lora.runner.Run`) for ``steps`` optimizer steps, observing.

    Every step's forward/backward is observed (statistics pooled over steps); the optimizer step
    follows, so LoRA B moves away from zero and later steps see a real update. One more forward pass
    (no gradient) on the next batch captures B A x from the trained factors for the gamma sweep.
    The steps use AdamW at ``train.lr`` with a constant rate and no KSS mask: the probe asks what the
    formats do to the tensors of this model and data, not how a method trains.
    """
    from kss_lora.runner import collate

    model, tc = run.model, run.cfg.train
    n = len(run.train_batches)
    probe = TensorProbe(formats=formats, max_elements=max_elements, seed=seed)
    state = {"active": False}
    lora_outputs: dict[str, torch.Tensor] = {}
    handles = attach_hooks(model, probe, lambda: state["active"], lora_outputs)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    order = np.random.default_rng(tc.seed).permutation(n)
    labels = torch.as_tensor(run.train_batches.labels)
    batch = min(tc.batch_size, n)

    def indices(step: int) -> np.ndarray:
        return order[np.arange(step * batch, (step + 1) * batch) % n]

    losses = []
    model.train()
    try:
        for step in range(steps):
            index = indices(step)
            state["active"] = True
            logits = model(**collate(run.train_batches, index, run.pad_id, run.device)).logits.float()
            loss = nn.functional.cross_entropy(logits, labels[index].to(run.device))
            loss.backward()
            state["active"] = False
            losses.append(float(loss.detach()))
            if tc.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        lora_outputs.clear()
        with torch.no_grad():
            model(**collate(run.train_batches, indices(steps), run.pad_id, run.device))
    finally:
        state["active"] = False
        for h in handles:
            h.remove()
    rows = probe.rows()
    return ProbeResult(
        rows=rows,
        summary=summarize(rows),
        gamma_rows=gamma_rows(model, lora_outputs, gammas, formats),
        losses=losses,
        lora_layers=sum(1 for _ in lora_pairs(model)),
    )
