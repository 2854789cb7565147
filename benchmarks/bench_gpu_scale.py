"""KSS-LoRA at Llama-3.1-8B scale on one GPU: dense LoRA vs kss-default, and torchao FP8 vs bf16.

Three measurements in one invocation (about 5 minutes on one H100/H200, 8 at most):

1. **scale**: a random-initialised model of the Llama-3.1-8B architecture (``LlamaConfig`` with the real
   sizes, built with ``from_config`` on the device in bf16: no weights are downloaded) with LoRA r = 16 on
   every linear layer (q k v o gate up down), gradient checkpointing, a batch of 4 × 2048 random tokens.
   Dense LoRA and kss-default (ρ = 0.1, γ = 1: the same adapter, lora_alpha = 16) train the same model with
   two AdamW optimizers, the KSS masker attached to one of them; steps alternate (A B B A ...) and the
   medians give ``kss_over_lora_step``; the per-step peak of ``torch.cuda.max_memory_allocated`` gives
   ``kss_over_lora_peak_memory`` (both optimizers' states are resident in both, so only the mask differs).
2. **fp8 step**: the same architecture with its base linear layers converted by torchao's
   ``convert_to_float8_training`` (``kss_lora.precision.fp8``, as ``precision.mode: fp8`` does), vs bf16;
   decoder layers compiled one by one (torchao's FP8 speed-up needs the casts fused), dense LoRA.
   ``fp8_over_bf16_step`` is the time ratio (below 1 means FP8 is faster).
3. **fp8 quality**: a small Llama (4 layers, hidden 512) trained from scratch, all weights, on synthetic
   sequences from a fixed sparse Markov chain (learnable, with a known floor), bf16 vs FP8 from the same
   seed; ``fp8_val_loss_degradation`` = (FP8 − bf16) / bf16 validation loss.

Goals (issue 17): kss/lora step and peak memory <= 1.01; FP8 step >= 1.3x faster; <= 1% val-loss degradation.
Without torchao the FP8 parts are skipped and say so (``fp8_skipped``).

The real run (awaits a GPU session):
    python benchmarks/bench_gpu_scale.py                       # writes benchmarks/results/gpu_scale.json
A code check on CPU in seconds (tiny shapes; FP8 through torchao's emulation; timings mean nothing):
    python benchmarks/bench_gpu_scale.py --tiny --device cpu --out /tmp/gpu_scale.json
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib.util
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
RESULTS = Path(__file__).parent / "results"
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GOALS = {"kss_over_lora_step": 1.01, "kss_over_lora_peak_memory": 1.01, "fp8_speedup": 1.3, "fp8_degradation": 0.01}

# LlamaConfig sizes. "llama-3.1-8b" is the real architecture; the others keep every dim divisible by 16
# (torchao's FP8 matmuls need it). RoPE scaling is left at its default: it changes no cost.
ARCHS: dict[str, dict[str, int]] = {
    "llama-3.1-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
    ),
    "small": dict(
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        vocab_size=2048,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
    ),
}


def torchao_available() -> bool:
    return importlib.util.find_spec("torchao") is not None


def llama(arch: str, device: torch.device, dtype: torch.dtype, *, fp8: bool, seed: int = 0) -> nn.Module:
    """A random-initialised Llama of ``arch``'s sizes, on ``device``; base linears converted to FP8 when asked."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from kss_lora.precision.runtime import PrecisionRuntime

    config = LlamaConfig(**ARCHS[arch], max_position_embeddings=8192, use_cache=False, tie_word_embeddings=False)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    # The project's FP8 path: precision.mode fp8 converts the base before the adapters go on.
    return PrecisionRuntime(SimpleNamespace(mode="fp8" if fp8 else "bf16"), device).before_adapters(model)


def with_lora(base: nn.Module, method: str, rank: int) -> tuple[nn.Module, Any]:
    """The project's method registry: LoRA (or KSS) of rank r on every linear layer."""
    from kss_lora.config import MethodConfig
    from kss_lora.methods import resolve_method, wrap_model

    resolved = resolve_method(MethodConfig(name=method, rank=rank, target_modules=ALL_LINEAR))
    return wrap_model(base, resolved, task_type="CAUSAL_LM"), resolved


