"""`kss predict` and kss_lora.load_run_model: the run's own predictions back, files in and out, causal-LM
prompts formatted as in training, a portable adapter folder, and bad input (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import tiny_config, with_blocks

from kss_lora.cli import main
from kss_lora.config import from_dict
from kss_lora.predict import load_run, predict_logits, probabilities, prompt_ids
from kss_lora.runner import Run
from kss_lora.tasks.classification import predict_logits as batched_logits

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["stocks fell as rates rose", "the striker scored twice", "a new telescope sees far", "the vote was close"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny 3-class classification run, and the trained model's own validation logits."""
    tmp = tmp_path_factory.mktemp("cls")
    run = Run(from_dict(tiny_config(tmp, data={"num_classes": 3}, train={"epochs": 1})))
    assert run.execute(tmp / "run")["status"] == "ok"
    logits = batched_logits(run.model, run.val_batches, batch_size=16, pad_id=run.pad_id, device=torch.device("cpu"))
    return tmp / "run", run, logits


def test_load_run_model_gives_the_trained_models_logits(trained):
    import kss_lora

    run_dir, run, logits = trained
    model, tokenizer, labels = kss_lora.load_run_model(run_dir)
    assert labels == run.data.label_names and len(labels) == 3
    assert model.config.id2label == dict(enumerate(labels))
    loaded = load_run(run_dir)
    again = predict_logits(loaded, run.data.validation.texts, batch_size=5)  # other batching, same numbers
    np.testing.assert_allclose(again, logits, atol=1e-5)
    assert tokenizer(TEXTS[0])["input_ids"] == run.tokenizer(TEXTS[0])["input_ids"]


def test_adapter_folder_is_self_sufficient(trained, tmp_path):
    run_dir, run, logits = trained
    adapter = run_dir / "adapter"
    names = {p.name for p in adapter.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "kss_model.json", "tokenizer_config.json"} <= names
    assert "config.json" not in names  # it would make transformers take the folder for a full model
    saved = json.loads((adapter / "adapter_config.json").read_text())
    assert saved["task_type"] == "SEQ_CLS" and "classifier" in saved["modules_to_save"]
    from safetensors.torch import load_file

    assert any("classifier" in k for k in load_file(adapter / "adapter_model.safetensors"))  # the trained head
    info = json.loads((adapter / "kss_model.json").read_text())
    assert info["id2label"] == {str(i): n for i, n in enumerate(run.data.label_names)} and info["num_labels"] == 3
    # Copied out of its run directory, the folder alone gives the same predictions.
    moved = shutil.copytree(adapter, tmp_path / "elsewhere")
    got = predict_logits(load_run(moved), run.data.validation.texts)
    np.testing.assert_allclose(got, logits, atol=1e-5)


def test_runs_saved_before_kss_model_json_still_load(trained, tmp_path):
    run_dir, run, logits = trained
    old = Path(shutil.copytree(run_dir, tmp_path / "old"))
    for name in ("kss_model.json", "tokenizer.json", "tokenizer_config.json"):
        (old / "adapter" / name).unlink()
    loaded = load_run(old)  # labels and format rebuilt from config.yaml (and its synthetic data)
    assert loaded.label_names == run.data.label_names
    np.testing.assert_allclose(predict_logits(loaded, run.data.validation.texts), logits, atol=1e-5)


