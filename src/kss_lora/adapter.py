"""A run's ``adapter/`` folder, made self-sufficient and portable.

What :func:`save_run_adapter` writes (docs: README "Use what you trained")::

    adapter_config.json, adapter_model.safetensors   the PEFT adapter; for classification PEFT's
                                                     ``modules_to_save`` holds the trained head
                                                     (full fine-tuning: config.json + model.safetensors)
    tokenizer files                                  the tokenizer the run trained with
    kss_model.json                                   what kss needs to use it: task, base model, seed,
                                                     ``id2label``/``label2id``, max_length, prompt format
    kss_config.json                                  the KSS method settings (kss, childtuning-f)

``base_model_name_or_path`` in ``adapter_config.json`` is the public hub id of a built-in model
(``sentence-transformers/all-MiniLM-L6-v2``), never a path into this machine's virtualenv; kss maps it back
to the local copy (:func:`resolve_base_model`) so loading stays offline. Label names are not written into
``adapter_config.json`` (PEFT has no field for them and warns about unknown keys) nor as a ``config.json``
beside the adapter (transformers then takes the folder for a full model and
``AutoModelForSequenceClassification.from_pretrained(adapter_dir, num_labels=K)`` stops working).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from .config import RunConfig
from .errors import ConfigError

MODEL_INFO_NAME = "kss_model.json"

# Built-in name -> public hub id of the same weights. smollm2-135m is SmolLM2-135M-*Instruct* de-quantized from
# a Q4_1 GGUF (kss_lora.models), so the hub weights differ from ours by that 4-bit rounding; tiny-bert and
# tiny-llama are random models with no public counterpart (kss rebuilds them from kss_model.json's seed).
PUBLIC_IDS = {
    "minilm": "sentence-transformers/all-MiniLM-L6-v2",
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
}


def public_model_id(name: str) -> str | None:
    """The hub id to record for a built-in model name (None for the random tiny models)."""
    return PUBLIC_IDS.get(name)


def builtin_name(name_or_id: str | None) -> str | None:
    """The built-in model a name or public hub id stands for, or None."""
    from .models import BUILTIN_MODELS

    if name_or_id in BUILTIN_MODELS:
        return name_or_id
    return next((name for name, hub_id in PUBLIC_IDS.items() if hub_id == name_or_id), None)


def resolve_base_model(name_or_id: str) -> str:
    """A loadable path or id for a base model: a built-in's local copy (offline) for its kss name or public id,
    anything else unchanged (a hub id, a local path)."""
    from .models import minilm_path, smollm2_path

    local = {"minilm": minilm_path, "smollm2-135m": smollm2_path}.get(builtin_name(name_or_id) or "")
    return local() if local is not None else name_or_id


def effective_instruction(cfg: RunConfig) -> str | None:
    """The prompt template a causal-LM run filled with each text (data.instruction, or the default that
    :func:`kss_lora.data.instructions.load_instruction_data` applies to synthetic/chaosnli data)."""
    from .data.instructions import DEFAULT_INSTRUCTION, DEFAULT_PAIR_INSTRUCTION

    d = cfg.data
    if d.instruction is not None or d.messages_column is not None:
        return d.instruction
    return {"synthetic": DEFAULT_INSTRUCTION, "chaosnli": DEFAULT_PAIR_INSTRUCTION}.get(d.source)


def model_info(cfg: RunConfig, tokenizer: Any, label_names: list[str] | None) -> dict[str, Any]:
    """kss_model.json's content: how to rebuild the model and format inputs exactly as training did."""
    from .tasks.causal_lm import uses_chat_template

    causal = cfg.model.task == "causal-lm"
    info: dict[str, Any] = {
        "task": cfg.model.task,
        "base_model": cfg.model.name,
        "base_model_public_id": public_model_id(cfg.model.name),
        "seed": cfg.train.seed,  # the random tiny models are rebuilt from it
        "dtype": cfg.model.dtype,
        "max_length": cfg.model.max_length,
        "num_labels": len(label_names) if label_names is not None else None,
        "id2label": {str(i): name for i, name in enumerate(label_names)} if label_names is not None else None,
        "label2id": {name: i for i, name in enumerate(label_names)} if label_names is not None else None,
        "text_column": cfg.data.text_column,
        "text_pair_column": cfg.data.text_pair_column,
        "text_pairs": cfg.data.text_pair_column is not None or cfg.data.source == "chaosnli",  # trained on pairs
    }
    if causal:
        instruction = effective_instruction(cfg)
        info.update(
            chat_template=uses_chat_template(tokenizer, cfg.data.use_chat_template),
            instruction=instruction,
            system_prompt=cfg.data.system_prompt,
            prompt_column=cfg.data.text_column if instruction is not None else cfg.data.prompt_column,
        )
    return info


def label_names_of(info: dict[str, Any]) -> list[str] | None:
    id2label = info.get("id2label")
    if id2label is None:
        return None
    return [id2label[str(i)] for i in range(len(id2label))]


def save_run_adapter(
    model: nn.Module,
    directory: Path,
    cfg: RunConfig,
    *,
    tokenizer: Any,
    label_names: list[str] | None,
    kss: Any = None,
    state: dict[str, Any] | None = None,
) -> None:
    """Write a run's trained model to ``directory`` (see the module docstring). ``state``: the full trainable
    state gathered from FSDP2 shards, when sharded."""
    directory = Path(directory)
    public_id = public_model_id(cfg.model.name)
    peft_config = getattr(model, "peft_config", None)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if label_names is not None and cfg.model.task == "classification":
        # The head's config: full fine-tuning saves it as config.json; PEFT keeps it in memory only.
        base.config.id2label = dict(enumerate(label_names))
        base.config.label2id = {name: i for i, name in enumerate(label_names)}
    local_paths = base.config.name_or_path, getattr(base, "name_or_path", None)
    if peft_config is not None and public_id is not None:
        for adapter_config in peft_config.values():  # written to adapter_config.json
            adapter_config.base_model_name_or_path = public_id
        # PEFT's model card (README.md) names the base from these two.
        base.config.name_or_path = base.name_or_path = public_id
    try:
        model.save_pretrained(directory, safe_serialization=True, state_dict=state)
    finally:
        base.config.name_or_path, base.name_or_path = local_paths
    tokenizer.save_pretrained(directory)
    info = model_info(cfg, tokenizer, label_names)
    info["format"] = "peft" if peft_config is not None else "full"
    (directory / MODEL_INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")
    if kss is not None:
        kss.save(directory)


def read_model_info(directory: Path) -> dict[str, Any] | None:
    path = Path(directory) / MODEL_INFO_NAME
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError("adapter", f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(info, dict) or "task" not in info or "base_model" not in info:
        raise ConfigError("adapter", f"{path} is not a kss model description (no task/base_model)")
    return info


__all__ = [
    "MODEL_INFO_NAME",
    "PUBLIC_IDS",
    "builtin_name",
    "label_names_of",
    "model_info",
    "public_model_id",
    "read_model_info",
    "resolve_base_model",
    "save_run_adapter",
]