def checkpointing(model: nn.Module) -> None:
    """Gradient (activation) checkpointing, non-reentrant (needed with frozen base weights under PEFT)."""
    enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.x's name
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def autocast(device: torch.device) -> Iterator[None]:
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):  # the runtime's bf16/fp8 recipe
        yield


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, ids: torch.Tensor, device: torch.device) -> float:
    with autocast(device):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)  # as the runner does
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def timed_step(step: Callable[[], float], device: torch.device) -> tuple[float, float | None]:
    """(seconds, peak GiB allocated during the step, CUDA only)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    step()
    sync(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return seconds, peak


def summary(samples: list[tuple[float, float | None]]) -> dict[str, Any]:
    peaks = [p for _, p in samples if p is not None]
    return {
        "step_s_median": statistics.median(s for s, _ in samples),
        "steps_timed": len(samples),
        "peak_memory_gib": max(peaks) if peaks else None,
    }


def random_tokens(batch: int, seq: int, vocab: int, device: torch.device, seed: int) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed)).to(device)


def scale_part(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Dense LoRA vs kss-default on one model, steps alternating."""
    from kss_lora.methods import masked_parameters
    from kss_lora.methods.kss import attach_kss

    base = llama(args.arch, device, torch.bfloat16, fp8=False)
    checkpointing(base)
    model, resolved = with_lora(base, "kss-default", args.rank)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizers = {"lora": torch.optim.AdamW(params, lr=1e-5), "kss-default": torch.optim.AdamW(params, lr=1e-5)}
    masker = attach_kss(
        model, optimizers["kss-default"], resolved.kss_config(0), params=masked_parameters(model, resolved)
    )
    ids = random_tokens(args.batch, args.seq, ARCHS[args.arch]["vocab_size"], device, seed=1)
    samples: dict[str, list[tuple[float, float | None]]] = {name: [] for name in optimizers}
    order = list(optimizers)
    for rep in range(args.warmup + args.steps):
        for name in order if rep % 2 == 0 else reversed(order):
            sample = timed_step(functools.partial(train_step, model, optimizers[name], ids, device), device)
            if rep >= args.warmup:
                samples[name].append(sample)
    rows = {name: summary(s) for name, s in samples.items()}
    lora, kss = rows["lora"], rows["kss-default"]
    out: dict[str, Any] = {
        "methods": rows,
        "lora_tensors": len(masker.params),
        "lora_parameters": sum(p.numel() for p in masker.params.values()),
        "mask_steps": masker.step,
        "kss_over_lora_step": kss["step_s_median"] / lora["step_s_median"],
        "kss_over_lora_peak_memory": (
            kss["peak_memory_gib"] / lora["peak_memory_gib"] if lora["peak_memory_gib"] else None
        ),
    }
    masker.detach()
    return out


def compile_layers(model: nn.Module) -> int:
    """Compile each decoder layer (identical layers share one compiled graph); returns how many."""
    layers = [m for m in model.modules() if type(m).__name__ == "LlamaDecoderLayer"]
    for layer in layers:
        layer.compile()
    return len(layers)


