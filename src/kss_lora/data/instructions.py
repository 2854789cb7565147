"""Instruction (prompt → response) data for causal-LM fine-tuning.

Every example is a conversation: a list of ``{"role", "content"}`` messages whose assistant turns are the
response tokens the loss is computed on. Three ways in, all ending in :class:`InstructionData`:

- ``data.prompt_column`` / ``data.response_column`` (default ``prompt`` / ``response``) of a file (csv, tsv,
  jsonl, json, parquet) or a ``datasets`` dataset: one user turn, one assistant turn. With those defaults, a
  table with no ``prompt`` column but Alpaca's ``instruction``/``input``/``output`` is read as Alpaca data:
  prompt = instruction (then a blank line and the input, when there is one), response = output;
- ``data.messages_column``: chat transcripts as stored (jsonl lists of messages); every assistant turn is a
  response;
- ``data.instruction``: classification data (any ``data.source``, including ``synthetic`` and AG News files)
  turned into instructions: the prompt is the template filled with ``{text}``/``{text_pair}``/``{labels}``
  and the response is the label name. Label noise (symmetric/asymmetric) flips the label and the response
  is rewritten to the new label's name, so the classification noise machinery carries over unchanged.

Why conversations rather than two strings: chat-tuned decoders (Llama-3.1-Instruct, Qwen2.5-Instruct,
SmolLM2-Instruct) are fine-tuned in their own chat format; keeping the structure lets the tokenizer's chat
template do the formatting, and lets the task find exactly which tokens are the response.

Builders for the local data in ``../shared/data`` (read in place, never copied):
:func:`truthfulqa_qa` (question → best answer) and :func:`agnews_instructions` (topic classification as an
instruction).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import DataConfig
from ..errors import ConfigError, DataError
from .files import read_table
from .loading import Split, _cap, load_classification_data

Message = dict[str, str]

DEFAULT_INSTRUCTION = "Classify the text into one of these categories: {labels}.\n\nText: {text}"
DEFAULT_PAIR_INSTRUCTION = (
    "Classify the relation between the two texts into one of: {labels}.\n\nPremise: {text}\nHypothesis: {text_pair}"
)


@dataclass
class InstructionSplit:
    """Conversations, the example ids (row numbers in the source) and, for converted classification data,
    the integer labels the responses were written from."""

    conversations: list[list[Message]]
    ids: np.ndarray = field(default=None)  # type: ignore[assignment]
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.ids is None:
            self.ids = np.arange(len(self.conversations))
        self.ids = np.asarray(self.ids, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.conversations)

    def subset(self, index: np.ndarray) -> InstructionSplit:
        labels = self.labels[index] if self.labels is not None else None
        return InstructionSplit([self.conversations[i] for i in index], self.ids[index], labels)

    @property
    def responses(self) -> list[str]:
        """The last assistant turn of each conversation (what response-swap noise exchanges)."""
        return [_last_assistant(c)["content"] for c in self.conversations]

    def with_responses(self, responses: list[str]) -> InstructionSplit:
        """Copy with each conversation's last assistant turn replaced (the conversations are not shared)."""
        out = []
        for conv, resp in zip(self.conversations, responses):
            conv = [dict(m) for m in conv]
            _last_assistant(conv)["content"] = resp
            out.append(conv)
        return InstructionSplit(out, self.ids.copy(), self.labels)


@dataclass
class InstructionData:
    train: InstructionSplit
    validation: InstructionSplit
    test: InstructionSplit | None
    label_names: list[str] | None = None  # set when converted from classification data


def _last_assistant(conv: list[Message]) -> Message:
    for message in reversed(conv):
        if message["role"] == "assistant":
            return message
    raise DataError("conversation has no assistant turn")  # guarded at load time; never reached in a run


# ----------------------------------------------------------------------------- loading


def load_instruction_data(cfg: DataConfig) -> InstructionData:
    """Load instruction data as ``cfg`` says (see the module docstring for the three ways in). Noise is the
    caller's business: flip :attr:`InstructionSplit.labels` and rewrite, or swap :attr:`responses`."""
    instruction = cfg.instruction
    if instruction is None and cfg.source in ("synthetic", "chaosnli"):
        instruction = DEFAULT_PAIR_INSTRUCTION if cfg.source == "chaosnli" else DEFAULT_INSTRUCTION
    if instruction is not None:
        return _from_classification(cfg, instruction)
    return _from_columns(cfg)


