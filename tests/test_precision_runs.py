"""Low precision in real runs: emulated FP8 vs fp32, torchao FP8 on CPU, and the emulation speed-ups.

The speed-ups (fast nearest-rounding cast, cached quantization of unchanged tensors) must be invisible:
these tests compare them bit for bit with the general code paths.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_config
from torch import nn

from kss_lora.config import from_dict
from kss_lora.errors import ConfigError
from kss_lora.precision import EmulationConfig, apply_emulation, emulate, quantize, representable_values
from kss_lora.precision.formats import FORMATS
from kss_lora.runner import Run, run


@pytest.fixture(scope="module")
def fp32_result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("fp32")
    return run(from_dict(tiny_config(tmp, output={"save_adapter": False})), tmp / "run")


def test_emulated_fp8_run_is_close_to_fp32(tmp_path, fp32_result) -> None:
    emu = run(
        from_dict(tiny_config(tmp_path, precision={"mode": "emu-fp8"}, output={"save_adapter": False})),
        tmp_path / "emu",
    )
    assert fp32_result["status"] == emu["status"] == "ok"
    assert emu["precision"] == "emu-fp8"
    rel = abs(emu["val_loss"] - fp32_result["val_loss"]) / fp32_result["val_loss"]
    # FP8 changes the numbers (so emulation is really on) but only slightly with amax scaling.
    assert emu["val_loss"] != fp32_result["val_loss"]
    assert rel < 0.05, rel


def test_fp8_torchao_trains_on_cpu_with_lora_on_top(tmp_path) -> None:
    pytest.importorskip("torchao")
    from torchao.float8.float8_linear import Float8Linear

    prepared = Run(from_dict(tiny_config(tmp_path, precision={"mode": "fp8"}, output={"save_adapter": False})))
    modules = dict(prepared.model.named_modules())
    converted = [n for n, m in modules.items() if isinstance(m, Float8Linear)]
    assert converted and all("lora_" not in n and "classifier" not in n for n in converted)
    # Converted before injection: PEFT's LoRA layer wraps a Float8Linear base layer, its A/B stay plain Linear.
    query = [n for n in modules if n.endswith("attention.self.query")]
    assert query
    for name in query:
        assert isinstance(modules[f"{name}.base_layer"], Float8Linear)
        assert type(modules[f"{name}.lora_A.default"]) is nn.Linear
    # The emulated FP8 matmul really casts: it differs from the float32 matmul, by FP8-sized error.
    layer = modules[f"{query[0]}.base_layer"]
    x = torch.randn(4, 8, layer.in_features)
    with torch.no_grad():
        ref = nn.functional.linear(x, layer.weight, layer.bias)
        rel = float((layer(x) - ref).norm() / ref.norm())
    assert 1e-4 < rel < 0.1, rel
    before = {n: p.detach().clone() for n, p in prepared.model.named_parameters() if p.requires_grad}
    result = prepared.execute(tmp_path / "fp8")
    assert result["status"] == "ok", result["error"]
    assert math.isfinite(result["val_loss"]) and result["precision"] == "fp8"
    moved = [n for n, p in prepared.model.named_parameters() if n in before and not torch.equal(p, before[n])]
    assert any("lora_B" in n for n in moved)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_fast_nearest_cast_matches_general_path(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    for name, fmt in FORMATS.items():
        mags = torch.exp2(torch.empty(20000, dtype=torch.float64).uniform_(-30, 20, generator=g))
        vals = representable_values(name)
        mids = (vals[1:] + vals[:-1]) / 2  # exact ties
        specials = torch.tensor([0.0, math.inf, math.nan, fmt.max_value * 1.03, 1e-45, 3e38], dtype=torch.float64)
        x = torch.cat([mags, vals, mids, mids * (1 + 1e-6), mids * (1 - 1e-6), specials])
        x = torch.cat([x, -x]).to(dtype)
        fast = quantize(x, name)
        general = quantize(x, name, saturate=False)  # the general path; overflow -> inf/nan instead of max
        overflow = torch.isinf(general) | (torch.isnan(general) & ~torch.isnan(x))
        general = torch.where(overflow, torch.copysign(torch.full_like(general, fmt.max_value), x), general)
        same = (fast == general) | (torch.isnan(fast) & torch.isnan(general))
        assert bool(same.all()), (name, x[~same][:5], fast[~same][:5], general[~same][:5])
        assert torch.equal(torch.signbit(fast), torch.signbit(general))


def test_quantization_cache_is_invisible(monkeypatch) -> None:
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")

    def build() -> nn.Module:
        torch.manual_seed(0)
        config = transformers.BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100
        )
        model = peft.get_peft_model(
            transformers.BertForSequenceClassification(config),
            peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"]),
        )
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.1)
        return model

    ids = torch.randint(0, 100, (3, 10), generator=torch.Generator().manual_seed(1))

    def trace(cache_enabled: bool) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        original = emulate._QuantCache.__init__
        monkeypatch.setattr(emulate._QuantCache, "__init__", lambda self, enabled: original(self, cache_enabled))
        model = build()
        handle = apply_emulation(model, EmulationConfig(scaling="tensor"))
        model.eval()
        with torch.no_grad():
            evals = model(input_ids=ids).logits
        model.train()
        out = model(input_ids=ids).logits
        out.pow(2).sum().backward()
        with torch.no_grad():  # an in-place update must invalidate a cached LoRA weight
            for p in model.parameters():
                if p.requires_grad:
                    p -= 0.1 * p.grad
            after = model(input_ids=ids).logits
        handle.remove()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return torch.stack([evals, out.detach()]), after, grads

    plain, plain_after, plain_grads = trace(False)
    cached, cached_after, cached_grads = trace(True)
    assert torch.equal(plain, cached) and torch.equal(plain_after, cached_after)
    assert plain_grads.keys() == cached_grads.keys() and plain_grads
    assert all(torch.equal(plain_grads[n], cached_grads[n]) for n in plain_grads)


def test_compute_dtype_option(tmp_path) -> None:
    with pytest.raises(ConfigError, match="compute_dtype"):
        EmulationConfig(compute_dtype="float16")
    cfg = from_dict(tiny_config(tmp_path, precision={"mode": "emu-fp8", "emulation": {"compute_dtype": "bfloat16"}}))
    prepared = Run(cfg)
    with prepared.precision.autocast():
        y = nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4))
    assert y.dtype == torch.bfloat16
    plain = Run(from_dict(tiny_config(tmp_path, precision={"mode": "emu-fp8"})))
    with plain.precision.autocast():
        assert nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4)).dtype == torch.float32