def fp8_step_part(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """bf16 vs FP8 base layers: dense-LoRA step time on the scale model (compiled layers on CUDA).

    If compiling fails, both are timed again eagerly (so the ratio still compares like with like).
    """
    if not args.compile:
        return time_precisions(args, device, compile_model=False)
    try:
        return time_precisions(args, device, compile_model=True)
    except Exception as exc:
        release(device)
        rows = time_precisions(args, device, compile_model=False)
        rows["compile_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return rows


def time_precisions(args: argparse.Namespace, device: torch.device, *, compile_model: bool) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for mode in ("bf16", "fp8"):
        base = llama(args.arch, device, torch.bfloat16, fp8=mode == "fp8")
        checkpointing(base)
        model, _ = with_lora(base, "lora", args.rank)
        model.train()
        compiled = compile_layers(model) if compile_model else 0
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        ids = random_tokens(args.batch, args.seq, ARCHS[args.arch]["vocab_size"], device, seed=2)
        samples = []
        for rep in range(args.warmup + args.steps):
            sample = timed_step(functools.partial(train_step, model, optimizer, ids, device), device)
            if rep >= args.warmup:
                samples.append(sample)
        rows[mode] = {
            **summary(samples),
            "compiled_layers": compiled,
            "float8_linear_modules": sum(type(m).__name__ == "Float8Linear" for m in model.modules()),
        }
        del model, base, optimizer
        release(device)
    rows["fp8_over_bf16_step"] = rows["fp8"]["step_s_median"] / rows["bf16"]["step_s_median"]
    return rows


def markov_chain(vocab: int, successors: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """A sparse random Markov chain: each token has ``successors`` next tokens (Dirichlet weights).

    Returns (next tokens, their cumulative probabilities, entropy rate in nats under the uniform start):
    the loss floor a model can reach.
    """
    rng = np.random.default_rng(seed)
    nxt = np.stack([rng.choice(vocab, successors, replace=False) for _ in range(vocab)])
    probs = rng.dirichlet(np.full(successors, 0.5), size=vocab)
    entropy = float(-(probs * np.log(probs)).sum(axis=1).mean())
    return nxt, np.cumsum(probs, axis=1), entropy


def sample_sequences(chain: tuple[np.ndarray, np.ndarray, float], n: int, seq: int, seed: int) -> torch.Tensor:
    nxt, cum, _ = chain
    rng = np.random.default_rng(seed)
    tokens = np.empty((n, seq), dtype=np.int64)
    tokens[:, 0] = rng.integers(0, nxt.shape[0], n)
    for t in range(1, seq):
        u = rng.random(n)[:, None]
        choice = np.minimum((u > cum[tokens[:, t - 1]]).sum(axis=1), nxt.shape[1] - 1)
        tokens[:, t] = nxt[tokens[:, t - 1], choice]
    return torch.from_numpy(tokens)


def fp8_quality_part(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """bf16 vs FP8 training from scratch on the Markov chain: validation loss."""
    vocab = ARCHS[args.small_arch]["vocab_size"]
    chain = markov_chain(vocab, successors=8, seed=0)
    train = sample_sequences(chain, args.small_steps * args.small_batch, args.small_seq, seed=1)
    val = sample_sequences(chain, 4 * args.small_batch, args.small_seq, seed=2).to(device)
    rows: dict[str, Any] = {"entropy_rate_nats": chain[2], "steps": args.small_steps, "arch": args.small_arch}
    for mode in ("bf16", "fp8"):
        model = llama(args.small_arch, device, torch.float32, fp8=mode == "fp8", seed=0)  # fp32 master weights
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.small_lr, weight_decay=0.0)
        warmup = max(1, args.small_steps // 10)
        schedule = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / warmup, total_iters=warmup)
        t0 = time.perf_counter()
        for step in range(args.small_steps):
            batch = train[step * args.small_batch : (step + 1) * args.small_batch].to(device)
            last = train_step(model, optimizer, batch, device)
            schedule.step()
        model.eval()
        with torch.no_grad(), autocast(device):
            losses = [float(model(input_ids=b, labels=b).loss) for b in val.split(args.small_batch)]
        rows[mode] = {
            "val_loss": statistics.fmean(losses),
            "last_train_loss": last,
            "train_s": time.perf_counter() - t0,
        }
        del model, optimizer
        release(device)
    rows["fp8_val_loss_degradation"] = (rows["fp8"]["val_loss"] - rows["bf16"]["val_loss"]) / rows["bf16"]["val_loss"]
    return rows


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    with contextlib.suppress(Exception):
        torch._dynamo.reset()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="tiny shapes and few steps: a code check (CPU, seconds)")
    p.add_argument("--arch", choices=sorted(ARCHS), help="scale model (default llama-3.1-8b; tiny with --tiny)")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--batch", type=int, help="sequences per step (default 4)")
    p.add_argument("--seq", type=int, help="tokens per sequence (default 2048)")
    p.add_argument("--steps", type=int, help="timed steps per variant (default 10)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 3)")
    p.add_argument("--small-steps", type=int, help="training steps of the FP8 quality runs (default 400)")
    p.add_argument("--small-batch", type=int, default=32)
    p.add_argument("--small-seq", type=int, help="tokens per sequence there (default 256)")
    p.add_argument("--small-lr", type=float, default=1e-3)
    p.add_argument("--no-compile", dest="compile", action="store_false", help="eager FP8/bf16 timing")
    p.add_argument("--skip-fp8", action="store_true", help="only the LoRA vs KSS part")
    p.add_argument("--budget-s", type=float, default=420.0, help="skip the FP8 quality runs if past this (seconds)")
    p.add_argument("--out", type=Path, default=RESULTS / "gpu_scale.json")
    args = p.parse_args(argv)
    defaults = (
        {"arch": "tiny", "batch": 2, "seq": 32, "steps": 2, "warmup": 1, "small_steps": 6, "small_seq": 32}
        if args.tiny
        else {"arch": "llama-3.1-8b", "batch": 4, "seq": 2048, "steps": 10, "warmup": 3, "small_steps": 400}
    )
    defaults.setdefault("small_seq", 256)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.small_arch = "tiny" if args.tiny else "small"
    if args.compile and torch.device(args.device).type != "cuda":
        args.compile = False  # compiling on CPU checks nothing the GPU run needs, and takes minutes
    return args


def attempt(name: str, part: Callable[[], dict[str, Any]], device: torch.device) -> dict[str, Any]:
    """Run one part; a failure (out of memory, a compile error...) is recorded as one line, not lost with the rest."""
    try:
        return part()
    except Exception as exc:  # an unattended GPU run must still write what it did measure
        print(f"{name} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    finally:
        release(device)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    t0 = time.perf_counter()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    result: dict[str, Any] = {
        "benchmark": "gpu_scale",
        "gpu": gpu,
        "device": str(device),
        "tiny": args.tiny,
        "arch": args.arch,
        "rank": args.rank,
        "batch": args.batch,
        "seq": args.seq,
        "steps": args.steps,
        "torch": torch.__version__,
        "goals": GOALS,
    }
    scale = attempt("scale", functools.partial(scale_part, args, device), device)
    result["scale"] = scale
    result["kss_over_lora_step"] = scale.get("kss_over_lora_step")
    result["kss_over_lora_peak_memory"] = scale.get("kss_over_lora_peak_memory")
    print(f"kss/lora step {result['kss_over_lora_step']}, peak memory {result['kss_over_lora_peak_memory']}")

    skip = "--skip-fp8" if args.skip_fp8 else None if torchao_available() else "torchao is not installed"
    result["fp8_skipped"] = skip
    result["native_fp8"] = device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)
    result["fp8_over_bf16_step"] = result["fp8_speedup"] = result["fp8_val_loss_degradation"] = None
    if skip is None:
        step = attempt("fp8 step", functools.partial(fp8_step_part, args, device), device)
        result["fp8_step"] = step
        if "fp8_over_bf16_step" in step:
            result["fp8_over_bf16_step"] = step["fp8_over_bf16_step"]
            result["fp8_speedup"] = 1.0 / step["fp8_over_bf16_step"]
        if time.perf_counter() - t0 > args.budget_s:
            result["fp8_quality"] = {"error": f"skipped: past the time budget of {args.budget_s:.0f} s"}
        else:
            result["fp8_quality"] = attempt("fp8 quality", functools.partial(fp8_quality_part, args, device), device)
        result["fp8_val_loss_degradation"] = result["fp8_quality"].get("fp8_val_loss_degradation")
        print(
            f"fp8/bf16 step {result['fp8_over_bf16_step']}, val-loss degradation {result['fp8_val_loss_degradation']}"
        )
    else:
        print(f"FP8 parts skipped: {skip}")
    result["wall_s"] = time.perf_counter() - t0

    from kss_lora.rundir import atomic_write_json, environment

    result["env"] = environment()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)
    print(f"wrote {args.out} ({result['wall_s']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
