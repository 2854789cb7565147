"""Bad input to `kss run` (issue 12 item 8): one line naming the field and what is allowed, exit 2, nothing written.

Each case drives ``kss_lora.cli.main`` on the tiny config and checks the return code, the message on stderr
and that neither the run directory nor output.dir was created.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_config

from kss_lora.cli import main
from kss_lora.config import from_dict, load_config
from kss_lora.errors import ConfigError


def kss_run(tmp_path: Path, capsys, *overrides: str, cfg: dict | None = None, text: str | None = None) -> str:
    """Run `kss run` on a config file, expect exit 2 with nothing written; return stderr's one line."""
    path = tmp_path / "cfg.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(cfg if cfg is not None else tiny_config(tmp_path)))
    run_dir = tmp_path / "run"
    capsys.readouterr()
    assert main(["run", str(path), "--run-dir", str(run_dir), *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert not run_dir.exists() and not (tmp_path / "runs").exists()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------------- train.grad_clip, weight_decay


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.grad_clip=-1", "error: train.grad_clip: must be > 0, or 0 or null to disable, got -1.0"),
        ("train.weight_decay=-0.1", "error: train.weight_decay: must be >= 0 (0 = no weight decay), got -0.1"),
    ],
)
def test_negative_grad_clip_or_weight_decay_is_refused(tmp_path, capsys, override, message):
    assert kss_run(tmp_path, capsys, override) == message


@pytest.mark.parametrize("value", [0, None])
def test_grad_clip_zero_or_null_disables_clipping(tmp_path, value):
    cfg = from_dict(tiny_config(tmp_path, train={"grad_clip": value}))
    assert not cfg.train.grad_clip  # the runner clips only when grad_clip is truthy


# ----------------------------------------------------------------------------- inf and nan

FINITE_FIELDS = ["train.lr", "method.gamma", "method.alpha", "method.sparsity", "noise.rate", "train.warmup_ratio"]


@pytest.mark.parametrize("value", ["inf", "nan"])
@pytest.mark.parametrize("field", FINITE_FIELDS)
def test_non_finite_override_is_refused(tmp_path, capsys, field, value):
    assert kss_run(tmp_path, capsys, f"{field}={value}") == f"error: {field}: must be a finite number, got {value}"


@pytest.mark.parametrize("value", [math.inf, math.nan])
@pytest.mark.parametrize("field", FINITE_FIELDS)
def test_non_finite_yaml_value_is_refused(tmp_path, capsys, field, value):
    block, key = field.split(".")
    cfg = tiny_config(tmp_path, **{block: {key: value}})
    text = yaml.safe_dump(cfg)
    assert (".inf" if value == math.inf else ".nan") in text  # YAML's own spelling, not a string
    err = kss_run(tmp_path, capsys, text=text)
    assert err == f"error: {field}: must be a finite number, got {value}"


# ----------------------------------------------------------------------------- model.name


def test_unknown_model_name_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty HF cache: no copy of any hub id
    err = kss_run(tmp_path, capsys, "model.name=no-such-model")
    assert err == (
        "error: model.name: unknown model 'no-such-model': not a built-in (minilm, smollm2-135m, tiny-bert, "
        "tiny-llama) nor a local folder; hub ids need network access (HF_HUB_OFFLINE is set and the HF cache "
        "holds no copy)"
    )


