"""Run configuration: nested dataclasses, loaded from YAML with ``key=value`` overrides.

A config is data: YAML is parsed with a ``yaml.SafeLoader`` (refusing duplicate keys) and every key is checked against the
dataclass fields, so a typo is a one-line error naming the key and what is allowed, never a
silently ignored setting. Validation of values lives in each block's ``validate``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .config_files import (  # noqa: F401 - re-exported: config.parse_yaml etc. are public
    NOT_RUN_CONFIGS,
    DuplicateKeyError,
    UniqueKeyLoader,
    parse_yaml,
    resolve_config_path,
    shipped_configs,
)
from .errors import ConfigError
from .launcher_options import check_launcher_args
from .recorded_paths import absolute_data_paths
from .run_ids import run_id_of

TASKS = ("classification", "causal-lm")
DATA_SOURCES = ("synthetic", "file", "hf", "chaosnli")
DATA_FORMATS = ("csv", "tsv", "jsonl", "json", "parquet")
DATA_PATH_KEYS = ("data.train", "data.validation", "data.test", "tracking.heldout")
SCHEDULERS = ("linear", "cosine", "constant")
NOISE_KINDS = ("symmetric", "asymmetric", "response-swap")
PRECISIONS = ("fp32", "bf16", "fp8", "emu-fp8", "emu-fp4")
MODEL_DTYPES = ("float32", "bfloat16", "float16")
QUANTIZATIONS = ("4bit",)
STREAM_BACKENDS = ("mlflow", "tensorboard", "wandb")
LAUNCHERS = ("none", "accelerate", "torchrun")
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
"""The spellings of ``train.device``; whether that device exists is checked where the model is placed."""


def _help(text: str, default: Any = None, factory: Any = None) -> Any:
    if factory is not None:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class ModelConfig:
    name: str = _help("Built-in name (minilm, smollm2-135m, tiny-bert, tiny-llama), HF id or local path.", "minilm")
    task: str = _help(f"Training task, one of {TASKS}.", "classification")
    max_length: int = _help("Maximum tokens per example (longer inputs are truncated).", 128)
    trust_remote_code: bool = _help("Allow model code from the checkpoint. Off by default for safety.", False)
    dtype: str = _help(
        f"Storage dtype of the base weights, one of {MODEL_DTYPES}; bfloat16 halves the memory of a 7-8B model "
        "(LoRA tensors stay float32). Compute precision is precision.mode.",
        "float32",
    )
    quantization: str | None = _help(
        f"QLoRA: load the base model quantized, one of {QUANTIZATIONS} (causal-lm, bitsandbytes and a CUDA GPU)."
    )

    def validate(self) -> None:
        _choice("model.task", self.task, TASKS)
        _positive("model.max_length", self.max_length)
        _choice("model.dtype", self.dtype, MODEL_DTYPES)
        if self.quantization is not None:
            _choice("model.quantization", self.quantization, QUANTIZATIONS)


@dataclass
class DataConfig:
    source: str = _help(f"Where examples come from, one of {DATA_SOURCES}.", "synthetic")
    train: str | None = _help(
        "Training file (csv, tsv, jsonl, json, parquet) or, for source=hf, a dataset: a hub name or a folder (saved "
        "with save_to_disk, or of data files), optionally with ':split' (default: the role's name, e.g. train). "
        "Relative paths are read against the config file's folder (the working directory for shipped configs "
        "and command-line overrides); the same for validation, test and tracking.heldout."
    )
    validation: str | None = _help("Validation file; split off the training file when absent.")
    test: str | None = _help("Test file; test metrics are skipped when absent.")
    format: str | None = _help(
        f"File format, one of {DATA_FORMATS}; inferred from the suffix when absent. json: a JSON array of "
        "records (e.g. Alpaca's instruction/input/output) or JSON lines."
    )
    hf_config: str | None = _help(
        "source=hf: the dataset's config name (load_dataset's second argument), e.g. sst2 for glue; "
        "the split goes after the name: train: glue:train, validation: glue:validation."
    )
    header: bool = _help("Whether csv/tsv files have a header row.", True)
    column_names: list[str] | None = _help("Column names for files without a header row.")
    text_column: str = _help("Column holding the text.", "text")
    text_pair_column: str | None = _help("Column holding the second text of a pair (e.g. NLI hypothesis).")
    label_column: str = _help("Column holding the label (names or integers).", "label")
    label_names: list[str] | None = _help(
        "Label order; when absent, the label values seen in the training data, sorted (integers numerically)."
    )
    val_fraction: float = _help("Fraction of the training pool held out for validation when no file is given.", 0.1)
    max_train_examples: int | None = _help("Stratified, seeded subsample of the training pool (after split).")
    max_eval_examples: int | None = _help("Stratified, seeded subsample of validation and test sets.")
    split_seed: int = _help("Seed for the validation split and subsampling (fixed across training seeds).", 0)
    num_classes: int = _help("Synthetic data: number of classes.", 4)
    num_examples: int = _help("Synthetic data: examples in the training pool (validation/test are extra).", 800)
    synthetic_ambiguity: float = _help("Synthetic data: fraction of words drawn from other classes.", 0.25)
    prompt_column: str = _help("causal-lm: column holding the prompt (instruction / question).", "prompt")
    response_column: str = _help("causal-lm: column holding the response the model learns to produce.", "response")
    messages_column: str | None = _help(
        "causal-lm: column holding chat messages ([{role, content}, ...]); every assistant turn is trained on. "
        "Replaces prompt_column/response_column when set."
    )
    instruction: str | None = _help(
        "causal-lm from classification data: prompt template with {text} (and {text_pair}, {labels}); the "
        "response is the label name. Default for source=synthetic/chaosnli under causal-lm."
    )
    system_prompt: str | None = _help("causal-lm: system message put before each conversation.")
    use_chat_template: bool = _help(
        "causal-lm: format with the tokenizer's chat template when it has one (else prompt, newline, response, EOS).",
        True,
    )

    def __post_init__(self) -> None:
        # Folders that relative data paths are read against, by config key ("data.train", "tracking.heldout");
        # load_config sets them for a config file's own paths, the rest are read against the working directory.
        # Not a dataclass field on purpose: neither hashed into the run id nor written to config.yaml, so a
        # config has the same run id wherever it is run from.
        self.path_bases: dict[str, Path] = {}

    def validate(self) -> None:
        _choice("data.source", self.source, DATA_SOURCES)
        if self.messages_column is not None and self.instruction is not None:
            raise ConfigError("data.instruction", "give either data.instruction or data.messages_column, not both")
        if self.format is not None:
            _choice("data.format", self.format, DATA_FORMATS)
        if self.hf_config is not None and self.source != "hf":
            raise ConfigError("data.hf_config", f"only used with data.source=hf, not {self.source!r}")
        if self.source in ("file", "hf", "chaosnli") and not self.train:
            raise ConfigError("data.train", f"required when data.source={self.source}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError("data.val_fraction", f"must be in (0, 1), got {self.val_fraction}")
        for name in ("max_train_examples", "max_eval_examples"):
            value = getattr(self, name)
            if value is not None:
                _positive(f"data.{name}", value)
        if self.num_classes < 2:
            raise ConfigError("data.num_classes", f"must be at least 2, got {self.num_classes}")
        _positive("data.num_examples", self.num_examples)
        if not 0.0 <= self.synthetic_ambiguity < 1.0:
            raise ConfigError("data.synthetic_ambiguity", f"must be in [0, 1), got {self.synthetic_ambiguity}")


@dataclass
class MethodConfig:
    name: str = _help("Method: lora, rslora, lora-dropout, dora, kss, childtuning-f, full-ft.", "kss")
    preset: str | None = _help("KSS preset: standard, kss-default, kss-highgamma, kss-sparse, kss-verysparse.")
    rank: int = _help("LoRA rank r.", 8)
    gamma: float | None = _help("Update scale γ = lora_alpha / r (rslora: lora_alpha / sqrt(r)).")
    alpha: float | None = _help("lora_alpha; give either gamma or alpha. Default γ = 1.0.")
    sparsity: float | None = _help("ρ: fraction of gradient entries dropped each step (kss, childtuning-f).")
    mask_mode: str = _help("KSS mask mode: grad, update or rank.", "grad")
    dropout: float | None = _help("LoRA input dropout (default 0.1 for lora-dropout, else 0).")
    target_modules: list[str] | str | None = _help(
        "Modules to adapt: a list of module names (a name matches a module whose path ends with it), "
        "'all-linear' (every linear layer but the output head; PEFT's keyword) or a string, a regular expression "
        "matched against the full module path (PEFT's rule), e.g. '.*\\.(query|value)$'. A per-architecture "
        "default when absent."
    )

    def validate(self) -> None:
        # Method names and preset values are validated against the method table (single source of truth);
        # that module is torch-free, so loading a config does not load a model library.
        from .methods.resolve import validate_method

        validate_method(self)


@dataclass
class TrainConfig:
    seed: int = _help("Seed for initialisation, data order and KSS masks.", 0)
    epochs: int = _help("Passes over the training set.", 3)
    batch_size: int = _help("Examples per optimizer step (per micro-batch times grad_accum).", 16)
    grad_accum: int = _help("Micro-batches accumulated per optimizer step.", 1)
    eval_batch_size: int = _help("Batch size for evaluation passes.", 64)
    lr: float = _help("Peak learning rate (AdamW).", 5e-4)
    weight_decay: float = _help("AdamW weight decay (>= 0).", 0.0)
    warmup_ratio: float = _help("Fraction of steps with linear warm-up.", 0.06)
    scheduler: str = _help(f"Learning-rate schedule after warm-up, one of {SCHEDULERS}.", "linear")
    grad_clip: float | None = _help(
        "Max gradient norm (clipped before the KSS mask), > 0; null or 0 disables clipping.", 1.0
    )
    max_steps: int | None = _help("Stop after this many optimizer steps (for smoke tests).")
    device: str = _help(
        "auto (cuda when available, else cpu), cpu, cuda, cuda:N or mps; a device this machine lacks is refused.",
        "auto",
    )
    threads: int | None = _help("torch CPU threads; torch's default when absent.")
    progress: bool = _help("Show a progress bar.", True)
    gradient_checkpointing: bool = _help(
        "Recompute activations in the backward pass (less memory, about 30% more compute); for 7-8B models.", False
    )
    checkpoint_every: int | None = _help("Save the training state every N optimizer steps (for kss run --resume).")
    eval_every_steps: int | None = _help("Also evaluate validation every N optimizer steps (metrics.jsonl kind eval).")
    log_every_steps: int | None = _help("Write the training loss and lr every N steps (metrics.jsonl kind step).")
    early_stopping_patience: int | None = _help("Stop after this many evaluations without a lower val_loss.")
    restore_best: bool = _help("At the end, put back the adapter of the evaluation with the lowest val_loss.", False)
    class_weights: str | None = _help(
        "balanced: weight each class's training loss by its inverse frequency in the labels trained on (after noise "
        "injection), normalised to mean 1 over classes; classification only; train_loss/val_loss stay unweighted."
    )

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "eval_batch_size"):
            _positive(f"train.{name}", getattr(self, name))
        if self.batch_size % self.grad_accum:
            raise ConfigError("train.grad_accum", f"must divide train.batch_size={self.batch_size}")
        _finite("train.lr", self.lr)
        if not self.lr > 0:
            raise ConfigError("train.lr", f"must be > 0, got {self.lr}")
        _finite("train.weight_decay", self.weight_decay)
        if self.weight_decay < 0:
            raise ConfigError("train.weight_decay", f"must be >= 0 (0 = no weight decay), got {self.weight_decay}")
        if self.grad_clip is not None:
            _finite("train.grad_clip", self.grad_clip)
            # A negative norm would flip the gradient in clip_grad_norm_ (silently training away from the data).
            if self.grad_clip < 0:
                raise ConfigError("train.grad_clip", f"must be > 0, or 0 or null to disable, got {self.grad_clip}")
        _finite("train.warmup_ratio", self.warmup_ratio)
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError("train.warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        _choice("train.scheduler", self.scheduler, SCHEDULERS)
        if self.class_weights is not None:
            _choice("train.class_weights", self.class_weights, ("balanced",))
        if not DEVICE_PATTERN.fullmatch(self.device):
            raise ConfigError("train.device", f"unknown device {self.device!r}; allowed: auto, cpu, cuda, cuda:N, mps")
        if self.max_steps is not None:
            _positive("train.max_steps", self.max_steps)
        for name in ("checkpoint_every", "eval_every_steps", "log_every_steps", "early_stopping_patience"):
            if getattr(self, name) is not None:
                _positive(f"train.{name}", getattr(self, name))


@dataclass
class NoiseConfig:
    rate: float = _help(
        "Fraction of training labels corrupted (validation/test stay clean); with a transition matrix the "
        "matrix sets the rates and this stays 0.",
        0.0,
    )
    kind: str = _help(f"Noise kind, one of {NOISE_KINDS}.", "symmetric")
    pairs: dict[int, int] | None = _help(
        "For kind=asymmetric: {clean class id: noisy class id}, flipped with prob rate."
    )
    transition: list[list[float]] | None = _help("For kind=asymmetric: row-stochastic matrix T[clean][noisy].")
    seed: int | None = _help("Seed of the noise draw; fixed across training seeds when set, else train.seed.")

    def validate(self) -> None:
        _choice("noise.kind", self.kind, NOISE_KINDS)
        _finite("noise.rate", self.rate)
        if not 0.0 <= self.rate < 1.0:
            raise ConfigError("noise.rate", f"must be in [0, 1), got {self.rate}")
        if self.kind == "asymmetric" and (self.pairs is None) == (self.transition is None):
            raise ConfigError("noise.kind", "asymmetric noise needs exactly one of noise.pairs or noise.transition")
        if self.kind != "asymmetric" and (self.pairs is not None or self.transition is not None):
            raise ConfigError("noise.kind", f"pairs/transition need kind=asymmetric, got {self.kind!r}")

    @property
    def active(self) -> bool:
        return self.rate > 0 or self.transition is not None


@dataclass
class TrackingConfig:
    per_example: bool = _help("Record per-example logits at checkpoints (dynamics.npz).", False)
    free: bool = _help("Also record the training forward pass's own logits (no extra compute).", False)
    every_steps: int | None = _help("Extra eval-mode checkpoint every N steps (epoch ends and step 0 always).")
    heldout: str | None = _help("A second file of items to track (same data settings), e.g. ChaosNLI SNLI.")
    train_role: str | None = _help("Record only training rows of this kss_role (kss entropy-data files: tracked).")
    stream: list[str] | None = _help(
        f"Send metrics to these trackers while the run trains, any of {STREAM_BACKENDS} (extra tracking)."
    )

    def validate(self) -> None:
        for backend in self.stream or ():
            _choice("tracking.stream", backend, STREAM_BACKENDS)
        if self.every_steps is not None:
            _positive("tracking.every_steps", self.every_steps)
        if (self.free or self.every_steps or self.heldout or self.train_role) and not self.per_example:
            raise ConfigError("tracking.per_example", "must be true when free/every_steps/heldout/train_role is set")
        if self.train_role is not None and self.free:
            raise ConfigError("tracking.train_role", "cannot be combined with tracking.free (it records every row)")


@dataclass
class PrecisionConfig:
    mode: str = _help(f"Numeric precision, one of {PRECISIONS}; emu-* emulate on any device.", "fp32")
    emulation: dict[str, Any] = _help(
        "Options of kss_lora.precision.EmulationConfig (scaling, rounding, which tensors), for emu-* modes.",
        factory=dict,
    )

    def validate(self) -> None:
        _choice("precision.mode", self.mode, PRECISIONS)
        if self.emulation and not self.mode.startswith("emu-"):
            raise ConfigError("precision.emulation", f"only used with emu-fp8/emu-fp4, not {self.mode!r}")
        if self.mode.startswith("emu-"):
            from .precision.config import emulation_config  # torch-free, like this module

            emulation_config(self)


@dataclass
class OutputConfig:
    dir: str = _help("Directory under which run directories are created.", "runs")
    run_name: str | None = _help("Run directory name; <method>-<config hash> when absent.")
    save_adapter: bool = _help("Save the trained adapter (PEFT format) in the run directory.", True)

    def validate(self) -> None:
        if self.run_name is not None and ("/" in self.run_name or self.run_name in ("", ".", "..")):
            raise ConfigError("output.run_name", f"must be a plain directory name, got {self.run_name!r}")


@dataclass
class LauncherConfig:
    name: str = _help(
        f"How `kss run` starts processes, one of {LAUNCHERS}; none = this process (or the one torchrun/accelerate "
        "already started).",
        "none",
    )
    profile: str = _help(
        "Shipped profile name (ddp: replicated weights; fsdp2: sharded weights) or a path to an accelerate config "
        "file. accelerate launches with it; under torchrun (or any launched process) it still picks ddp or fsdp2.",
        "ddp",
    )
    num_processes: int | None = _help(
        "Processes per machine (GPUs); the profile's value, or 2 for torchrun, when absent."
    )
    args: list[str] = _help(
        "Extra launcher arguments, e.g. multi-node: [--num_machines, '2', --machine_rank, '0', --main_process_ip, "
        "10.0.0.1] (accelerate) or [--nnodes, '2', --node_rank, '0', --master_addr, 10.0.0.1] (torchrun).",
        factory=list,
    )

    def validate(self) -> None:
        _choice("launcher.name", self.name, LAUNCHERS)
        if self.num_processes is not None:
            _positive("launcher.num_processes", self.num_processes)
        check_launcher_args(self.name, self.args)


@dataclass
class RunConfig:
    model: ModelConfig = _help("The model to fine-tune.", factory=ModelConfig)
    data: DataConfig = _help("Where the data comes from and how it is split.", factory=DataConfig)
    method: MethodConfig = _help("Fine-tuning method and its hyperparameters.", factory=MethodConfig)
    train: TrainConfig = _help("Optimisation settings.", factory=TrainConfig)
    noise: NoiseConfig = _help("Label noise injected into the training set.", factory=NoiseConfig)
    tracking: TrackingConfig = _help("Per-example dynamics recording.", factory=TrackingConfig)
    precision: PrecisionConfig = _help("Numeric precision (bf16, real FP8, emulated FP8/FP4).", factory=PrecisionConfig)
    output: OutputConfig = _help("Where results are written.", factory=OutputConfig)
    launcher: LauncherConfig = _help(
        "Multi-process (data-parallel) launch: accelerate or torchrun.", factory=LauncherConfig
    )
    description: str = _help("Free text describing the run (copied to result.json).", "")

    def validate(self) -> RunConfig:
        for f in dataclasses.fields(self):
            block = getattr(self, f.name)
            if dataclasses.is_dataclass(block):
                block.validate()
        if self.train.class_weights is not None and self.model.task != "classification":
            raise ConfigError("train.class_weights", f"weights classes, so classification only; not {self.model.task}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def run_id(self) -> str:
        """Stable hash of everything that changes the result (output, description and launcher do not).

        A field is hashed when it belongs to the first published id scheme (:data:`FIRST_ID_FIELDS`) or when
        it differs from its default. So a field added with a default never moves an id (a sweep's "already
        done" check keeps working), and every id published before this scheme stays what it was.
        """
        blocks = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return run_id_of(
            {
                name: (dataclasses.asdict(b), dataclasses.asdict(type(b)()))
                for name, b in blocks.items()
                if dataclasses.is_dataclass(b)
            }
        )


# ----------------------------------------------------------------------------- building and loading


def from_dict(data: dict[str, Any]) -> RunConfig:
    """Build and validate a RunConfig from a nested dict (unknown keys are errors)."""
    return _build(RunConfig, data, prefix="").validate()


# Other libraries' names for our keys (too unlike ours for difflib): the "did you mean" of an unknown key.
KEY_ALIASES = {"learning_rate": "lr", "num_epochs": "epochs", "r": "rank", "lora_alpha": "alpha", "rho": "sparsity"}


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(prefix.rstrip(".") or "config", f"must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            near = (
                [KEY_ALIASES[key]] if KEY_ALIASES.get(key) in names else difflib.get_close_matches(str(key), names, n=1)
            )
            hint = f"did you mean {prefix}{near[0]}? " if near else ""
            raise ConfigError(f"{prefix}{key}", f"unknown config key; {hint}allowed: {', '.join(names)}")
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, prefix=f"{where}.")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        # `list[str] | str` (method.target_modules): a string stays a string, a list a list.
        for arg in args:
            if (arg is str and isinstance(value, str)) or (typing.get_origin(arg) is list and isinstance(value, list)):
                return _coerce(arg, value, where)
        return _coerce(args[0], value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(where, f"must be a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(item, v, where) for v in value]
    if tp is Any:
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(where, f"must be a mapping, got {value!r}")
        kt, vt = typing.get_args(tp)
        return {_coerce(kt, k, where): _coerce(vt, v, where) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(where, f"must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise ConfigError(where, f"must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(where, f"must be a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(where, f"must be a string, got {value!r}")
    return value


def load_raw(name_or_path: str) -> dict[str, Any]:
    path = resolve_config_path(name_or_path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from None
    return parse_yaml(text, str(path))


def parse_override(item: str, where: str = "override") -> tuple[str, Any]:
    """``a.b.c=value`` → ``("a.b.c", value)``; the value is a YAML scalar or list (``lr=1e-4``, ``x=[1,2]``).

    An empty value (``key=``) is ``None``: the field goes back to its default (null). Used by ``kss run``
    overrides and by ``kss sweep`` overrides and ``--grid`` axes alike.
    """
    if "=" not in item:
        raise ConfigError(where, f"expected key=value, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(where, f"expected key=value with a dotted key, got {item!r}")
    value = parse_yaml(f"v: {raw}", f"{where} {key}")["v"] if raw.strip() else None
    return key, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (see :func:`parse_override`) to a copy of ``data``."""
    out = copy.deepcopy(data)
    for item in overrides:
        key, value = parse_override(item)
        set_key(out, key, value)
    return out


def set_key(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(dotted, f"{part!r} is not a block")
        node = child
    node[parts[-1]] = value


def load_config(name_or_path: str, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML config (path or shipped name), apply overrides, validate.

    Relative data paths written in a config file named by path are read against that file's folder; those of
    shipped configs and of overrides against the working directory. The paths stay as written in the config
    (and its run id): only ``DataConfig.path_bases`` records the folder.
    """
    overrides = overrides or []
    raw = load_raw(name_or_path)
    data = apply_overrides(raw, overrides)
    _drop_preset_for_other_method(raw, data, overrides)
    cfg = from_dict(data)
    shipped_root = Path(str(resources.files("kss_lora") / "configs")).resolve()
    path = Path(name_or_path).resolve()
    # A path, not a shipped name (resolve_config_path's test), and not a shipped file named by its path
    # (configs/agnews.yaml): shipped paths are written for the working directory.
    if Path(name_or_path).is_file() and not path.is_relative_to(shipped_root):
        folder = path.parent
        overridden = {item.split("=", 1)[0].strip() for item in overrides}
        for key in DATA_PATH_KEYS:
            if not overridden & {key, key.split(".")[0]}:  # `data.train=...` or a whole `data={...}` block
                cfg.data.path_bases[key] = folder
    return cfg


def _drop_preset_for_other_method(raw: dict[str, Any], data: dict[str, Any], overrides: list[str]) -> None:
    """``method.name=lora`` on a config with ``method.preset: kss-default`` means "this config, with LoRA":
    presets are KSS settings, so the base config's preset goes (said on stderr) unless an override sets one."""
    keys = {item.split("=", 1)[0].strip() for item in overrides}
    base = raw.get("method") if isinstance(raw.get("method"), dict) else {}
    method = data.get("method") if isinstance(data.get("method"), dict) else {}
    preset, name = base.get("preset"), method.get("name")
    if "method.name" not in keys or "method.preset" in keys or preset is None or name in ("kss", preset):
        return
    method.pop("preset", None)
    print(
        f"note: method.name={name} drops the config's method.preset={preset} (presets are KSS settings)",
        file=sys.stderr,
    )


def to_yaml(cfg: RunConfig, method: Any = None) -> str:
    """The config as YAML; with ``method`` (a resolved method, e.g. ``methods.resolve_method(cfg.method)``)
    the method block holds the values that were trained with instead of ``null`` defaults. Data paths are
    written absolute, as they were read (see :mod:`kss_lora.recorded_paths`), so the file reruns from anywhere."""
    data = cfg.to_dict()
    absolute_data_paths(data, cfg.data.path_bases, DATA_PATH_KEYS)
    if method is not None:
        block = data["method"]
        for key in ("name", "preset", "rank", "gamma", "sparsity", "mask_mode", "dropout", "target_modules"):
            block[key] = getattr(method, key)
        if block["alpha"] is not None:  # γ is the resolved form; both together would not load back
            block["alpha"] = None
    return yaml.safe_dump(data, sort_keys=False)


# ----------------------------------------------------------------------------- small validators


def _choice(where: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(where, f"unknown value {value!r}; allowed: {', '.join(allowed)}")


def _finite(where: str, value: float) -> None:
    # YAML's .inf/.nan and the override strings inf/nan parse as floats; range checks alone let inf through.
    if not math.isfinite(value):
        raise ConfigError(where, f"must be a finite number, got {value}")


def _positive(where: str, value: int) -> None:
    if value < 1:
        raise ConfigError(where, f"must be at least 1, got {value}")
