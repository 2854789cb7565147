"""The KSS mask: statistics, determinism, unbiasedness, the three modes, and exactness at ρ = 0."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import BertConfig, BertForSequenceClassification

from kss_lora import KSSConfig, KSSMasker, attach_kss
from kss_lora.errors import ConfigError
from kss_lora.methods.kss import PRESETS, keep_mask, lora_parameters

CPU = torch.device("cpu")


def tiny_peft(seed: int = 0, rank: int = 4, alpha: float = 4.0, dropout: float = 0.0):
    torch.manual_seed(seed)
    base = BertForSequenceClassification(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    )
    cfg = LoraConfig(
        task_type="SEQ_CLS", r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=["query", "value"]
    )
    return get_peft_model(base, cfg)


def randomize_lora_B(model, std: float) -> None:
    """B starts at zero (so A gets no gradient at step 0); tests that inspect both need B nonzero."""
    with torch.no_grad():
        for name, p in lora_parameters(model).items():
            if "lora_B" in name:
                p.normal_(0, std)


def toy_batch(seed: int = 0, n: int = 8):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 50, (n, 6), generator=g)
    return x, (x[:, 0] % 2).long()


@pytest.mark.parametrize("rho", [0.1, 0.3, 0.5])
def test_kept_fraction_within_binomial_bound(rho):
    n = 200_000
    keep = keep_mask((n,), sparsity=rho, seed=3, step=7, name="w", device=CPU)
    sd = math.sqrt(n * rho * (1 - rho))
    assert abs(keep.sum().item() - n * (1 - rho)) < 5 * sd  # 5σ: fails by chance < 1e-6


def test_masks_deterministic_in_seed_step_name():
    kw = {"sparsity": 0.3, "device": CPU}
    a = keep_mask((1000,), seed=1, step=5, name="x", **kw)
    assert torch.equal(a, keep_mask((1000,), seed=1, step=5, name="x", **kw))
    for other in (
        {"seed": 2, "step": 5, "name": "x"},
        {"seed": 1, "step": 6, "name": "x"},
        {"seed": 1, "step": 5, "name": "y"},
    ):
        assert not torch.equal(a, keep_mask((1000,), **other, **kw))


def test_rescaled_gradient_is_unbiased():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.zeros(2000))
    g = torch.randn(2000)
    masker = KSSMasker({"p": p}, KSSConfig(sparsity=0.3, seed=0))
    total = torch.zeros(2000)
    steps = 400
    for _ in range(steps):
        p.grad = g.clone()
        masker._before_step(None, (), {})
        # every entry is either dropped or rescaled by 1/(1−ρ)
        assert bool(((p.grad == 0) | torch.isclose(p.grad, g / 0.7)).all())
        total += p.grad
        masker.step += 1
    mean = total / steps
    # per-entry std of the mean is |g| * sqrt(ρ/(1-ρ)/steps) ≈ 0.033|g|; check the aggregate tightly
    rel = (mean - g).norm() / g.norm()
    assert rel < 0.05
    assert (mean - g).abs().max() < 0.2 * g.abs().max()


def _train(model, steps, kss=None, lr=1e-2, seed=0):
    """Train a few AdamW steps; returns (losses, masker). The model is trained in place."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    masker = attach_kss(model, opt, kss) if kss is not None else None
    losses = []
    for s in range(steps):
        x, y = toy_batch(seed + s)
        loss = torch.nn.functional.cross_entropy(model(input_ids=x).logits, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses, masker


def test_rho_zero_reproduces_plain_peft_lora_exactly():
    rank, gamma = 4, 0.5
    plain, _ = _train(tiny_peft(rank=rank, alpha=gamma * rank), steps=6)
    kss = KSSConfig(sparsity=0.0, gamma=gamma)
    ours, masker = _train(tiny_peft(rank=rank, alpha=kss.lora_alpha(rank)), steps=6, kss=kss)
    np.testing.assert_allclose(ours, plain, rtol=0, atol=1e-6)
    assert masker.step == 6
    # and a real mask changes training
    dense_model, masked_model = tiny_peft(rank=rank, alpha=gamma * rank), tiny_peft(rank=rank, alpha=gamma * rank)
    _train(dense_model, steps=6)
    _train(masked_model, steps=6, kss=KSSConfig(sparsity=0.5, gamma=gamma))
    diffs = [
        (a - b).abs().max().item()
        for a, b in zip(lora_parameters(dense_model).values(), lora_parameters(masked_model).values(), strict=True)
    ]
    assert max(diffs) > 1e-3


def one_masked_step(optimizer_cls, kss: KSSConfig, **opt_kw):
    """One step on a tiny model with nonzero B (so A and B both get gradients); returns before/after/keep."""
    model = tiny_peft()
    randomize_lora_B(model, 0.1)
    before = {n: p.detach().clone() for n, p in lora_parameters(model).items()}
    opt = optimizer_cls([p for p in model.parameters() if p.requires_grad], **opt_kw)
    masker = attach_kss(model, opt, kss)
    x, y = toy_batch()
    torch.nn.functional.cross_entropy(model(input_ids=x).logits, y).backward()
    keeps = {n: masker.keep(n, p.shape, CPU) for n, p in lora_parameters(model).items()}
    opt.step()
    return before, {n: p.detach() for n, p in lora_parameters(model).items()}, keeps


def test_update_mode_leaves_masked_entries_unchanged():
    # AdamW with weight decay would move every entry; update mode must keep masked ones fixed.
    kss = KSSConfig(sparsity=0.5, mask_mode="update", seed=4)
    before, after, keeps = one_masked_step(torch.optim.AdamW, kss, lr=1e-2, weight_decay=0.1)
    for name, keep in keeps.items():
        assert torch.equal(after[name][~keep], before[name][~keep]), name
        assert not torch.equal(after[name][keep], before[name][keep]), name


def test_grad_mode_masked_entries_get_zero_gradient():
    # In grad mode a masked entry gets zero gradient; with plain SGD (no momentum) it must not move.
    before, after, keeps = one_masked_step(torch.optim.SGD, KSSConfig(sparsity=0.4, seed=1), lr=0.1)
    for name, keep in keeps.items():
        assert torch.equal(after[name][~keep], before[name][~keep]), name
        assert not torch.equal(after[name][keep], before[name][keep]), name


def test_rank_mode_masks_training_forward_only():
    model = tiny_peft()
    randomize_lora_B(model, 0.5)
    x, _ = toy_batch()
    model.eval()
    reference = model(input_ids=x).logits.detach().clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    masker = attach_kss(model, opt, KSSConfig(sparsity=0.5, mask_mode="rank", seed=2))
    assert torch.allclose(model(input_ids=x).logits, reference)  # eval: no mask
    model.train()
    assert not torch.allclose(model(input_ids=x).logits, reference, atol=1e-5)  # training: masked
    model.eval()
    merged = model.merge_and_unload()
    assert torch.allclose(merged(input_ids=x).logits, reference, atol=1e-5)  # merge: no mask
    masker.detach()


def test_config_validation_and_presets():
    assert PRESETS["kss-sparse"].sparsity == 0.30 and PRESETS["standard"].gamma == 0.5
    assert KSSConfig.from_preset("kss-highgamma").lora_alpha(8) == 12.0
    for bad, field in (
        ({"sparsity": 1.0}, "sparsity"),
        ({"sparsity": -0.1}, "sparsity"),
        ({"gamma": 0.0}, "gamma"),
        ({"mask_mode": "foo"}, "mask_mode"),
    ):
        with pytest.raises(ConfigError, match=field):
            KSSConfig(**bad)
    with pytest.raises(ConfigError, match="preset"):
        KSSConfig.from_preset("nope")


# -- the draw (methods/kss/draw.py): 16-bit draws, the numpy CPU path, thread splits -----------------------


def test_threshold_and_scale_are_exactly_unbiased():
    from kss_lora.methods.kss.draw import LEVELS, drop_threshold, keep_scale

    for rho in (0.1, 0.3, 0.5, 0.9):
        t = drop_threshold(rho)
        assert abs(t / LEVELS - rho) <= 0.5 / LEVELS  # ρ at a resolution of 2⁻¹⁶
        assert keep_scale(rho) * (LEVELS - t) / LEVELS == pytest.approx(1.0, abs=1e-15)  # E[M]/P(keep) = 1
        assert keep_scale(rho) == pytest.approx(1 / (1 - rho), rel=0.5 / LEVELS / (1 - rho) + 1e-12)
    assert drop_threshold(1 - 1e-9) == LEVELS - 1  # never drops everything (no division by zero)
    assert drop_threshold(0.0) == 0 and keep_scale(0.0) == 1.0


def test_cpu_mask_stream_is_pinned():
    """The CPU mask values for fixed (seed, step, name): a change of stream (numpy, the draw) must be deliberate."""
    import hashlib

    keep = keep_mask((64, 1000), sparsity=0.1, seed=0, step=3, name="layers.0.q_proj.lora_A.default.weight", device=CPU)
    digest = hashlib.sha256(np.packbits(keep.numpy().ravel()).tobytes()).hexdigest()[:16]
    assert digest == "dc62d17ddbbc6228"


@pytest.mark.parametrize("rho", [0.1, 0.5])
def test_accelerator_draw_statistics(rho):
    """The torch.randint draw used on accelerators, run here on CPU: right kept fraction, deterministic in seed."""
    from kss_lora.methods.kss.draw import _draws_torch, keep_from_draws

    n = 200_000
    draws = _draws_torch(n, 12345, CPU)
    assert draws.dtype == torch.int16 and int(draws.min()) >= -(1 << 15) and int(draws.max()) < (1 << 15)
    keep = keep_from_draws(draws, rho)
    sd = math.sqrt(n * rho * (1 - rho))
    assert abs(keep.sum().item() - n * (1 - rho)) < 5 * sd
    assert torch.equal(draws, _draws_torch(n, 12345, CPU))
    assert not torch.equal(draws, _draws_torch(n, 12346, CPU))


def _grads(shapes: dict[str, tuple[int, ...]], dtype=torch.float32) -> dict[str, torch.nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    params = {}
    for name, shape in shapes.items():
        p = torch.nn.Parameter(torch.zeros(shape, dtype=dtype))
        p.grad = torch.randn(shape, generator=g).to(dtype)
        params[name] = p
    return params


SHAPES = {f"layers.{i}.{m}.lora_{ab}.weight": (4, 37 + i) for i in range(5) for m in ("q", "v") for ab in "AB"}


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_cpu_fast_path_equals_mask_definition_at_any_thread_count(threads):
    """The numpy path (tensors split over threads) computes exactly g ⊙ keep_mask(seed, step, name) · scale."""
    from kss_lora.methods.kss.draw import keep_scale

    config = KSSConfig(sparsity=0.3, seed=5)
    params = _grads(SHAPES)
    dense = {n: p.grad.clone() for n, p in params.items()}
    masker = KSSMasker(params, config, start_step=2)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        masker._before_step(None, (), {})
    finally:
        torch.set_num_threads(saved)
    for name, p in params.items():
        keep = keep_mask(p.shape, sparsity=0.3, seed=5, step=2, name=name, device=CPU)
        expected = dense[name] * keep * torch.tensor(keep_scale(0.3), dtype=torch.float32)
        assert torch.equal(p.grad, expected), name


def test_mask_of_a_tensor_does_not_depend_on_the_other_tensors():
    config = KSSConfig(sparsity=0.5, seed=1)
    everything, alone = _grads(SHAPES), _grads(SHAPES)
    name = "layers.3.v.lora_B.weight"
    KSSMasker(everything, config)._before_step(None, (), {})
    KSSMasker({name: alone[name]}, config)._before_step(None, (), {})
    assert torch.equal(everything[name].grad, alone[name].grad)


def test_bf16_and_strided_gradients_take_the_torch_path_with_the_same_mask():
    config = KSSConfig(sparsity=0.4, seed=2)
    shapes = {"a.lora_A.weight": (6, 9)}
    plain, half = _grads(shapes), _grads(shapes, dtype=torch.bfloat16)
    strided = _grads(shapes)
    strided["a.lora_A.weight"].grad = torch.randn(9, 6, generator=torch.Generator().manual_seed(3)).t()
    assert not strided["a.lora_A.weight"].grad.is_contiguous()
    dense_strided = strided["a.lora_A.weight"].grad.clone()
    for params in (plain, half, strided):
        KSSMasker(params, config)._before_step(None, (), {})
    keep = keep_mask((6, 9), sparsity=0.4, seed=2, step=0, name="a.lora_A.weight", device=CPU)
    assert torch.equal(plain["a.lora_A.weight"].grad != 0, keep)
    assert torch.equal(half["a.lora_A.weight"].grad != 0, keep)
    from kss_lora.methods.kss.draw import keep_scale

    expected = dense_strided * keep * keep_scale(0.4)
    torch.testing.assert_close(strided["a.lora_A.weight"].grad, expected, rtol=1e-6, atol=0)


def test_mask_threads_work_in_a_forked_child():
    """The mask's thread pool is per process: a child forked after a masked step can still mask."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    from kss_lora.methods.kss.draw import mask_cpu_gradients

    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        grads = [torch.ones(50), torch.ones(60)]
        mask_cpu_gradients(grads, [1, 2], 0.5)  # the parent's pool now exists
        ctx = multiprocessing.get_context("fork")
        child = ctx.Process(target=mask_cpu_gradients, args=([torch.ones(50), torch.ones(60)], [1, 2], 0.5))
        child.start()
        child.join(timeout=60)
        alive = child.is_alive()
        if alive:
            child.kill()
        assert not alive and child.exitcode == 0
    finally:
        torch.set_num_threads(saved)


@pytest.mark.parametrize("want_keep", [False, True])
def test_accelerator_batch_path_equals_the_per_tensor_definition(want_keep):
    """mask_device_gradients (one foreach multiply) run here on CPU tensors: exactly g ⊙ M · 1/P(keep)."""
    from kss_lora.methods.kss.draw import _draws_torch, keep_from_draws, keep_scale, mask_device_gradients

    params = _grads(SHAPES)
    grads = [p.grad for p in params.values()]
    dense = [g.clone() for g in grads]
    seeds = list(range(100, 100 + len(grads)))
    keeps = mask_device_gradients(grads, seeds, 0.3, want_keep=want_keep)
    for grad, before, seed, keep in zip(grads, dense, seeds, keeps, strict=True):
        expected_keep = keep_from_draws(_draws_torch(grad.numel(), seed, CPU), 0.3).view(grad.shape)
        assert torch.equal(grad, before * expected_keep * torch.tensor(keep_scale(0.3)))
        assert (keep is not None) == want_keep and (keep is None or torch.equal(keep, expected_keep))
