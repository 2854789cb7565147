"""Use a trained run: load its model, predict labels (classification) or generate responses (causal-LM).

:func:`load_run_model` takes a run directory (or its ``adapter/`` folder, or such a folder copied elsewhere)
and rebuilds exactly the model the run trained: the base model (a built-in's local copy, offline), the PEFT
adapter with its trained classification head, the tokenizer saved with it and the label names. Inputs are
formatted as training formatted them: the same truncation for classification; for causal-LM the same chat
template (or ``prompt + "\\n"`` without one) and, for classification data turned into instructions, the same
prompt template (:mod:`kss_lora.tasks.causal_lm`, :mod:`kss_lora.data.instructions`).

Runs written before the adapter folder carried ``kss_model.json`` still load: what it would say is rebuilt
from the run's ``config.yaml`` (label names then need the run's training data).

``trust_remote_code`` comes only from the caller, never from a run's config (a run directory is data).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .adapter import builtin_name, label_names_of, model_info, read_model_info, resolve_base_model
from .errors import ConfigError

ProgressFn = Callable[[int, int], None]


@dataclass
class RunModel:
    """A loaded run: the model in eval mode, its tokenizer, label names (None for free generation) and
    ``info`` (kss_model.json: task, max_length, prompt format)."""

    model: nn.Module
    tokenizer: Any
    label_names: list[str] | None
    info: dict[str, Any]
    device: torch.device

    @property
    def task(self) -> str:
        return self.info["task"]


@dataclass
class RunFolders:
    run_dir: Path | None  # None for an adapter folder copied out of its run
    adapter_dir: Path


def locate(path: str | Path) -> RunFolders:
    """The run and adapter folders for a run directory or an adapter folder; one-line errors otherwise."""
    p = Path(path)
    if not p.exists():
        raise ConfigError("run_dir", f"no such directory: {p}")
    if not p.is_dir():
        raise ConfigError("run_dir", f"not a directory: {p}")
    if _is_model_folder(p):
        return RunFolders(p.parent if (p.parent / "config.yaml").is_file() else None, p)
    if not ((p / "config.yaml").is_file() or (p / "result.json").is_file()):
        raise ConfigError("run_dir", f"{p} is not a kss run directory (no config.yaml, result.json or adapter/)")
    if not _is_model_folder(p / "adapter"):
        status = _run_status(p)
        raise ConfigError(
            "run_dir",
            f"{p} has no saved adapter (run status: {status}; a failed run or output.save_adapter: false saves none)",
        )
    return RunFolders(p, p / "adapter")


def _is_model_folder(p: Path) -> bool:
    return p.is_dir() and any((p / name).is_file() for name in ("adapter_config.json", "kss_model.json", "config.json"))


def _run_status(run_dir: Path) -> str:
    try:
        return str(json.loads((run_dir / "result.json").read_text()).get("status", "unknown"))
    except (OSError, ValueError, AttributeError):
        return "unknown (no readable result.json)"


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device", f"{name} is not available on this machine; use cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError("--device", f"unknown device {name!r}; allowed: auto, cpu, cuda, cuda:N") from None


def load_run(path: str | Path, *, device: str = "cpu", trust_remote_code: bool = False) -> RunModel:
    """Load a run's trained model for inference (see the module docstring)."""
    folders = locate(path)
    dev = _device(device)
    info = read_model_info(folders.adapter_dir) or _info_from_run(folders, trust_remote_code)
    tokenizer = _load_tokenizer(folders.adapter_dir, info, trust_remote_code)
    label_names = label_names_of(info) if info["task"] == "classification" else None
    model = _load_model(folders.adapter_dir, info, tokenizer, trust_remote_code)
    model.to(dev).eval()
    return RunModel(model, tokenizer, label_names, info, dev)


def load_run_model(
    run_dir: str | Path, *, device: str = "cpu", trust_remote_code: bool = False
) -> tuple[nn.Module, Any, list[str] | None]:
    """``(model, tokenizer, label_names)`` of a trained run; ``label_names`` is None for causal-LM runs."""
    run = load_run(run_dir, device=device, trust_remote_code=trust_remote_code)
    return run.model, run.tokenizer, run.label_names


def _info_from_run(folders: RunFolders, trust_remote_code: bool) -> dict[str, Any]:
    """kss_model.json's content for a run saved before it existed, from the run's config.yaml."""
    if folders.run_dir is None:
        raise ConfigError("run_dir", f"{folders.adapter_dir} has no kss_model.json; pass the run directory")
    from .config import from_dict, parse_yaml
    from .models import load_tokenizer

    cfg_path = folders.run_dir / "config.yaml"
    try:
        cfg = from_dict(parse_yaml(cfg_path.read_text(), str(cfg_path)))
    except OSError as exc:
        raise ConfigError("run_dir", f"cannot read {cfg_path}: {exc.strerror}") from None
    label_names = None
    if cfg.model.task == "classification":
        from .data import load_classification_data

        label_names = load_classification_data(cfg.data).label_names  # needs the run's training data
    tokenizer = load_tokenizer(cfg.model.name, trust_remote_code=trust_remote_code)
    info = model_info(cfg, tokenizer, label_names)
    info["format"] = "peft" if (folders.adapter_dir / "adapter_config.json").is_file() else "full"
    return info


