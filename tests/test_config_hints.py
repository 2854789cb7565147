"""Config feedback: a non-KSS method named in an override drops the base config's preset (said once, on
stderr), unknown keys suggest the nearest valid one, and the `kss` command keeps torchao off its default path."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, tiny_config

from kss_lora.config import load_config
from kss_lora.errors import ConfigError


def test_naming_another_method_drops_the_preset(capsys):
    cfg = load_config("agnews", ["method.name=lora", "method.gamma=1.0"])  # README's control command
    assert cfg.method.name == "lora" and cfg.method.preset is None and cfg.method.gamma == 1.0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["note: method.name=lora drops the config's method.preset=kss-default (presets are KSS settings)"]
    from kss_lora.methods import resolve_method

    resolved = resolve_method(cfg.method)
    assert resolved.sparsity == 0.0 and resolved.gamma == 1.0 and not resolved.masked


def test_preset_kept_when_it_still_applies(capsys):
    assert load_config("agnews", ["method.name=kss"]).method.preset == "kss-default"
    assert load_config("agnews", ["train.seed=1"]).method.preset == "kss-default"
    cfg = load_config("agnews", ["method.name=kss", "method.preset=kss-sparse"])
    assert cfg.method.preset == "kss-sparse"
    assert capsys.readouterr().err == ""
    # A preset set by the override itself is the user's: the conflict stays an error.
    with pytest.raises(ConfigError, match="method.preset"):
        load_config("agnews", ["method.name=lora", "method.preset=kss-sparse"])


def test_preset_written_in_a_file_with_another_method_is_still_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"method": {"name": "lora", "preset": "kss-default"}}))
    with pytest.raises(ConfigError, match="presets apply to method kss only"):
        load_config(str(path))


@pytest.mark.parametrize(
    ("override", "suggestion"),
    [
        ("train.lrr=1", "did you mean train.lr?"),
        ("train.learning_rate=1", "did you mean train.lr?"),
        ("method.sparsty=0.1", "did you mean method.sparsity?"),
        ("modle.name=x", "did you mean model?"),
    ],
)
def test_unknown_key_suggests_the_nearest(override, suggestion):
    with pytest.raises(ConfigError) as info:
        load_config("quickstart", [override])
    assert suggestion in str(info.value) and "allowed:" in str(info.value)


def test_no_suggestion_when_nothing_is_near():
    with pytest.raises(ConfigError) as info:
        load_config("quickstart", ["train.zzzzzz=1"])
    assert "did you mean" not in str(info.value)


def test_kss_command_does_not_import_torchao(tmp_path):
    """`kss run` (any command not training in FP8) never imports torchao, so none of its warnings either."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tmp_path, train={"max_steps": 1, "epochs": 1})))
    code = (
        "import atexit, sys; from kss_lora.cli import entry;"
        "atexit.register(lambda: print('TORCHAO', sys.modules.get('torchao'), 'transformers' in sys.modules));"
        f"sys.argv = ['kss', 'run', {str(cfg)!r}, '--run-dir', {str(tmp_path / 'r')!r}]; entry()"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "TORCHAO None True" in out.stdout  # transformers was loaded, torchao was not
    assert "torchao" not in out.stderr and "_pytree" not in out.stderr, out.stderr


def test_fp8_runtime_lifts_the_deferral():
    pytest.importorskip("torchao")
    code = (
        "from kss_lora.optional_imports import defer_torchao; defer_torchao();"
        "from kss_lora.precision.fp8 import require_torchao; require_torchao();"
        "import sys; print('LOADED', sys.modules['torchao'] is not None)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0 and "LOADED True" in out.stdout, out.stderr
