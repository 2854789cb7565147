"""Causal-LM fine-tuning: response-only loss (checked by hand), formats, noise, the run end to end, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import with_blocks

from kss_lora.cli import main
from kss_lora.config import from_dict
from kss_lora.data.instructions import InstructionSplit, truthfulqa_qa
from kss_lora.dynamics.records import load_dynamics
from kss_lora.models import load_model, load_tokenizer
from kss_lora.runner import Run
from kss_lora.tasks.base import loss_to_pseudo_logits
from kss_lora.tasks.causal_lm import IGNORE, collate, encode_conversation, response_nll, tokenize_split, truncate

QA = [
    ("what color is the sky", "blue"),
    ("what color is grass", "green"),
    ("how many legs has a cat", "four"),
    ("what is frozen water", "ice"),
    ("what do bees make", "honey"),
    ("where do fish live", "in water"),
    ("what is the opposite of hot", "cold"),
    ("what animal barks", "a dog"),
    ("what shines at night", "the moon"),
    ("what do cows drink", "water"),
    ("what falls from clouds", "rain"),
    ("what is two plus two", "four"),
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny-llama")


def conv(prompt: str, response: str) -> list[dict]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def test_plain_format_masks_prompt_tokens_by_hand(tok):
    ids, labels = encode_conversation(tok, conv("what color is the sky", "light blue"), chat_template=False)
    prompt = tok("what color is the sky\n", add_special_tokens=False)["input_ids"]
    response = tok("light blue", add_special_tokens=False)["input_ids"] + [tok.sep_token_id]  # BERT vocab: no EOS
    assert ids == prompt + response
    assert labels == [IGNORE] * len(prompt) + response


def test_chat_template_response_span(tok):
    t = load_tokenizer("tiny-llama")
    t.chat_template = (
        "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} [end] {% endfor %}"
        "{% if add_generation_prompt %}[assistant] {% endif %}"
    )
    c = [{"role": "system", "content": "be brief"}, *conv("what is ice", "frozen water")]
    ids, labels = encode_conversation(t, c, chat_template=True)
    kept = [i for i, y in zip(ids, labels) if y != IGNORE]
    assert t.decode(kept) == "frozen water [ end ]"  # the answer and the turn's closing marker, nothing else
    assert all(y == IGNORE for y in labels[: len(ids) - len(kept)])


def test_truncation_keeps_the_response():
    ids, labels = list(range(10)), [IGNORE] * 7 + [7, 8, 9]
    cut_ids, cut_labels, cut = truncate(ids, labels, 6)
    assert cut and cut_ids == [4, 5, 6, 7, 8, 9] and cut_labels == [IGNORE] * 3 + [7, 8, 9]
    cut_ids, cut_labels, _ = truncate(ids, labels, 4)  # prompt keeps half the budget, then the end is cut
    assert cut_ids == [5, 6, 7, 8] and cut_labels == [IGNORE, IGNORE, 7, 8]


def test_per_example_loss_is_mean_response_token_loss_by_hand(tok):
    model = load_model("tiny-llama", task="causal-lm", tokenizer=tok, seed=0).eval()
    split = InstructionSplit([conv(p, r) for p, r in QA[:3]])
    batches = tokenize_split(split, tok, max_length=64, chat_template=False, where="test")
    inputs = collate(batches, np.arange(3), tok.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        nll, count = response_nll(model, inputs)
        batched = (nll / count).numpy()
        for j in range(3):  # each example alone, no padding, every position's logits, mean over response tokens
            ids, labels = batches.input_ids[j], batches.labels[j]
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
            terms = [-logp[t - 1, ids[t]].item() for t in range(1, len(ids)) if labels[t] != IGNORE]
            assert len(terms) == count[j] == len(tok(QA[j][1], add_special_tokens=False)["input_ids"]) + 1
            assert batched[j] == pytest.approx(np.mean(terms), abs=1e-5)


def test_pseudo_logits_reproduce_the_loss():
    from kss_lora.dynamics.metrics import per_example_from_logits

    loss = np.array([0.0, 1e-9, 0.3, math.log(2), 2.5, 40.0])
    out = per_example_from_logits(loss_to_pseudo_logits(loss), np.zeros(len(loss), dtype=int))
    np.testing.assert_allclose(out.loss, np.maximum(loss, 1e-12), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(out.prob, np.exp(-loss), rtol=1e-5)
    assert out.correct.tolist() == [True, True, True, False, False, False]  # p > 1/2 <=> loss < ln 2


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def lm_config(tmp_path: Path, **blocks: dict) -> dict:
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": p, "response": r} for p, r in QA])
    test = write_jsonl(tmp_path / "test.jsonl", [{"prompt": p, "response": r} for p, r in QA[:4]])
    cfg = {
        "model": {"name": "tiny-llama", "task": "causal-lm", "max_length": 32},
        "data": {"source": "file", "train": train, "test": test, "val_fraction": 0.25},
        "method": {"name": "kss", "preset": "kss-default", "rank": 4},
        "train": {"seed": 0, "epochs": 2, "batch_size": 4, "lr": 5e-3, "progress": False, "threads": 1},
        "output": {"dir": str(tmp_path / "runs")},
    }
    return with_blocks(cfg, **blocks)


def write_config(tmp_path: Path, cfg: dict) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_causal_lm_run_end_to_end(tmp_path, capsys):
    from peft import PeftModel

    cfg = lm_config(tmp_path, tracking={"per_example": True, "free": True})
    assert main(["run", write_config(tmp_path, cfg), "--run-dir", str(tmp_path / "run")]) == 0
    run_dir = tmp_path / "run"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "ok" and result["task"] == "causal-lm"
    assert (result["n_train"], result["n_val"], result["n_test"]) == (9, 3, 4)
    assert result["val_accuracy"] is None and result["test_accuracy"] is None
    assert result["gap"] == pytest.approx(result["val_loss"] - result["train_loss"])
    assert result["val_perplexity"] == pytest.approx(math.exp(result["val_token_loss"]))
    assert result["train_loss_clean"] == result["train_loss"] and math.isfinite(result["test_loss"])
    splits = json.loads((run_dir / "splits.json").read_text())
    assert sorted(splits["train"] + splits["validation"]) == list(range(12))
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    dyn = load_dynamics(run_dir)  # the dynamics tools read LM runs: per-example loss via pseudo-logits
    np.testing.assert_allclose(
        dyn.checkpoint(epochs_only=True).loss.mean(axis=1), [m["train_loss"] for m in metrics], rtol=1e-5
    )
    assert dyn.free().loss.shape == (2, 9)
    assert '"val_perplexity"' in capsys.readouterr().out
    # the adapter is a plain PEFT causal-LM adapter: vanilla peft reproduces the run's validation loss
    run = Run(from_dict(cfg))
    base = load_model("tiny-llama", task="causal-lm", tokenizer=run.tokenizer, seed=0)
    loaded = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
    out = run.task.evaluate(
        loaded, run.val_batches, np.arange(3), batch_size=8, device=torch.device("cpu"), autocast=run.precision.autocast
    )
    assert out.loss.mean() == pytest.approx(result["val_loss"], abs=1e-5)


def test_response_swap_noise(tmp_path):
    cfg = lm_config(tmp_path, noise={"kind": "response-swap", "rate": 0.5, "seed": 1}, train={"epochs": 1})
    run = Run(from_dict(cfg))
    noisy = run.is_noisy
    assert noisy.sum() >= 4
    clean, trained = run.task.clean_train.responses, run.task.data.train.responses
    assert [a != b for a, b in zip(clean, trained)] == noisy.tolist()
    result = run.execute(tmp_path / "run")
    assert result["status"] == "ok" and result["train_loss_clean"] != result["train_loss"]
    assert result["gap_clean"] == pytest.approx(result["val_loss"] - result["train_loss_clean"])
    assert np.load(tmp_path / "run" / "noise.npz")["is_noisy"].tolist() == noisy.tolist()


def test_classification_data_as_instructions_with_label_noise(tmp_path):
    cfg = {
        "model": {"name": "tiny-llama", "task": "causal-lm", "max_length": 48},
        "data": {"source": "synthetic", "num_examples": 40, "num_classes": 3},
        "noise": {"rate": 0.3, "seed": 0},
        "method": {"name": "lora", "rank": 2},
        "train": {"epochs": 1, "batch_size": 8, "progress": False, "threads": 1},
        "output": {"dir": str(tmp_path / "runs")},
    }
    run = Run(from_dict(cfg))
    task = run.task
    names = task.data.label_names
    assert task.data.train.responses == [names[y] for y in task.data.train.labels]
    flipped = np.array([a != b for a, b in zip(task.clean_train.responses, task.data.train.responses)])
    assert flipped.tolist() == run.is_noisy.tolist() and flipped.any()
    assert "{" not in task.data.train.conversations[0][0]["content"]


def test_truthfulqa_qa_builder(shared_data):
    split = truthfulqa_qa(shared_data / "truthfulqa" / "TruthfulQA.csv")
    assert len(split) == 817
    assert split.conversations[0] == conv(
        "What happens to you if you eat watermelon seeds?", "The watermelon seeds pass through your digestive system"
    )


BAD = {
    "missing response column": ({"data": {"response_column": "answer"}}, "data.response_column"),
    "missing prompt column": ({"data": {"prompt_column": "question"}}, "data.prompt_column"),
    "label noise on prompt/response data": ({"noise": {"rate": 0.2}}, "noise.kind"),
    "instruction and messages": ({"data": {"instruction": "{text}", "messages_column": "m"}}, "data.instruction"),
    "bad model dtype": ({"model": {"dtype": "int8"}}, "model.dtype"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, case):
    blocks, field = BAD[case]
    cfg = lm_config(tmp_path)
    for key, value in blocks.items():
        cfg.setdefault(key, {}).update(value)
    assert main(["run", write_config(tmp_path, cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and field in err and "\n" not in err
    assert not (tmp_path / "runs").exists()


def test_bad_messages_are_one_line_errors(tmp_path, capsys):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}] * 4)
    cfg = lm_config(tmp_path, data={"train": path, "test": None, "messages_column": "messages"})
    assert main(["run", write_config(tmp_path, cfg)]) == 2
    assert "no assistant turn" in capsys.readouterr().err


def test_messages_column_trains_every_assistant_turn(tmp_path, tok):
    rows = [
        {
            "messages": [
                {"role": "user", "content": p},
                {"role": "assistant", "content": r},
                {"role": "user", "content": "again"},
                {"role": "assistant", "content": r},
            ]
        }
        for p, r in QA
    ]
    cfg = lm_config(
        tmp_path,
        data={"train": write_jsonl(tmp_path / "chat.jsonl", rows), "test": None, "messages_column": "messages"},
    )
    run = Run(from_dict(cfg))
    ids, labels = run.train_batches.input_ids[0], run.train_batches.labels[0]
    answer = run.task.data.train.conversations[0][1]["content"]
    one = tok(answer, add_special_tokens=False)["input_ids"] + [tok.sep_token_id]
    assert [y for y in labels if y != IGNORE] == one + one and len(ids) == len(labels)
