"""apply_emulation on plain Linear stacks and on a tiny PEFT LoRA BERT."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from kss_lora.precision import EmulationConfig, apply_emulation, fake_quant, module_role, quantize

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))


def test_sequential_forward_matches_manual_quantization() -> None:
    model = _mlp()
    x = torch.randn(5, 16)
    ref = model(x)
    with apply_emulation(model, EmulationConfig(scaling="tensor")) as handle:
        assert handle.modules == {"0": "base", "2": "base"}
        out = model(x)
    lin0, lin2 = model[0], model[2]

    def q(t: torch.Tensor) -> torch.Tensor:
        return fake_quant(t, "e4m3", scaling="tensor")

    h = torch.relu(nn.functional.linear(q(x), q(lin0.weight), lin0.bias))
    manual = nn.functional.linear(q(h), q(lin2.weight), lin2.bias)
    assert torch.equal(out, manual)
    assert 0 < _rel(out, ref) < 0.1
    assert torch.equal(model(x), ref)  # removed on leaving the with block
    assert "forward" not in lin0.__dict__


def test_ste_updates_master_weights_and_grad_output_is_quantized() -> None:
    model = _mlp()
    x = torch.randn(5, 16)
    ref = model(x)
    handle = apply_emulation(model, EmulationConfig(scaling="none", base_input=False, base_weight=False))
    out = model(x)
    assert torch.equal(out, ref)  # forward untouched when only grad_output is on
    up = torch.randn_like(out) * 1e-2
    out.backward(up)
    handle.remove()
    # dW of the last Linear = grad_output^T @ input, with grad_output cast to E5M2.
    h = torch.relu(model[0](x)).detach()
    assert torch.allclose(model[2].weight.grad, quantize(up, "e5m2").T @ h, rtol=1e-6, atol=0)
    assert not torch.allclose(model[2].weight.grad, up.T @ h, rtol=1e-3, atol=0)
    # Full-precision master weights receive the gradient and can move by less than a quantization step.
    handle = apply_emulation(model, EmulationConfig())
    w = model[0].weight
    before = w.detach().clone()
    model.zero_grad()
    model(x).sum().backward()
    with torch.no_grad():
        w -= 1e-6 * w.grad
    assert not torch.equal(w, before) and w.dtype == torch.float32
    handle.remove()


def test_stochastic_rounding_emulation_is_seeded() -> None:
    model = _mlp()
    x = torch.randn(5, 16)
    outs = []
    for seed in (1, 1, 2):
        with apply_emulation(model, EmulationConfig(rounding="stochastic", seed=seed)):
            outs.append(model(x).detach())
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


def test_double_apply_is_refused_and_filter_skips() -> None:
    model = _mlp()
    handle = apply_emulation(model, EmulationConfig(), module_filter=lambda name, m: name != "2")
    assert handle.modules == {"0": "base"} and handle.skipped == ["2"]
    with pytest.raises(RuntimeError):
        apply_emulation(model, EmulationConfig())
    handle.remove()
    handle.remove()  # idempotent
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_module_roles() -> None:
    assert module_role("base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.default") == "lora_A"
    assert module_role("x.query.lora_B.other") == "lora_B"
    assert module_role("x.query.base_layer") == "base"
    assert module_role("classifier") == "base"


@pytest.fixture(scope="module")
def peft_bert() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100
    )
    base = transformers.BertForSequenceClassification(config)
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS")
    model = peft.get_peft_model(base, lora)
    with torch.no_grad():  # B starts at zero; make the adapter contribute so its quantization shows
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    model.eval()
    return model


@pytest.mark.parametrize("scaling", ["tensor", "block"])
def test_peft_lora_emulation(peft_bert: nn.Module, scaling: str) -> None:
    model = peft_bert
    ids = torch.randint(0, 100, (3, 12), generator=torch.Generator().manual_seed(1))
    keys = list(model.state_dict())
    ref = model(input_ids=ids).logits.detach()

    handle = apply_emulation(model, EmulationConfig(scaling=scaling))
    roles = list(handle.modules.values())
    assert roles.count("lora_A") == roles.count("lora_B") == 4  # query+value in 2 layers
    assert any(n.endswith("query.base_layer") for n in handle.modules)
    assert list(model.state_dict()) == keys
    model.zero_grad()
    out = model(input_ids=ids).logits
    assert 0 < _rel(out.detach(), ref) < 0.25
    out.pow(2).sum().backward()
    lora_params = [(n, p) for n, p in model.named_parameters() if "lora_" in n]
    assert lora_params and all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in lora_params)
    handle.remove()

    assert torch.equal(model(input_ids=ids).logits.detach(), ref)
    assert list(model.state_dict()) == keys
    model.zero_grad()


def test_peft_lora_only_adapter_quantized(peft_bert: nn.Module) -> None:
    """Quantizing only the LoRA path changes the output less than quantizing everything."""
    model = peft_bert
    ids = torch.randint(0, 100, (3, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(input_ids=ids).logits
        cfg = EmulationConfig(scaling="none", forward_format="e2m1", base_weight=False, base_input=False)
        with apply_emulation(model, cfg):
            lora_only = model(input_ids=ids).logits
        with apply_emulation(model, EmulationConfig(scaling="none", forward_format="e2m1")):
            everything = model(input_ids=ids).logits
    assert 0 < _rel(lora_only, ref) < _rel(everything, ref)