def test_model_path_that_does_not_exist_says_what_it_was_read_against(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = kss_run(tmp_path, capsys, "model.name=./models/mine")
    assert err.startswith(f"error: model.name: no model folder './models/mine' (read against {tmp_path})")


def test_model_path_that_is_a_file_is_refused(tmp_path, capsys):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    err = kss_run(tmp_path, capsys, f"model.name={weights}")
    assert err.startswith(f"error: model.name: '{weights}' is a file; give a model folder")


def _tiny_bert_folder(folder: Path, *, safetensors: bool, pickled: bool) -> Path:
    """A local model folder (tiny random BERT, MiniLM's tokenizer) with the weight files asked for."""
    from transformers import BertConfig, BertForSequenceClassification

    from kss_lora.models import load_tokenizer

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    model = BertForSequenceClassification(config)
    folder.mkdir()
    config.save_pretrained(folder)
    load_tokenizer("tiny-bert").save_pretrained(folder)
    if safetensors:
        model.save_pretrained(folder)  # safetensors is transformers' only format now
    if pickled:
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


def test_pickled_weights_only_are_refused_in_one_line(tmp_path, capsys):
    folder = _tiny_bert_folder(tmp_path / "model", safetensors=False, pickled=True)
    err = kss_run(tmp_path, capsys, f"model.name={folder}")
    assert err.startswith(
        f"error: model.name: {folder} holds only pickled weights (pytorch_model.bin); kss loads safetensors only"
    )
    assert "convert it once" in err and "use_safetensors=False" in err


def test_local_folder_with_safetensors_never_reads_the_pickle(tmp_path):
    from kss_lora.models import load_model

    folder = _tiny_bert_folder(tmp_path / "model", safetensors=True, pickled=False)
    (folder / "pytorch_model.bin").write_bytes(b"not a pickle: loading it would fail")
    model = load_model(str(folder), task="classification", num_labels=2)
    assert model.config.hidden_size == 32 and model.num_labels == 2


# ----------------------------------------------------------------------------- model.max_length


def test_max_length_beyond_the_model_is_refused(tmp_path, capsys):
    err = kss_run(tmp_path, capsys, "model.max_length=100000")
    assert err.startswith("error: model.max_length: 100000 is beyond the limit of") and "512 positions" in err


def test_check_max_length_names_the_limit():
    from transformers import BertConfig, RobertaConfig

    from kss_lora.errors import ConfigError
    from kss_lora.models import check_max_length, position_limit

    bert = BertConfig(max_position_embeddings=512)
    check_max_length(bert, 512)
    with pytest.raises(ConfigError, match=r"^model\.max_length: 513 is beyond .*: 512 positions .*use at most 512$"):
        check_max_length(bert, 513)
    # RoBERTa numbers positions from padding_idx + 1: 514 table rows hold 512 tokens.
    assert position_limit(RobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512


# ----------------------------------------------------------------------------- train.device


def unavailable_devices() -> list[str]:
    """Devices this machine lacks: cuda when there is no GPU, cuda:<count> always, mps off Apple."""
    devices = [f"cuda:{torch.cuda.device_count()}"]
    if not torch.cuda.is_available():
        devices.append("cuda")
    if not torch.backends.mps.is_available():
        devices.append("mps")
    return devices


@pytest.mark.parametrize("device", unavailable_devices())
def test_unavailable_device_is_refused(tmp_path, capsys, device):
    err = kss_run(tmp_path, capsys, f"train.device={device}")
    assert err.startswith(f"error: train.device: {device} is not available:") and "allowed here: auto, cpu" in err


@pytest.mark.parametrize("device", unavailable_devices())
def test_resolve_device_refuses_what_the_machine_lacks(device):
    from kss_lora.errors import ConfigError
    from kss_lora.models import resolve_device

    with pytest.raises(ConfigError, match=rf"^train\.device: {device} is not available: .*; allowed here: auto, cpu"):
        resolve_device(device)


def test_resolve_device_auto_and_local_rank():
    from kss_lora.models import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda", local_rank=0) == torch.device("cuda", 0)


def test_device_spelling_is_checked_at_config_load(tmp_path, capsys):
    err = kss_run(tmp_path, capsys, "train.device=gpu")
    assert err == "error: train.device: unknown device 'gpu'; allowed: auto, cpu, cuda, cuda:N, mps"


# ----------------------------------------------------------------------------- duplicate YAML keys


def test_duplicate_block_is_refused_with_its_line(tmp_path, capsys):
    text = "model: {name: tiny-bert}\ntrain:\n  lr: 0.01\ndata: {source: synthetic}\ntrain:\n  epochs: 1\n"
    err = kss_run(tmp_path, capsys, text=text)
    assert err == f"error: {tmp_path / 'cfg.yaml'}: YAML (line 5): duplicate key 'train' (first given at line 2)"


def test_duplicate_key_in_a_block_is_refused_with_its_line(tmp_path, capsys):
    text = "model: {name: tiny-bert}\ntrain:\n  lr: 0.01\n  epochs: 1\n  lr: 0.1\n"
    err = kss_run(tmp_path, capsys, text=text)
    assert err == f"error: {tmp_path / 'cfg.yaml'}: YAML (line 5): duplicate key 'lr' (first given at line 3)"


def test_duplicate_key_in_an_override_is_refused(tmp_path, capsys):
    err = kss_run(tmp_path, capsys, "train={lr: 0.1, lr: 0.2}")
    assert err == "error: override train: YAML (line 1): duplicate key 'lr' (first given at line 1)"


def test_yaml_merge_keys_still_override(tmp_path):
    path = tmp_path / "cfg.yaml"
    # A key given once next to a merge key overrides the merged value, as YAML says: not a duplicate.
    path.write_text("train:\n  <<: {lr: 0.01, epochs: 2}\n  lr: 0.1\nmodel: {name: tiny-bert}\n")
    cfg = load_config(str(path))
    assert cfg.train.lr == 0.1 and cfg.train.epochs == 2


# ----------------------------------------------------------------------------- method.target_modules


def test_bad_target_modules_regex_is_refused(tmp_path, capsys):
    err = kss_run(tmp_path, capsys, "method.target_modules=.*(query")
    assert err.startswith("error: method.target_modules: '.*(query' is not a valid regular expression (")


def test_aggregate_and_ls_refuse_a_folder_as_their_output_file(tmp_path, capsys):
    from kss_lora.cli import main

    runs = tmp_path / "runs"
    runs.mkdir()
    folder = tmp_path / "out"
    folder.mkdir()
    for argv in (
        ["aggregate", str(runs), "--csv", str(folder)],
        ["aggregate", str(runs), "--markdown", str(folder)],
        ["ls", str(runs), "--csv", str(folder)],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: --") and "is a directory" in err and "\n" not in err
    assert list(folder.iterdir()) == []


def test_half_precision_causal_lm_path_refuses_pickles_and_unknown_names_too(tmp_path, monkeypatch):
    """`model.dtype: bfloat16` on a non-built-in causal LM loads through its own path: the same refusals hold."""
    from kss_lora.tasks.causal_lm import _load_hf_causal_lm

    folder = _tiny_bert_folder(tmp_path / "model", safetensors=False, pickled=True)
    with pytest.raises(ConfigError, match="holds only pickled weights"):
        _load_hf_causal_lm(str(folder), dtype=torch.bfloat16, trust_remote_code=False, seed=0)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ConfigError, match="unknown model 'no-such-model'"):
        _load_hf_causal_lm("no-such-model", dtype=torch.bfloat16, trust_remote_code=False, seed=0)
