"""Configuration of low-precision emulation: which formats, which scaling, which tensors.

Kept separate from the quantizer so a config loader can validate a YAML/JSON section without
touching torch (this module imports only the torch-free :mod:`.catalog`), and so every setting carries a
``help`` string a CLI or docs generator can print.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from kss_lora.errors import ConfigError
from kss_lora.precision.catalog import BLOCK_FORMATS, SCALING_MODES, QuantSpec, check_rounding, get_format

_PREFIX = "precision"
COMPUTE_DTYPES: tuple[str, ...] = ("float32", "bfloat16")
_TENSOR_FLAGS = ("base_weight", "base_input", "lora_weight", "lora_activation", "grad_output")


@dataclass
class EmulationConfig:
    """Low-precision emulation settings (docs/spec.md §3). Defaults: the FP8 recipe E4M3 fwd / E5M2 bwd."""

    forward_format: str = field(
        default="e4m3",
        metadata={"help": "format for weights and activations in the forward pass: e4m3, e5m2, e2m1"},
    )
    backward_format: str = field(
        default="e5m2",
        metadata={"help": "format for output gradients in the backward pass: e4m3, e5m2, e2m1"},
    )
    scaling: str = field(
        default="tensor",
        metadata={
            "help": "none = raw cast (magnitude decides underflow), tensor = per-tensor amax scale, "
            "block = per-block scale along the last dim (see block_format)"
        },
    )
    block_format: str = field(
        default="mx",
        metadata={"help": "block scaling flavour: mx (32 values, power-of-two scale) or nvfp4 (16, E4M3 scale)"},
    )
    block_size: int | None = field(
        default=None, metadata={"help": "values per block; null = format default (mx 32, nvfp4 16)"}
    )
    rounding: str = field(
        default="nearest", metadata={"help": "nearest (ties to even) or stochastic (unbiased, seeded)"}
    )
    saturate: bool = field(
        default=True, metadata={"help": "clamp overflow to the format max instead of producing inf/NaN"}
    )
    two_level: bool = field(
        default=True,
        metadata={"help": "nvfp4 only: add a float32 per-tensor scale so E4M3 block scales do not underflow"},
    )
    seed: int = field(default=0, metadata={"help": "seed of the stochastic-rounding generator"})
    compute_dtype: str = field(
        default="float32",
        metadata={
            "help": "dtype of everything that is not fake-quantized (matmul accumulation, norms, softmax): "
            "float32 isolates the format; bfloat16 runs under bf16 autocast like a real FP8 recipe, so "
            "the difference to a bf16 run is the format alone (and CPUs with bf16 units run it faster)"
        },
    )
    base_weight: bool = field(default=True, metadata={"help": "quantize weights of frozen base Linear layers"})
    base_input: bool = field(default=True, metadata={"help": "quantize inputs of frozen base Linear layers"})
    lora_weight: bool = field(default=True, metadata={"help": "quantize LoRA A and B weights (straight-through)"})
    lora_activation: bool = field(default=True, metadata={"help": "quantize the inputs of LoRA A (x) and LoRA B (A x)"})
    grad_output: bool = field(
        default=True, metadata={"help": "quantize the gradient w.r.t. each emulated Linear's output"}
    )

    def __post_init__(self) -> None:
        get_format(self.forward_format, f"{_PREFIX}.forward_format")
        get_format(self.backward_format, f"{_PREFIX}.backward_format")
        if self.scaling not in SCALING_MODES:
            raise ConfigError(
                f"{_PREFIX}.scaling", f"unknown scaling {self.scaling!r}; allowed: {', '.join(SCALING_MODES)}"
            )
        if self.block_format not in BLOCK_FORMATS:
            raise ConfigError(
                f"{_PREFIX}.block_format",
                f"unknown block format {self.block_format!r}; allowed: {', '.join(BLOCK_FORMATS)}",
            )
        bs = self.block_size
        if bs is not None and (isinstance(bs, bool) or not isinstance(bs, int) or bs < 1):
            raise ConfigError(f"{_PREFIX}.block_size", f"must be a positive integer or null, got {bs!r}")
        check_rounding(self.rounding, f"{_PREFIX}.rounding")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ConfigError(
                f"{_PREFIX}.compute_dtype",
                f"unknown dtype {self.compute_dtype!r}; allowed: {', '.join(COMPUTE_DTYPES)}",
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"{_PREFIX}.seed", f"must be an integer, got {self.seed!r}")
        for name in ("saturate", "two_level", *_TENSOR_FLAGS):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ConfigError(f"{_PREFIX}.{name}", f"must be true or false, got {value!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmulationConfig:
        """Build from a plain mapping (e.g. a YAML section); unknown keys are a :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise ConfigError(f"{_PREFIX}.{key}", f"unknown setting; allowed: {', '.join(sorted(known))}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for run records."""
        return asdict(self)

    @classmethod
    def help(cls) -> dict[str, str]:
        """``{field: help text (default ...)}`` for CLI listings."""
        out = {}
        for f in fields(cls):
            default = f.default if f.default is not MISSING else None
            out[f.name] = f"{f.metadata.get('help', '')} (default {default!r})"
        return out

    def _spec(self, fmt: str) -> QuantSpec:
        return QuantSpec(
            get_format(fmt),
            scaling=self.scaling,
            block_format=self.block_format,
            block_size=self.block_size,
            rounding=self.rounding,
            saturate=self.saturate,
            two_level=self.two_level,
        )

    def forward_spec(self) -> QuantSpec:
        """Quantizer for forward tensors (weights, activations)."""
        return self._spec(self.forward_format)

    def backward_spec(self) -> QuantSpec:
        """Quantizer for output gradients."""
        return self._spec(self.backward_format)


# Format defaults per emulated mode; precision.emulation overrides any field of EmulationConfig.
EMULATION_DEFAULTS: dict[str, dict[str, Any]] = {
    "emu-fp8": {"forward_format": "e4m3", "backward_format": "e5m2"},
    "emu-fp4": {"forward_format": "e2m1", "backward_format": "e5m2"},
}


def emulation_config(precision: Any) -> EmulationConfig:
    """The EmulationConfig for a ``PrecisionConfig`` block (validated; bad fields are ConfigErrors)."""
    options = {**EMULATION_DEFAULTS[precision.mode], **(precision.emulation or {})}
    return EmulationConfig.from_dict(options)