def _load_tokenizer(adapter_dir: Path, info: dict[str, Any], trust_remote_code: bool) -> Any:
    from .models import load_tokenizer

    has_files = any((adapter_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"))
    if not has_files:  # runs saved before the tokenizer was
        return load_tokenizer(info["base_model"], trust_remote_code=trust_remote_code)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter_dir, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_model(adapter_dir: Path, info: dict[str, Any], tokenizer: Any, trust_remote_code: bool) -> nn.Module:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    classification = info["task"] == "classification"
    if info.get("format") == "full":  # full fine-tuning: the folder holds the whole model
        auto = AutoModelForSequenceClassification if classification else AutoModelForCausalLM
        try:
            return auto.from_pretrained(adapter_dir, trust_remote_code=trust_remote_code, dtype=torch.float32)
        except OSError as exc:
            raise ConfigError("adapter", f"cannot load the model saved in {adapter_dir}: {exc}") from None
    base = _load_base(info, tokenizer, trust_remote_code)
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(base, adapter_dir)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConfigError("adapter", f"cannot load the adapter in {adapter_dir}: {str(exc).splitlines()[0]}") from None


def _load_base(info: dict[str, Any], tokenizer: Any, trust_remote_code: bool) -> nn.Module:
    from .models import load_model

    name = builtin_name(info["base_model"]) or info["base_model"]
    dtype = info.get("dtype", "float32")
    if info["task"] == "causal-lm" and dtype != "float32" and builtin_name(name) is None:
        from .tasks.causal_lm import _load_hf_causal_lm  # an 8B model straight in bf16, as training loaded it

        return _load_hf_causal_lm(
            resolve_base_model(name), dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code, seed=0
        )
    task = "classification" if info["task"] == "classification" else "causal-lm"
    model = load_model(
        name,
        task=task,
        num_labels=info.get("num_labels"),
        tokenizer=tokenizer,
        seed=int(info.get("seed", 0)),  # the tiny random models: the same weights training started from
        trust_remote_code=trust_remote_code,
    )
    if task == "classification" and info.get("id2label"):
        model.config.id2label = {int(i): n for i, n in info["id2label"].items()}
        model.config.label2id = dict(info["label2id"])
    return model


# ----------------------------------------------------------------------------- classification


def predict_logits(
    run: RunModel,
    texts: list[str],
    text_pairs: list[str] | None = None,
    *,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Eval-mode logits ``[N, K]`` for texts (or text pairs), tokenized as the run was trained."""
    from .data import Split
    from .tasks.classification import predict_logits as batched_logits
    from .tasks.classification import tokenize

    if run.task != "classification":
        raise ConfigError("run_dir", "predicting labels needs a classification run; this run is causal-lm")
    pad_id = run.tokenizer.pad_token_id or 0
    chunk = batch_size * 8  # sorted by length inside a chunk; progress is reported per chunk
    out = []
    for start in range(0, len(texts), chunk):
        stop = min(start + chunk, len(texts))
        pairs = text_pairs[start:stop] if text_pairs is not None else None
        split = Split(texts[start:stop], np.zeros(stop - start, dtype=np.int64), pairs)
        batches = tokenize(split, run.tokenizer, int(run.info["max_length"]))
        out.append(batched_logits(run.model, batches, batch_size=batch_size, pad_id=pad_id, device=run.device))
        if progress is not None:
            progress(stop, len(texts))
    return np.concatenate(out) if out else np.zeros((0, len(run.label_names or [])), dtype=np.float32)


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax in float64 (rows sum to 1 to machine precision)."""
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------- causal-LM


def prompt_ids(run: RunModel, text: str, text_pair: str | None = None) -> list[int]:
    """Token ids of one prompt, rendered as training rendered the prompt before a response."""
    info, tokenizer = run.info, run.tokenizer
    instruction = info.get("instruction")
    if instruction is not None:
        labels = ", ".join(run.label_names or label_names_of(info) or [])
        content = instruction.format(text=text, text_pair=text_pair or "", labels=labels)
    else:
        content = text
    conv = [{"role": "system", "content": info["system_prompt"]}] if info.get("system_prompt") else []
    conv.append({"role": "user", "content": content})
    if info.get("chat_template"):
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError("adapter", "the run formatted prompts with a chat template, but its tokenizer has none")
        rendered = tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        ids = list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    else:  # training's plain format: [BOS] each non-assistant turn + "\n", then the response
        ids = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        for message in conv:
            ids += tokenizer(message["content"] + "\n", add_special_tokens=False)["input_ids"]
    max_length = int(info["max_length"])
    return ids[-max_length:]  # training drops the start of a long prompt first


@torch.no_grad()
def generate(
    run: RunModel,
    prompts: list[str],
    text_pairs: list[str] | None = None,
    *,
    max_new_tokens: int = 64,
    progress: ProgressFn | None = None,
) -> list[str]:
    """Greedy responses to prompts (one at a time: no padding, so each is what the model alone would say)."""
    if run.task != "causal-lm":
        raise ConfigError("run_dir", "generating responses needs a causal-lm run; this run is classification")
    tokenizer = run.tokenizer
    end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
    responses = []
    for i, prompt in enumerate(prompts):
        pair = text_pairs[i] if text_pairs is not None else None
        ids = torch.tensor([prompt_ids(run, prompt, pair)], device=run.device)
        out = run.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=end,
            pad_token_id=pad,
        )
        responses.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
        if progress is not None:
            progress(i + 1, len(prompts))
    return responses


__all__ = [
    "RunModel",
    "generate",
    "load_run",
    "load_run_model",
    "locate",
    "predict_logits",
    "probabilities",
    "prompt_ids",
]
