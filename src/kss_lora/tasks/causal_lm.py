"""Causal-LM instruction tuning: loss on response tokens only, one loss per example.

Formatting. With a chat template (and ``data.use_chat_template``), each conversation is rendered by the
tokenizer's template; the response tokens are located by rendering each prefix (``conv[:i]`` with the
generation prompt, then ``conv[:i+1]``) and mapping those character spans to tokens through the offset
mapping, so whatever the template puts around a turn is handled without per-model rules. The assistant's
closing tokens (``<|im_end|>``, ``<|eot_id|>``) are part of the response: the model learns to stop. Without
a template: ``[BOS] prompt "\\n" response EOS`` (EOS, else SEP), each piece tokenized on its own.

Loss. Prompt tokens get label -100. An example's loss is the **mean token cross-entropy of its response**
(nats); the training objective is the mean of that over the examples of a batch (each example counts once,
however long its answer), and ``train_loss``/``val_loss`` are the same mean over a split, so the gap and the
per-example dynamics are on the same footing as in classification. ``*_perplexity`` is the corpus
perplexity ``exp(total NLL / total response tokens)`` (token-weighted, as perplexity is usually defined),
with that token-weighted loss as ``*_token_loss``.

Packing is off: one conversation per row (right-padded), so per-example losses are well defined. Logits
are computed only from the first response position on (``logits_to_keep``), which saves most of the
vocabulary projection when prompts are long.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.instructions import InstructionData, InstructionSplit, Message, load_instruction_data, read_conversations
from ..errors import ConfigError, DataError
from ..models import BUILTIN_MODELS, check_safetensors, load_model, weights_path
from ..rundir import RunDirectory
from .base import EvalOutput, Task, loss_to_pseudo_logits
from .memory import prepare_quantized, quantization_config

IGNORE = -100


@dataclass
class LMBatches:
    """A tokenized split: token ids and labels (-100 on prompt tokens) per example, and the example ids."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    ids: np.ndarray
    n_truncated: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)


# ----------------------------------------------------------------------------- tokenization


def uses_chat_template(tokenizer: Any, enabled: bool = True) -> bool:
    return bool(enabled and getattr(tokenizer, "chat_template", None))


def encode_conversation(tokenizer: Any, conv: list[Message], *, chat_template: bool) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 except on assistant-turn tokens) of one conversation, untruncated."""
    if chat_template:
        return _encode_with_template(tokenizer, conv)
    return _encode_plain(tokenizer, conv)


def _render(tokenizer: Any, conv: list[Message], *, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=generation_prompt)


def _encode_with_template(tokenizer: Any, conv: list[Message]) -> tuple[list[int], list[int]]:
    text = _render(tokenizer, conv, generation_prompt=False)
    spans = []
    for i, message in enumerate(conv):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, conv[:i], generation_prompt=True) if i else ""
        upto = _render(tokenizer, conv[: i + 1], generation_prompt=False)
        if not (upto.startswith(before) and text.startswith(upto)):
            raise ConfigError(
                "data.use_chat_template",
                "the chat template does not render conversations prefix by prefix, so response tokens cannot be "
                "located; set data.use_chat_template: false",
            )
        spans.append((len(before), len(upto)))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    labels = [IGNORE] * len(ids)
    for t, (start, _end) in enumerate(enc["offset_mapping"]):
        if any(a <= start < b for a, b in spans):
            labels[t] = ids[t]
    return ids, labels


def _encode_plain(tokenizer: Any, conv: list[Message]) -> tuple[list[int], list[int]]:
    ids: list[int] = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    labels: list[int] = [IGNORE] * len(ids)
    end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    for message in conv:
        if message["role"] == "assistant":
            piece = tokenizer(message["content"], add_special_tokens=False)["input_ids"]
            piece = piece + ([end] if end is not None else [])
            ids += piece
            labels += piece
        else:
            piece = tokenizer(message["content"] + "\n", add_special_tokens=False)["input_ids"]
            ids += piece
            labels += [IGNORE] * len(piece)
    return ids, labels


def truncate(ids: list[int], labels: list[int], max_length: int) -> tuple[list[int], list[int], bool]:
    """Fit ``max_length`` keeping the response: drop the start of the prompt first (its tail, next to the
    answer, matters most; at least half the budget stays for it), then the end of the sequence. At least
    one response token always survives."""
    n = len(ids)
    if n <= max_length:
        return ids, labels, False
    first = next(i for i, y in enumerate(labels) if y != IGNORE)
    drop = min(n - max_length, max(first - max_length // 2, 0))
    ids, labels = ids[drop : drop + max_length], labels[drop : drop + max_length]
    return ids, labels, True


def tokenize_split(
    split: InstructionSplit, tokenizer: Any, *, max_length: int, chat_template: bool, where: str
) -> LMBatches:
    all_ids, all_labels, truncated = [], [], 0
    for row, conv in enumerate(split.conversations):
        ids, labels = encode_conversation(tokenizer, conv, chat_template=chat_template)
        if labels:
            labels[0] = IGNORE  # the first token has no context: nothing predicts it
        if not any(y != IGNORE for y in labels):
            raise DataError(f"{where}: example {int(split.ids[row])} has no response tokens to train on")
        ids, labels, cut = truncate(ids, labels, max_length)
        truncated += cut
        all_ids.append(ids)
        all_labels.append(labels)
    return LMBatches(all_ids, all_labels, split.ids.copy(), truncated)


def collate(batches: LMBatches, index: np.ndarray, pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    rows = [batches.input_ids[i] for i in index]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, i in enumerate(index):
        n = len(batches.input_ids[i])
        ids[j, :n] = torch.tensor(batches.input_ids[i])
        labels[j, :n] = torch.tensor(batches.labels[i])
        mask[j, :n] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


# ----------------------------------------------------------------------------- losses


def accepts_logits_to_keep(model: nn.Module) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def response_nll(
    model: nn.Module, inputs: dict[str, torch.Tensor], *, keep_logits: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example summed NLL of the response tokens ``[B]`` and their counts ``[B]`` (float32).

    Position p's logits predict token p+1, so only positions from (first labelled token − 1) on are
    needed; with ``keep_logits`` the model projects only those onto the vocabulary.
    """
    labels = inputs["labels"]
    width = labels.shape[1]
    labelled = (labels != IGNORE).any(dim=0)
    first = int(labelled.nonzero()[0]) if labelled.any() else 1
    keep = width - (first - 1)
    kwargs = {"logits_to_keep": keep} if keep_logits else {}
    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], **kwargs).logits
    logits = logits[:, -keep:]  # models that ignore logits_to_keep return every position
    targets = labels[:, width - keep + 1 :]
    ce = nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORE,
        reduction="none",
    ).view(targets.shape)
    return ce.sum(dim=1), (targets != IGNORE).sum(dim=1).to(ce.dtype)