def _from_classification(cfg: DataConfig, instruction: str) -> InstructionData:
    data = load_classification_data(cfg)
    names = data.label_names
    convert = lambda split: classification_to_instructions(split, names, instruction, cfg.system_prompt)  # noqa: E731
    test = convert(data.test) if data.test is not None else None
    return InstructionData(convert(data.train), convert(data.validation), test, list(names))


def classification_to_instructions(
    split: Split, label_names: list[str], instruction: str, system_prompt: str | None = None
) -> InstructionSplit:
    """Classification examples as instructions: prompt = ``instruction`` filled in, response = label name."""
    labels_text = ", ".join(label_names)
    convs = []
    for i, text in enumerate(split.texts):
        pair = split.text_pairs[i] if split.text_pairs is not None else ""
        try:
            prompt = instruction.format(text=text, text_pair=pair, labels=labels_text)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                "data.instruction", f"bad template ({exc!r}); use only {{text}}, {{text_pair}} and {{labels}}"
            ) from None
        convs.append(_conversation(prompt, label_names[int(split.labels[i])], system_prompt))
    return InstructionSplit(convs, split.ids.copy(), split.labels.copy())


def _conversation(prompt: str, response: str, system_prompt: str | None) -> list[Message]:
    conv = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return conv + [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def _from_columns(cfg: DataConfig) -> InstructionData:
    if cfg.source not in ("file", "hf"):
        raise ConfigError("data.source", f"causal-lm reads prompt/response data from file or hf, not {cfg.source!r}")
    train = _read_conversations(cfg, cfg.train, "data.train")
    if cfg.validation:
        validation = _read_conversations(cfg, cfg.validation, "data.validation")
    else:
        train, validation = random_split(train, cfg.val_fraction, seed=cfg.split_seed)
    test = _read_conversations(cfg, cfg.test, "data.test") if cfg.test else None
    if cfg.max_train_examples and len(train) > cfg.max_train_examples:
        train = train.subset(_sample(len(train), cfg.max_train_examples, cfg.split_seed))
    if cfg.max_eval_examples:
        validation = _cap_split(validation, cfg.max_eval_examples, cfg.split_seed)
        test = _cap_split(test, cfg.max_eval_examples, cfg.split_seed + 1) if test is not None else None
    return InstructionData(train, validation, test)


def read_conversations(cfg: DataConfig, path: str, *, where: str) -> InstructionSplit:
    """One whole file (or dataset) of conversations, read with ``cfg``'s column settings."""
    return _read_conversations(cfg, path, where)


def _read_conversations(cfg: DataConfig, path: str | None, where: str) -> InstructionSplit:
    df = read_table(cfg, path, where)
    if cfg.messages_column is None and _is_alpaca(df, cfg):
        df = _alpaca_to_columns(df, cfg)
    if cfg.messages_column is not None:
        _require_columns(df, [("messages_column", cfg.messages_column)], where)
        convs = [_parse_messages(v, where, row) for row, v in enumerate(df[cfg.messages_column].tolist())]
        if cfg.system_prompt:
            convs = [
                c if c[0]["role"] == "system" else [{"role": "system", "content": cfg.system_prompt}, *c] for c in convs
            ]
    else:
        _require_columns(df, [("prompt_column", cfg.prompt_column), ("response_column", cfg.response_column)], where)
        prompts = df[cfg.prompt_column].astype(str).tolist()
        responses = df[cfg.response_column].astype(str).tolist()
        empty = [i for i, r in enumerate(responses) if not r.strip()]
        if empty:
            raise DataError(f"{where}: {len(empty)} empty responses (first at row {empty[0]}); drop them first")
        convs = [_conversation(p, r, cfg.system_prompt) for p, r in zip(prompts, responses)]
    return InstructionSplit(convs)


ALPACA_COLUMNS = ("instruction", "input", "output")


def _is_alpaca(df: pd.DataFrame, cfg: DataConfig) -> bool:
    """Alpaca-style rows (instruction, optional input, output) under the default column names."""
    defaults = cfg.prompt_column == "prompt" and cfg.response_column == "response"
    return defaults and "prompt" not in df.columns and {"instruction", "output"} <= set(df.columns)


def _alpaca_to_columns(df: pd.DataFrame, cfg: DataConfig) -> pd.DataFrame:
    """Alpaca's prompt: the instruction, then a blank line and the input when the input is not empty."""

    def text(value: Any) -> str:
        return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)

    inputs = df["input"].tolist() if "input" in df.columns else [""] * len(df)
    prompts = [
        text(ins) + (f"\n\n{text(inp)}" if text(inp).strip() else "") for ins, inp in zip(df["instruction"], inputs)
    ]
    out = pd.DataFrame({cfg.prompt_column: prompts, cfg.response_column: [text(v) for v in df["output"]]})
    out.attrs.update(df.attrs)
    return out