def test_predict_texts_prints_label_and_probability(trained, capsys):
    run_dir, run, _ = trained
    assert main(["predict", str(run_dir), "--text", TEXTS[0], "--text", TEXTS[1]]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    probs = probabilities(predict_logits(load_run(run_dir), TEXTS[:2]))
    assert len(lines) == 2
    for line, text, row in zip(lines, TEXTS, probs):
        label, prob, echoed = line.split("\t")
        assert label == run.data.label_names[int(row.argmax())] and float(prob) == pytest.approx(row.max(), abs=1e-4)
        assert echoed == text


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_predict_file_writes_labels_and_probabilities(trained, tmp_path, capsys, suffix):
    run_dir, run, _ = trained
    texts = [f"{t} number {i}" for i in range(40) for t in TEXTS[:1]] + TEXTS
    src = tmp_path / f"in{suffix}"
    frame = pd.DataFrame({"id": range(len(texts)), "body": texts})
    if suffix == ".jsonl":
        frame.to_json(src, orient="records", lines=True)
    else:
        frame.to_csv(src, sep="\t" if suffix == ".tsv" else ",", index=False)
    out = tmp_path / "sub" / "pred.csv"
    args = ["predict", str(run_dir), "--file", str(src), "--text-column", "body", "-o", str(out), "--batch-size", "4"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "100%" in err and "wrote 44 predictions" in err  # progress lines when stderr is not a terminal
    got = pd.read_csv(out)
    names = run.data.label_names
    assert list(got.columns) == ["body", "predicted_label", *[f"prob_{n}" for n in names]]
    probs = got[[f"prob_{n}" for n in names]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert got["predicted_label"].tolist() == [names[i] for i in probs.argmax(axis=1)]
    expected = probabilities(predict_logits(load_run(run_dir), texts))
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    assert got["body"].tolist() == texts
    assert not [p for p in out.parent.iterdir() if p.name != "pred.csv"]  # no temporary file left


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_bad_input_is_one_line_exit_2(trained, tmp_path, capsys):
    run_dir, _, _ = trained
    assert main(["predict", str(tmp_path / "nope"), "--text", "x"]) == 2
    _one_line_error(capsys, "no such directory")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("mine")
    assert main(["predict", str(tmp_path / "notes"), "--text", "x"]) == 2
    _one_line_error(capsys, "not a kss run directory")
    no_adapter = Path(shutil.copytree(run_dir, tmp_path / "noadapter", ignore=shutil.ignore_patterns("adapter")))
    assert main(["predict", str(no_adapter), "--text", "x"]) == 2
    _one_line_error(capsys, "no saved adapter", "status: ok")
    src = tmp_path / "in.csv"
    src.write_text("sentence\nhello\n")
    out = tmp_path / "pred.csv"
    assert main(["predict", str(run_dir), "--file", str(src), "-o", str(out)]) == 2
    _one_line_error(capsys, "--text-column", "'text' not found", "columns: sentence")
    assert main(["predict", str(run_dir), "--file", str(tmp_path / "missing.csv"), "-o", str(out)]) == 2
    _one_line_error(capsys, "file not found")
    assert main(["predict", str(run_dir), "--file", str(tmp_path / "notes" / "thesis.tex")]) == 2
    _one_line_error(capsys, "--file", ".csv, .tsv, .jsonl")
    assert main(["predict", str(run_dir)]) == 2
    _one_line_error(capsys, "--text")
    assert main(["predict", str(run_dir), "--text", "x", "--batch-size", "0"]) == 2
    _one_line_error(capsys, "--batch-size")
    assert not out.exists()
    out.write_text("someone's file")
    assert main(["predict", str(run_dir), "--file", str(src), "--text-column", "sentence", "-o", str(out)]) == 2
    _one_line_error(capsys, "--overwrite")
    assert out.read_text() == "someone's file"
    assert (
        main(["predict", str(run_dir), "--file", str(src), "--text-column", "sentence", "-o", str(out), "--overwrite"])
        == 0
    )
    assert pd.read_csv(out)["sentence"].tolist() == ["hello"]


def test_full_fine_tuning_run_predicts(tmp_path):
    cfg = from_dict(tiny_config(tmp_path, method={"name": "full-ft", "preset": None}, train={"max_steps": 2}))
    run = Run(cfg)
    assert run.execute(tmp_path / "ft")["status"] == "ok"
    expected = batched_logits(run.model, run.val_batches, batch_size=8, pad_id=run.pad_id, device=torch.device("cpu"))
    loaded = load_run(tmp_path / "ft")
    assert json.loads((tmp_path / "ft" / "adapter" / "kss_model.json").read_text())["format"] == "full"
    np.testing.assert_allclose(predict_logits(loaded, run.data.validation.texts), expected, atol=1e-5)


# ----------------------------------------------------------------------------- causal-LM

QA = [
    ("what color is the sky", "blue"),
    ("what color is grass", "green"),
    ("what is frozen water", "ice"),
    ("what do bees make", "honey"),
    ("where do fish live", "in water"),
    ("what animal barks", "a dog"),
    ("what falls from clouds", "rain"),
    ("what is two plus two", "four"),
]


def lm_run(tmp_path: Path, **blocks: dict) -> tuple[Path, Run]:
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in QA))
    cfg = {
        "model": {"name": "tiny-llama", "task": "causal-lm", "max_length": 32},
        "data": {"source": "file", "train": str(train), "val_fraction": 0.25, "system_prompt": "be brief"},
        "method": {"name": "lora", "rank": 4},
        "train": {"seed": 0, "epochs": 1, "batch_size": 4, "lr": 5e-3, "progress": False, "threads": 1},
        "output": {"dir": str(tmp_path / "runs")},
    }
    run = Run(from_dict(with_blocks(cfg, **blocks)))
    assert run.execute(tmp_path / "lm")["status"] == "ok"
    return tmp_path / "lm", run


def test_causal_lm_prompts_are_formatted_as_in_training_and_answered(tmp_path, capsys):
    run_dir, run = lm_run(tmp_path)
    loaded = load_run(run_dir)
    assert loaded.label_names is None and loaded.info["chat_template"] is False
    # The prompt part of a training example is exactly what predict feeds the model.
    batches = run.train_batches
    conv_prompt = run.data.train.conversations[0][1]["content"]
    first_response = next(i for i, y in enumerate(batches.labels[0]) if y != -100)
    assert prompt_ids(loaded, conv_prompt) == batches.input_ids[0][:first_response]
    assert main(["predict", str(run_dir), "--text", QA[0][0], "--text", QA[1][0], "--max-new-tokens", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    # Greedy decoding by hand from the trained model gives the same responses.
    tok = run.tokenizer
    ids = torch.tensor([prompt_ids(loaded, QA[0][0])])
    run.model.eval()
    with torch.no_grad():
        for _ in range(3):
            nxt = run.model(input_ids=ids).logits[0, -1].argmax()
            if int(nxt) == tok.sep_token_id:
                break
            ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
    by_hand = tok.decode(ids[0, len(prompt_ids(loaded, QA[0][0])) :], skip_special_tokens=True).strip()
    assert lines[0] == by_hand


def test_chat_template_prompt_matches_training(tmp_path):
    from kss_lora.models import load_tokenizer
    from kss_lora.predict import RunModel
    from kss_lora.tasks.causal_lm import encode_conversation

    tok = load_tokenizer("tiny-llama")
    tok.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}[SEP]{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    info = {"task": "causal-lm", "chat_template": True, "system_prompt": "be brief", "max_length": 64}
    info["instruction"] = "Classify: {text} ({labels})"
    run = RunModel(model=None, tokenizer=tok, label_names=None, info=info, device=torch.device("cpu"))  # type: ignore[arg-type]
    info["id2label"] = {"0": "a", "1": "b"}
    conv = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "Classify: the sky (a, b)"},
        {"role": "assistant", "content": "a"},
    ]
    ids, labels = encode_conversation(tok, conv, chat_template=True)
    first = next(i for i, y in enumerate(labels) if y != -100)
    assert prompt_ids(run, "the sky") == ids[:first]


def test_causal_lm_file_gets_a_response_column(tmp_path):
    run_dir, _ = lm_run(tmp_path)
    src = tmp_path / "prompts.jsonl"
    src.write_text("".join(json.dumps({"prompt": p}) + "\n" for p, _ in QA[:3]))
    out = tmp_path / "out.csv"
    assert main(["predict", str(run_dir), "--file", str(src), "-o", str(out), "--max-new-tokens", "2"]) == 0
    got = pd.read_csv(out, keep_default_na=False)
    assert list(got.columns) == ["prompt", "response"] and len(got) == 3


def test_kss_config_yaml_trust_remote_code_is_not_honoured(trained, tmp_path, monkeypatch):
    run_dir, _, _ = trained
    copy = Path(shutil.copytree(run_dir, tmp_path / "r"))
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg["model"]["trust_remote_code"] = True
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    (copy / "adapter" / "kss_model.json").unlink()  # force the config.yaml path
    seen = []
    import kss_lora.models as models

    real = models.load_model
    monkeypatch.setattr(models, "load_model", lambda *a, **k: seen.append(k["trust_remote_code"]) or real(*a, **k))
    load_run(copy)
    assert seen == [False]


def test_pair_runs_take_pairs(tmp_path, capsys):
    rows = [(f"the cat sat {i}", "a cat sat" if i % 2 else "no dog ran", "yes" if i % 2 else "no") for i in range(40)]
    train = tmp_path / "pairs.csv"
    pd.DataFrame(rows, columns=["premise", "hypothesis", "label"]).to_csv(train, index=False)
    data = {"source": "file", "train": str(train), "text_column": "premise", "text_pair_column": "hypothesis"}
    run = Run(from_dict(tiny_config(tmp_path, data=data, train={"max_steps": 2})))
    assert run.execute(tmp_path / "pairs")["status"] == "ok"
    run_dir = str(tmp_path / "pairs")
    assert main(["predict", run_dir, "--text", "the cat sat"]) == 2
    _one_line_error(capsys, "--text-pair", "trained on text pairs")
    assert main(["predict", run_dir, "--text", "the cat sat", "--text-pair", "a cat sat"]) == 0
    label, prob, _ = capsys.readouterr().out.strip().split("\t")
    expected = probabilities(predict_logits(load_run(run_dir), ["the cat sat"], ["a cat sat"]))[0]
    assert label == ["no", "yes"][int(expected.argmax())] and float(prob) == pytest.approx(expected.max(), abs=1e-4)
    out = tmp_path / "p.csv"
    assert main(["predict", run_dir, "--file", str(train), "-o", str(out)]) == 0  # the run's columns by default
    got = pd.read_csv(out)
    assert list(got.columns[:3]) == ["premise", "hypothesis", "predicted_label"]
    capsys.readouterr()
    pair_free = tmp_path / "single.csv"
    pd.DataFrame({"premise": ["x"]}).to_csv(pair_free, index=False)
    assert main(["predict", run_dir, "--file", str(pair_free), "-o", str(tmp_path / "q.csv")]) == 2
    _one_line_error(capsys, "--text-pair-column")
