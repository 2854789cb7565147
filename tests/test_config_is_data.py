"""A config is data (issue 12.5): launcher.args only from an allowlist, no trust_remote_code from a run directory."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from conftest import tiny_config

from kss_lora.cli import main
from kss_lora.config import check_launcher_args, from_dict
from kss_lora.errors import ConfigError

MULTI_NODE = {
    "torchrun": [
        "--nnodes", "2", "--node_rank=1", "--master_addr", "10.0.0.1", "--master-port", "29500",
        "--rdzv_backend", "c10d", "--rdzv_endpoint", "[fe80::1]:29400", "--rdzv_id", "job-42",
        "--max_restarts", "3", "--monitor_interval", "0.5",
    ],
    "accelerate": [
        "--num_machines", "2", "--machine_rank", "0", "--main_process_ip", "node-0.cluster",
        "--main_process_port", "29500", "--rdzv_backend", "static", "--same_network",
    ],
}  # fmt: skip


@pytest.mark.parametrize("launcher", list(MULTI_NODE))
def test_multi_node_launcher_options_are_accepted(tmp_path, launcher):
    cfg = from_dict(tiny_config(tmp_path, launcher={"name": launcher, "args": MULTI_NODE[launcher]}))
    assert cfg.launcher.args == MULTI_NODE[launcher]


REFUSED = [
    ("torchrun", ["--no-python", "sh", "-c", "touch /tmp/pwned"], "--no-python"),
    ("torchrun", ["--nnodes", "2", "evil.py"], "evil.py"),  # a program positional
    ("torchrun", ["--master_addr", "--no-python"], "not plain"),  # an option smuggled in as a value
    ("torchrun", ["--master_addr=$(curl x)"], "not plain"),
    ("torchrun", ["--rdzv_id", "a b"], "not plain"),
    ("torchrun", ["--nnodes"], "needs a value"),
    ("torchrun", ["--run-path", "x.py"], "--run-path"),
    ("torchrun", ["--num_machines", "2"], "--num_machines"),  # accelerate's option under torchrun
    ("accelerate", ["--same_network=yes"], "takes no value"),
    ("accelerate", ["--module", "os"], "--module"),
    ("accelerate", ["--config_file", "/elsewhere.yaml"], "--config_file"),
    ("none", ["--nnodes", "2"], "only used with accelerate or torchrun"),
]


@pytest.mark.parametrize(("launcher", "args", "expected"), REFUSED)
def test_anything_else_is_a_config_error_naming_it(tmp_path, launcher, args, expected):
    with pytest.raises(ConfigError, match="launcher.args") as err:
        from_dict(tiny_config(tmp_path, launcher={"name": launcher, "args": args}))
    assert expected in str(err.value)
    with pytest.raises(ConfigError):
        check_launcher_args(launcher, args)


def test_kss_run_refuses_a_shell_in_launcher_args_exit_2(tmp_path, capsys):
    cfg = tiny_config(tmp_path, launcher={"name": "torchrun", "args": ["--no-python", "sh", "-c", "echo hi"]})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "launcher.args" in err and "--no-python" in err and "\n" not in err
    assert not (tmp_path / "runs").exists()


def _run_info(trust_in_config: bool, name: str = "someone/remote-model"):
    from kss_lora.dynamics.analysis import RunInfo

    dynamics = SimpleNamespace(arrays={"ckpt_logits": np.zeros((1, 4, 3))}, labels=np.zeros(4, dtype=int))
    config = {
        "model": {"name": name, "task": "classification", "trust_remote_code": trust_in_config},
        "method": {"name": "kss", "rank": 4},
    }
    return RunInfo(run_dir=None, config=config, result=None, dynamics=dynamics)


def test_dynamics_never_takes_trust_remote_code_from_the_run_directory(monkeypatch, tmp_path):
    import transformers

    from kss_lora.dynamics import run_capacity as analysis

    seen = []

    def fake_from_pretrained(path, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        raise OSError("stop here")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", fake_from_pretrained)
    # A local model folder (offline, a hub id is refused before transformers is asked): its config asks for
    # remote code, and so does the run directory.
    run = _run_info(trust_in_config=True, name=str(tmp_path))
    # models.model_config turns transformers' OSError into a one-line ConfigError
    with pytest.raises(ConfigError, match="stop here"):
        analysis._skeleton(run)
    with pytest.raises(ConfigError, match="stop here"):
        analysis._skeleton(run, trust_remote_code=True)  # the analyst's own --trust-remote-code
    assert seen == [False, True]
    # run_capacity (what `kss dynamics` calls) passes the flag through and reports the failure as a side note
    line = analysis.run_capacity(run)["line"]
    assert "unavailable" in line and seen[-1] is False
    analysis.run_capacity(run, trust_remote_code=True)
    assert seen[-1] is True


def test_dynamics_cli_has_the_flag():
    from kss_lora.cli import build_parser

    args = build_parser().parse_args(["dynamics", "some_run", "--trust-remote-code"])
    assert args.trust_remote_code is True
    assert build_parser().parse_args(["dynamics", "some_run"]).trust_remote_code is False
