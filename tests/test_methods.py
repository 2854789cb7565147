"""Methods as data: the method table, resolution of presets and defaults, and the PEFT arguments it sets."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kss_lora.errors import ConfigError
from kss_lora.methods import METHOD_SPECS, MethodSpec, get_method_spec, register_method, resolve_method
from kss_lora.methods.specs import lora_method_names, masking_method_names, method_names, recorded_uses_lora


def method_cfg(name: str, **values: object) -> SimpleNamespace:
    fields = {"preset": None, "rank": 8, "gamma": None, "alpha": None, "sparsity": None, "mask_mode": "grad"}
    return SimpleNamespace(name=name, dropout=None, target_modules=None, **(fields | values))


def test_table_names_match_the_methods_shipped():
    assert method_names() == ("lora", "rslora", "lora-dropout", "dora", "kss", "childtuning-f", "full-ft")
    assert lora_method_names() == ("lora", "rslora", "lora-dropout", "dora", "kss")
    assert masking_method_names() == ("kss", "childtuning-f")
    assert {n: s.masks for n, s in METHOD_SPECS.items() if s.masked} == {"kss": "lora", "childtuning-f": "trainable"}


# name -> (uses_lora, lora_alpha at r=8 and γ=1, default ρ, default dropout, masked, has a KSS config)
RESOLVED = {
    "lora": (True, 8.0, 0.0, 0.0, False, False),
    "rslora": (True, 8**0.5, 0.0, 0.0, False, False),
    "lora-dropout": (True, 8.0, 0.0, 0.1, False, False),
    "dora": (True, 8.0, 0.0, 0.0, False, False),
    "kss": (True, 8.0, 0.10, 0.0, True, True),
    "childtuning-f": (False, 8.0, 0.3, 0.0, True, True),
    "full-ft": (False, 8.0, 0.0, 0.0, False, False),
}


@pytest.mark.parametrize("name", list(RESOLVED))
def test_defaults_per_method(name):
    m = resolve_method(method_cfg(name))
    kss = m.kss_config(seed=3)
    got = (m.uses_lora, m.lora_alpha, m.sparsity, m.dropout, m.masked, kss is not None)
    assert got == pytest.approx(RESOLVED[name])
    if kss is not None:
        assert (kss.sparsity, kss.gamma, kss.seed) == (m.sparsity, 1.0, 3)


def test_presets_alpha_and_standard():
    std = resolve_method(method_cfg("standard"))  # a preset name is shorthand for kss + preset
    assert (std.name, std.preset, std.gamma, std.sparsity, std.masked) == ("kss", "standard", 0.5, 0.0, False)
    assert std.kss_config(0) is not None and std.label() == "standard"
    # alpha → γ follows the method's convention: α/r for LoRA, α/√r for rsLoRA
    assert resolve_method(method_cfg("lora", alpha=16.0, rank=4)).gamma == 4.0
    assert resolve_method(method_cfg("rslora", alpha=16.0, rank=4)).gamma == 8.0
    assert resolve_method(method_cfg("rslora", alpha=16.0, rank=4)).lora_alpha == 16.0


@pytest.mark.parametrize(
    ("name", "values", "field", "words"),
    [
        ("lora", {"sparsity": 0.2}, "method.sparsity", "only kss and childtuning-f mask gradients, not 'lora'"),
        ("childtuning-f", {"mask_mode": "rank"}, "method.mask_mode", "rank mode needs LoRA rank components"),
        ("kss", {"mask_mode": "often"}, "method.mask_mode", "unknown value 'often'; allowed: grad, update, rank"),
        ("magic", {}, "method.name", "unknown method 'magic'; allowed: lora, rslora"),
        ("lora", {"preset": "kss-default"}, "method.preset", "presets apply to method kss only"),
    ],
)
def test_bad_method_blocks(name, values, field, words):
    with pytest.raises(ConfigError) as err:
        resolve_method(method_cfg(name, **values))
    assert err.value.field == field and words in str(err.value)


def test_mask_mode_checked_once_for_every_method():
    # rank mode is refused only where the mask acts on non-LoRA tensors; unmasked methods ignore the mode
    assert resolve_method(method_cfg("full-ft", mask_mode="rank")).mask_mode == "rank"
    assert resolve_method(method_cfg("kss", mask_mode="rank")).mask_mode == "rank"
    assert get_method_spec("childtuning-f").mask_modes == ("grad", "update")


def test_register_method_rejects_taken_names_and_bad_specs():
    with pytest.raises(ValueError, match="already registered"):
        register_method(MethodSpec("lora", "again", uses_lora=True))
    with pytest.raises(ValueError, match="already registered"):
        register_method(MethodSpec("kss-default", "a preset's name", uses_lora=True))
    with pytest.raises(ValueError, match="needs uses_lora"):
        MethodSpec("odd", "mask on LoRA without LoRA", uses_lora=False, masks="lora")
    with pytest.raises(ValueError, match="go together"):
        MethodSpec("odd", "rsLoRA scaling without rsLoRA", uses_lora=True, alpha_convention="sqrt-rank")
    assert "odd" not in METHOD_SPECS


def test_recorded_names_read_back():
    assert [recorded_uses_lora(n) for n in ("kss-sparse", "dora", "full-ft", "childtuning-f")] == [
        True,
        True,
        False,
        False,
    ]
    assert recorded_uses_lora("a-method-from-the-future") is True  # records are read, not validated


@pytest.mark.parametrize(
    ("name", "rslora", "dora"), [("lora", False, False), ("rslora", True, False), ("dora", False, True)]
)
def test_wrap_model_sets_the_specs_peft_arguments(name, rslora, dora):
    from kss_lora.methods import masked_parameters, wrap_model
    from kss_lora.models import load_model

    model = load_model("tiny-bert", task="classification", num_labels=2)
    method = resolve_method(method_cfg(name, rank=4, gamma=2.0, sparsity=None))
    peft_model = wrap_model(model, method, task_type="SEQ_CLS")
    lora = peft_model.peft_config["default"]
    assert (lora.use_rslora, lora.use_dora, lora.r, lora.lora_alpha) == (
        rslora,
        dora,
        4,
        pytest.approx(method.lora_alpha),
    )
    assert masked_parameters(peft_model, method) and all("lora_" in n for n in masked_parameters(peft_model, method))


def test_childtuning_masks_every_trainable_tensor():
    from kss_lora.methods import masked_parameters, wrap_model
    from kss_lora.models import load_model

    model = load_model("tiny-bert", task="classification", num_labels=2)
    method = resolve_method(method_cfg("childtuning-f"))
    wrapped = wrap_model(model, method, task_type="SEQ_CLS")
    assert wrapped is model
    assert set(masked_parameters(wrapped, method)) == {n for n, p in model.named_parameters() if p.requires_grad}