def _require_columns(df: pd.DataFrame, wanted: list[tuple[str, str]], where: str) -> None:
    for key, col in wanted:
        if col not in df.columns:
            cols = ", ".join(map(str, df.columns))
            raise ConfigError(f"data.{key}", f"column {col!r} not found in {where}; columns: {cols}")


def _parse_messages(value: Any, where: str, row: int) -> list[Message]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise DataError(f"{where}: row {row}: messages are not a JSON list") from None
    if isinstance(value, np.ndarray):  # datasets' to_pandas stores lists as arrays
        value = value.tolist()
    ok = (
        isinstance(value, list)
        and value
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
        )
    )
    if not ok:
        raise DataError(f"{where}: row {row}: messages must be a non-empty list of {{role, content}} strings")
    if not any(m["role"] == "assistant" for m in value):
        raise DataError(f"{where}: row {row}: no assistant turn to train on")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def random_split(split: InstructionSplit, fraction: float, *, seed: int) -> tuple[InstructionSplit, InstructionSplit]:
    """Seeded (kept, held-out) split; held-out gets ``round(fraction * n)`` examples (at least one)."""
    n = len(split)
    if n < 2:
        raise DataError(f"data.train: need at least 2 examples to split off a validation set, got {n}")
    held = np.sort(np.random.default_rng(seed).permutation(n)[: max(1, int(round(fraction * n)))])
    kept = np.setdiff1d(np.arange(n), held)
    if len(kept) == 0:
        raise DataError(
            f"data.train: data.val_fraction={fraction:g} of {n} examples leaves no training examples; "
            "lower data.val_fraction or give data.validation"
        )
    return split.subset(kept), split.subset(held)


def _sample(n: int, k: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(n)[:k])


def _cap_split(split: InstructionSplit, n: int, seed: int) -> InstructionSplit:
    return split if len(split) <= n else split.subset(_sample(len(split), n, seed))


# ----------------------------------------------------------------------------- builders for ../shared/data


def truthfulqa_qa(path: str | Path, *, system_prompt: str | None = None) -> InstructionSplit:
    """TruthfulQA as Q/A instructions: the question → its *best* answer; ids are CSV row numbers.

    Fine-tuning on these and then scoring TruthfulQA on the same questions measures memorisation: hold
    questions out (``kss eval truthfulqa --holdout RUN_DIR`` scores only the questions a run did not see).
    """
    df = _read_csv(path, ("Question", "Best Answer"))
    convs = [_conversation(q, a, system_prompt) for q, a in zip(df["Question"], df["Best Answer"])]
    return InstructionSplit(convs)


def agnews_instructions(
    path: str | Path, *, instruction: str = DEFAULT_INSTRUCTION, max_examples: int | None = None, seed: int = 0
) -> InstructionSplit:
    """AG News (``text<TAB>label-name`` rows, no header) as topic-classification instructions."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    df = pd.read_csv(path, sep="\t", header=None, names=["text", "label"], quoting=3, dtype=str, keep_default_na=False)
    names = sorted(set(df["label"]))
    split = Split(df["text"].tolist(), np.array([names.index(v) for v in df["label"]]))
    if max_examples is not None and len(split) > max_examples:
        split = _cap(split, max_examples, seed)
    return classification_to_instructions(split, names, instruction)


def _read_csv(path: str | Path, columns: tuple[str, ...]) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing}; columns: {', '.join(df.columns)}")
    return df


__all__ = [
    "DEFAULT_INSTRUCTION",
    "InstructionData",
    "InstructionSplit",
    "agnews_instructions",
    "classification_to_instructions",
    "load_instruction_data",
    "random_split",
    "read_conversations",
    "truthfulqa_qa",
]
