"""README's code runs as written.

Every ```python block preceded by ``<!-- tested: NAME -->`` is executed verbatim, the blocks of one NAME in
order in one namespace, in a fresh working directory. One documented substitution: the run directory that
"Use what you trained" starts from (``kss run quickstart --run-dir runs/my-run``) is trained here with
``train.max_steps=2`` on fewer examples, so the test takes seconds; the snippets themselves are unchanged.
"""

from __future__ import annotations

import json
import re
import shlex

import numpy as np
import pytest
import torch
from conftest import ROOT

from kss_lora.cli import build_parser, main

README = (ROOT / "README.md").read_text()
TESTED = re.compile(r"<!-- tested: ([\w-]+) -->\n```python\n(.*?)```", re.S)


def readme_blocks(name: str) -> list[str]:
    blocks = [code for block_name, code in TESTED.findall(README) if block_name == name]
    assert blocks, f"no README block marked tested: {name}"
    return blocks


def test_every_marked_block_is_run_by_a_test():
    assert {name for name, _ in TESTED.findall(README)} == {"own-code", "use-what-you-trained"}


def test_readme_kss_commands_parse():
    """Each `kss ...` line of README's bash blocks names a real subcommand with real options."""
    parser = build_parser()
    lines = [ln for block in re.findall(r"```bash\n(.*?)```", README, re.S) for ln in block.splitlines()]
    commands = [ln.split("#")[0].strip() for ln in lines if ln.startswith("kss ")]
    assert any(c.startswith("kss predict") for c in commands)
    for command in commands:
        if "$" in command or command.endswith("\\"):
            continue  # shell variables and continued lines (multi-node) are the shell's business
        parser.parse_known_args(shlex.split(command.replace("<run>", "run"))[1:])


@pytest.mark.slow
def test_in_your_own_code_runs_and_the_saved_adapter_reloads_exactly(tmp_path, monkeypatch, one_thread):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    monkeypatch.chdir(tmp_path)
    first, second = readme_blocks("own-code")
    ns: dict = {"__name__": "readme"}
    exec(compile(first, "README.md:own-code[0]", "exec"), ns)
    saved = json.loads((tmp_path / "my-adapter" / "adapter_config.json").read_text())
    assert saved["task_type"] == "SEQ_CLS" and "classifier" in saved["modules_to_save"]
    model, batch = ns["model"].eval(), ns["batch"]
    with torch.no_grad():
        trained = model(**batch).logits
        base = AutoModelForSequenceClassification.from_pretrained(ns["path"], num_labels=4)
        reloaded = PeftModel.from_pretrained(base, tmp_path / "my-adapter").eval()(**batch).logits
    np.testing.assert_allclose(reloaded.numpy(), trained.numpy(), atol=1e-5)  # the head was trained and saved
    exec(compile(second, "README.md:own-code[1]", "exec"), ns)
    assert ns["trainer"].state.global_step == 3


@pytest.mark.slow
def test_use_what_you_trained_vanilla_peft_equals_kss_predict(tmp_path, monkeypatch, capsys, one_thread):
    from kss_lora.predict import load_run, predict_logits

    assert "kss run quickstart --run-dir runs/my-run" in README
    monkeypatch.chdir(tmp_path)
    quick = ["train.max_steps=2", "train.epochs=1", "data.num_examples=40", "train.threads=1", "train.progress=false"]
    assert main(["run", "quickstart", "--run-dir", "runs/my-run", *quick]) == 0
    capsys.readouterr()
    ns: dict = {"__name__": "readme"}
    for i, code in enumerate(readme_blocks("use-what-you-trained")):
        exec(compile(code, f"README.md:use-what-you-trained[{i}]", "exec"), ns)
    vanilla_line = capsys.readouterr().out.strip()
    assert ns["label_names"] == [ns["id2label"][str(i)] for i in range(len(ns["id2label"]))]
    assert ns["base_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    ours = predict_logits(load_run("runs/my-run"), ["the striker scored twice"])
    np.testing.assert_allclose(ns["logits"].numpy(), ours, atol=1e-5)
    assert main(["predict", "runs/my-run", "--text", "the striker scored twice"]) == 0
    label, prob, _ = capsys.readouterr().out.strip().split("\t")
    assert vanilla_line == f"{label} {prob}"
    card = (tmp_path / "runs/my-run/adapter/README.md").read_text()
    assert "site-packages" not in card and "sentence-transformers/all-MiniLM-L6-v2" in card
