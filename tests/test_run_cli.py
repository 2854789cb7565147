"""`kss run` end to end on a tiny model, the run directory, adapters in vanilla PEFT, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_config

from kss_lora.cli import main
from kss_lora.config import from_dict, load_config, shipped_configs
from kss_lora.runner import Run, predict_logits


def write_config(tmp_path: Path, cfg: dict) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_kss_run_end_to_end(tmp_path, capsys):
    cfg_path = write_config(tmp_path, tiny_config(tmp_path, noise={"rate": 0.25, "seed": 3}))
    assert main(["run", cfg_path, "--run-dir", str(tmp_path / "run")]) == 0
    run_dir = tmp_path / "run"
    result = json.loads((run_dir / "result.json").read_text())
    for key in (
        "status",
        "error",
        "method",
        "seed",
        "train_loss",
        "train_loss_running",
        "val_loss",
        "val_accuracy",
        "gap",
        "test_loss",
        "test_accuracy",
        "epochs",
        "wall_time_s",
        "gap_clean",
        "train_loss_clean",
    ):
        assert key in result, key
    assert result["status"] == "ok" and result["error"] is None and result["epochs"] == 2
    assert result["gap"] == pytest.approx(result["val_loss"] - result["train_loss"])
    # eval-mode train loss is a different number from the running average logged during training
    assert result["train_loss"] != pytest.approx(result["train_loss_running"], abs=1e-6)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert metrics[-1]["train_loss"] == result["train_loss"]
    env = json.loads((run_dir / "env.json").read_text())
    assert env["packages"]["torch"] and "git_commit" in env and env["hardware"]["cpu_count"]
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["method"]["mask_mode"] == "grad" and resolved["train"]["lr"] == 5e-3
    noise = np.load(run_dir / "noise.npz")
    assert (
        noise["is_noisy"].sum() > 0
        and (noise["clean_labels"] != noise["noisy_labels"]).sum() == noise["is_noisy"].sum()
    )
    assert result["noise_rate_realised"] == pytest.approx(noise["is_noisy"].mean())
    assert json.loads((run_dir / "adapter" / "kss_config.json").read_text())["sparsity"] == 0.1
    assert '"status": "ok"' in capsys.readouterr().out


def test_adapter_loads_in_vanilla_peft_and_merges(tmp_path):
    from peft import PeftModel

    from kss_lora.models import load_model

    cfg = from_dict(tiny_config(tmp_path))
    run = Run(cfg)
    result = run.execute(tmp_path / "run")
    assert result["status"] == "ok"
    kw = {"batch_size": 32, "pad_id": run.pad_id, "device": torch.device("cpu")}
    trained = predict_logits(run.model, run.val_batches, **kw)
    base = load_model("tiny-bert", task="classification", num_labels=2, tokenizer=run.tokenizer, seed=0)
    loaded = PeftModel.from_pretrained(base, tmp_path / "run" / "adapter")
    np.testing.assert_allclose(predict_logits(loaded, run.val_batches, **kw), trained, atol=1e-5)
    merged = loaded.merge_and_unload()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    np.testing.assert_allclose(predict_logits(merged, run.val_batches, **kw), trained, atol=1e-4)


def test_kss_at_rho_zero_equals_dense_lora_in_runner(tmp_path):
    a = Run(from_dict(tiny_config(tmp_path, method={"name": "kss", "preset": None, "sparsity": 0.0, "gamma": 2.0})))
    b = Run(from_dict(tiny_config(tmp_path, method={"name": "lora", "preset": None, "alpha": 8.0})))
    ra, rb = a.execute(tmp_path / "a"), b.execute(tmp_path / "b")
    for key in ("train_loss", "train_loss_running", "val_loss", "test_loss"):
        assert ra[key] == pytest.approx(rb[key], abs=1e-6), key


@pytest.mark.parametrize(
    "method", ["lora", "rslora", "lora-dropout", "dora", "childtuning-f", "full-ft", "kss-verysparse"]
)
def test_every_method_trains(tmp_path, method):
    cfg = from_dict(tiny_config(tmp_path, method={"name": method, "preset": None}, train={"max_steps": 3, "epochs": 1}))
    run = Run(cfg)
    before = {n: p.detach().clone() for n, p in run.model.named_parameters() if p.requires_grad}
    result = run.execute(tmp_path / method)
    assert result["status"] == "ok", result["error"]
    moved = [n for n, p in run.model.named_parameters() if n in before and not torch.equal(p.detach(), before[n])]
    assert moved, "no parameter changed"
    if method in ("full-ft", "childtuning-f"):
        assert any("embeddings" in n for n in moved)  # full fine-tuning moves the base model
    else:
        assert all("lora" in n or "classifier" in n or "magnitude" in n for n in moved)


def test_nan_loss_is_recorded_as_failed(tmp_path):
    run = Run(from_dict(tiny_config(tmp_path)))

    def poison(module, args, output):
        output.logits = output.logits * float("nan")
        return output

    run.model.register_forward_hook(poison)
    result = run.execute(tmp_path / "nan")
    assert result["status"] == "failed" and "loss became nan" in result["error"]
    saved = json.loads((tmp_path / "nan" / "result.json").read_text())
    assert saved["status"] == "failed" and (tmp_path / "nan" / "error.log").is_file()


def _bad(tmp_path, **blocks):
    return tiny_config(tmp_path, **blocks)


BAD_INPUTS = {
    "unknown method": ({"method": {"name": "sparse-magic"}}, "method.name"),
    "unknown preset": ({"method": {"preset": "kss-ultra"}}, "method.preset"),
    "rho too big": ({"method": {"sparsity": 1.0}}, "method.sparsity"),
    "rho negative": ({"method": {"sparsity": -0.2}}, "method.sparsity"),
    "gamma zero": ({"method": {"gamma": 0}}, "method.gamma"),
    "rank zero": ({"method": {"rank": 0}}, "method.rank"),
    "missing data file": ({"data": {"source": "file", "train": "/nonexistent/train.csv"}}, "data.train"),
    "unknown key": ({"train": {"learning_rate": 1e-3}}, "train.learning_rate"),
    "bad type": ({"train": {"epochs": "many"}}, "train.epochs"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, case):
    blocks, field = BAD_INPUTS[case]
    assert main(["run", write_config(tmp_path, _bad(tmp_path, **blocks))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and field in err and "\n" not in err and "Traceback" not in err
    assert not list((tmp_path / "runs").rglob("result.json")) if (tmp_path / "runs").exists() else True


def test_bad_data_files(tmp_path, capsys):
    one_class = tmp_path / "one.csv"
    one_class.write_text("text,label\n" + "".join(f"hello {i},pos\n" for i in range(10)))
    no_label = tmp_path / "nolabel.csv"
    no_label.write_text("text,target\n" + "".join(f"hello {i},{i % 2}\n" for i in range(10)))
    unreadable = tmp_path / "bad.jsonl"
    unreadable.write_text("{not json\n")
    cases = [(one_class, "at least two classes"), (no_label, "data.label_column"), (unreadable, "data.train")]
    for path, expected in cases:
        cfg = _bad(tmp_path, data={"source": "file", "train": str(path)})
        assert main(["run", write_config(tmp_path, cfg)]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and "\n" not in err, err
    assert not (tmp_path / "runs").exists()


def test_malformed_yaml_and_overrides(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  name: [unclosed\n")
    assert main(["run", str(path)]) == 2
    assert "malformed YAML" in capsys.readouterr().err
    good = write_config(tmp_path, tiny_config(tmp_path))
    assert main(["run", good, "method.bogus=1"]) == 2
    assert "method.bogus" in capsys.readouterr().err
    cfg = load_config(good, ["method.preset=kss-sparse", "train.lr=1e-4", "method.target_modules=[query]"])
    assert cfg.method.preset == "kss-sparse" and cfg.train.lr == 1e-4 and cfg.method.target_modules == ["query"]


def test_every_shipped_config_validates():
    shipped = shipped_configs()
    assert {"quickstart", "agnews"} <= set(shipped)
    for path in shipped.values():
        raw = yaml.safe_load(path.read_text())
        if "grid" in raw or "base" in raw:  # sweep files are validated by the lab's own test
            continue
        load_config(str(path))


def test_overrides_may_follow_options(tmp_path):
    cfg_path = write_config(tmp_path, tiny_config(tmp_path))
    assert main(["run", cfg_path, "--run-dir", str(tmp_path / "r"), "train.max_steps=1", "train.epochs=1"]) == 0
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert result["steps"] == 1 and result["epochs"] == 1