# ----------------------------------------------------------------------------- the task


class CausalLMTask(Task):
    name = "causal-lm"
    peft_task_type = "CAUSAL_LM"

    def load_data(self) -> None:
        self.data: InstructionData = load_instruction_data(self.cfg.data)
        self.clean_train: InstructionSplit = self.data.train
        if self.cfg.noise.active:
            self._inject_noise()

    def _inject_noise(self) -> None:
        n = self.cfg.noise
        seed = n.seed if n.seed is not None else self.cfg.train.seed
        train = self.data.train
        if n.kind == "response-swap":
            from ..noise import swap_responses

            responses, self.is_noisy = swap_responses(train.responses, rate=n.rate, seed=seed)
            self.data.train = train.with_responses(responses)
            return
        if train.labels is None or self.data.label_names is None:
            raise ConfigError(
                "noise.kind",
                f"{n.kind} label noise needs classification data turned into instructions "
                "(data.instruction); prompt/response data takes noise.kind: response-swap",
            )
        from ..noise import inject_label_noise

        names = self.data.label_names
        result = inject_label_noise(
            train.labels,
            rate=None if n.transition is not None else n.rate,
            num_classes=len(names),
            kind=n.kind,
            seed=seed,
            transition=n.transition,
            pairs=n.pairs,
        )
        noisy = train.with_responses([names[int(y)] for y in result.noisy_labels])
        noisy.labels = result.noisy_labels
        self.data.train, self.is_noisy = noisy, result.is_noisy

    def build_model(self, tokenizer: Any, extra_classes: int = 0) -> nn.Module:
        c = self.cfg
        dtype = getattr(torch, c.model.dtype)
        if c.model.quantization is not None:  # checked by make_task: bitsandbytes and a CUDA GPU are there
            model = _load_hf_causal_lm(
                c.model.name,
                dtype=torch.bfloat16,
                trust_remote_code=c.model.trust_remote_code,
                seed=c.train.seed,
                quantization_config=quantization_config(),
            )
            model = prepare_quantized(model, c.train.gradient_checkpointing)
        elif dtype != torch.float32 and c.model.name not in BUILTIN_MODELS:
            model = _load_hf_causal_lm(
                c.model.name, dtype=dtype, trust_remote_code=c.model.trust_remote_code, seed=c.train.seed
            )
        else:
            model = load_model(
                c.model.name,
                task="causal-lm",
                tokenizer=tokenizer,
                seed=c.train.seed,
                trust_remote_code=c.model.trust_remote_code,
            )
            if dtype != torch.float32:
                model = model.to(dtype)
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        model.config.use_cache = False  # training and scoring never reuse a cache
        if c.train.gradient_checkpointing and c.model.quantization is None:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return model

    def tokenize(self, tokenizer: Any) -> None:
        c = self.cfg
        if c.tracking.train_role is not None:
            raise ConfigError(
                "tracking.train_role", "is for classification study files (kss entropy-data), not causal-LM"
            )
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.chat_template = uses_chat_template(tokenizer, c.data.use_chat_template)

        def tok(split: Any, where: str) -> Any:
            return tokenize_split(
                split, tokenizer, max_length=c.model.max_length, chat_template=self.chat_template, where=where
            )

        self.train_batches = tok(self.data.train, "data.train")
        self.val_batches = tok(self.data.validation, "data.validation")
        self.test_batches = tok(self.data.test, "data.test") if self.data.test is not None else None
        self.clean_train_batches = tok(self.clean_train, "data.train") if self.is_noisy is not None else None
        if c.tracking.heldout:
            self.heldout_batches = tok(
                read_conversations(c.data, c.tracking.heldout, where="tracking.heldout"), "tracking.heldout"
            )
        self._keep_logits: bool | None = None

    def _keep(self, model: nn.Module) -> bool:
        if self._keep_logits is None:
            self._keep_logits = accepts_logits_to_keep(model)
        return self._keep_logits

    def train_losses(
        self,
        model: nn.Module,
        batches: LMBatches,
        index: np.ndarray,
        device: torch.device,
        autocast: Callable[[], AbstractContextManager],
    ) -> tuple[torch.Tensor, np.ndarray]:
        inputs = collate(batches, index, self.pad_id, device)
        with autocast():
            nll, count = response_nll(model, inputs, keep_logits=self._keep(model))
        losses = nll / count
        return losses, loss_to_pseudo_logits(losses.detach().cpu().numpy())

    @torch.no_grad()
    def evaluate(
        self,
        model: nn.Module,
        batches: LMBatches,
        index: np.ndarray,
        *,
        batch_size: int,
        device: torch.device,
        autocast: Callable[[], AbstractContextManager],
    ) -> EvalOutput:
        was_training = model.training
        model.eval()
        index = np.asarray(index)
        order = np.argsort([len(batches.input_ids[i]) for i in index], kind="stable")
        nll = np.zeros(len(index))
        count = np.zeros(len(index))
        for start in range(0, len(order), batch_size):
            pos = order[start : start + batch_size]
            with autocast():
                s, c = response_nll(
                    model, collate(batches, index[pos], self.pad_id, device), keep_logits=self._keep(model)
                )
            nll[pos], count[pos] = s.double().cpu().numpy(), c.double().cpu().numpy()
        model.train(was_training)
        loss = nll / np.maximum(count, 1)
        return EvalOutput(loss=loss, record=loss_to_pseudo_logits(loss), tokens=count, nll_sum=nll)

    def clean_train_output(self, noisy: EvalOutput, evaluate: Callable[[Any], EvalOutput]) -> EvalOutput:
        return noisy if self.clean_train_batches is None else evaluate(self.clean_train_batches)

    def split_metrics(self, name: str, out: EvalOutput) -> dict[str, Any]:
        token_loss = float(out.nll_sum.sum() / max(out.tokens.sum(), 1))
        return {
            f"{name}_loss": float(out.loss.mean()),
            f"{name}_accuracy": None,
            f"{name}_token_loss": token_loss,
            f"{name}_perplexity": _safe_exp(token_loss),
        }

    def recorder_kwargs(self) -> dict[str, Any]:
        zeros = lambda b: np.zeros(len(b), dtype=np.int64) if b is not None else None  # noqa: E731
        h = self.heldout_batches
        return {
            "labels": zeros(self.train_batches),
            "ids": self.train_batches.ids,
            "clean_labels": zeros(self.train_batches),
            "is_noisy": self.is_noisy,
            "heldout_labels": zeros(h),
            "heldout_ids": h.ids if h is not None else None,
        }

    def save_extra(self, directory: Path) -> None:
        splits = {
            "train": self.train_batches.ids.tolist(),
            "validation": self.val_batches.ids.tolist(),
            "test": self.test_batches.ids.tolist() if self.test_batches is not None else None,
        }
        RunDirectory(directory).write_json(SPLITS_NAME, splits)
        if self.is_noisy is not None:
            np.savez(directory / "noise.npz", is_noisy=self.is_noisy, ids=self.train_batches.ids)

    def result_extra(self) -> dict[str, Any]:
        return {
            "chat_template": self.chat_template,
            "n_truncated": int(
                sum(b.n_truncated for b in (self.train_batches, self.val_batches, self.test_batches) if b is not None)
            ),
        }


SPLITS_NAME = "splits.json"


def _safe_exp(x: float) -> float:
    return math.exp(x) if x < 700 else float("inf")


def _load_hf_causal_lm(
    name: str, *, dtype: torch.dtype, trust_remote_code: bool, seed: int, quantization_config: Any = None
) -> nn.Module:
    """An HF causal LM loaded straight in ``dtype`` (a 7-8B model in float32 needs 32 GB of host memory), or
    quantized to 4 bits (QLoRA) with ``quantization_config``."""
    from transformers import AutoModelForCausalLM

    # The same refusals as models.load_model: unknown names in one line, never a pickle (it can run code).
    path = weights_path(name)
    if Path(path).is_dir():
        check_safetensors(Path(path), name)
    torch.manual_seed(seed)
    extra = {} if quantization_config is None else {"quantization_config": quantization_config, "device_map": {"": 0}}
    try:
        return AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True, **extra
        )
    except OSError as exc:
        raise ConfigError("model.name", f"cannot load {name!r} ({str(exc).splitlines()[0]})") from None
