"""Methods as data: the method table, resolution of presets and defaults, and the PEFT arguments it sets."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kss_lora.errors import ConfigError
from kss_lora.methods import METHOD_SPECS, MethodSpec, get_method_spec, register_method, resolve_method
from kss_lora.methods.specs import lora_method_names, masking_method_names, method_names, recorded_uses_lora


def method_cfg(name: str, **values: object) -> SimpleNamespace:
    fields = {"preset": None, "rank": 8, "gamma": None, "alpha": None, "sparsity": None, "mask_mode": "grad"}
    return SimpleNamespace(name=name, **({"dropout": None, "target_modules": None} | fields | values))


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


# ----------------------------------------------------------------------------- method.target_modules (issue 16.4)

TINY_BERT_LINEAR = [
    f"bert.encoder.layer.{i}.{path}"
    for i in (0, 1)
    for path in (
        "attention.output.dense",
        "attention.self.key",
        "attention.self.query",
        "attention.self.value",
        "intermediate.dense",
        "output.dense",
    )
] + ["bert.pooler.dense"]


def adapted_modules(targets: object) -> tuple[list[str], object]:
    """The module paths LoRA wraps on tiny-bert for ``targets``, and the PEFT config's target_modules."""
    from kss_lora.methods import wrap_model
    from kss_lora.models import load_model

    model = load_model("tiny-bert", task="classification", num_labels=2)
    peft_model = wrap_model(model, resolve_method(method_cfg("lora", target_modules=targets)), task_type="SEQ_CLS")
    names = sorted(
        name.removeprefix("base_model.model.")
        for name, module in peft_model.named_modules()
        if hasattr(module, "lora_A")
    )
    return names, peft_model.peft_config["default"].target_modules


def test_all_linear_adapts_every_linear_layer_but_the_head():
    names, peft_targets = adapted_modules("all-linear")
    assert names == sorted(TINY_BERT_LINEAR)  # pooler included; the classifier is trained whole, not adapted
    assert not any(n.startswith("classifier") for n in names)
    # PEFT expands its keyword into module names (short or full paths, depending on the version)
    assert {t.rsplit(".", 1)[-1] for t in peft_targets} == {"query", "key", "value", "dense"}


def test_regex_target_modules_full_match_module_paths():
    names, peft_targets = adapted_modules(r".*\.(query|value)$")
    assert names == [f"bert.encoder.layer.{i}.attention.self.{m}" for i in (0, 1) for m in ("query", "value")]
    assert peft_targets == r".*\.(query|value)$"  # passed to PEFT as a string: its full-match regex rule
    # Full match: a bare "query" regex matches no path (each path has a prefix), so nothing is adapted.
    with pytest.raises(ConfigError, match=r"^method\.target_modules: "):
        adapted_modules("query")


def test_target_module_lists_still_work():
    names, peft_targets = adapted_modules(["query"])
    assert names == [f"bert.encoder.layer.{i}.attention.self.query" for i in (0, 1)]
    assert set(peft_targets) == {"query"}


@pytest.mark.parametrize(
    ("yaml_value", "kept"),
    [("all-linear", "all-linear"), (r"'.*\.(query|value)$'", r".*\.(query|value)$"), ("[query, value]", None)],
)
def test_target_modules_from_an_override(yaml_value, kept):
    from kss_lora.config import load_config

    cfg = load_config("quickstart", [f"method.target_modules={yaml_value}"])
    assert cfg.method.target_modules == (kept if kept is not None else ["query", "value"])
    assert resolve_method(cfg.method).target_modules == cfg.method.target_modules


@pytest.mark.parametrize(
    ("targets", "words"),
    [
        ("(query", "'(query' is not a valid regular expression (missing ), unterminated subpattern"),
        ("", "must not be empty"),
        ([], "must be a non-empty list of module names, 'all-linear' or a regular expression"),
        (["query", ""], "must be a non-empty list of module names"),
    ],
)
def test_bad_target_modules(targets, words):
    with pytest.raises(ConfigError) as err:
        resolve_method(method_cfg("lora", target_modules=targets))
    assert err.value.field == "method.target_modules" and words in str(err.value)


def test_kss_run_with_all_linear_trains_and_saves_the_adapter(tmp_path, capsys):
    import json

    import yaml
    from conftest import tiny_config

    from kss_lora.cli import main

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path, train={"epochs": 1})))
    run_dir = tmp_path / "run"
    assert main(["run", str(path), "--run-dir", str(run_dir), "method.target_modules=all-linear"]) == 0
    assert json.loads((run_dir / "result.json").read_text())["status"] == "ok"
    saved = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert {t.rsplit(".", 1)[-1] for t in saved["target_modules"]} == {"query", "key", "value", "dense"}
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["method"]["target_modules"] == "all-linear"
