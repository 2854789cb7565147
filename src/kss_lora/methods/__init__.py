"""Fine-tuning methods: KSS-LoRA (``methods/kss``) and its baselines.

- :mod:`.specs`: every method as data (:class:`MethodSpec`, :func:`register_method`), torch-free.
- :mod:`.resolve`: presets and defaults applied (:func:`resolve_method`), torch-free.
- :mod:`.registry`: the torch side (:func:`wrap_model`, :func:`masked_parameters`).

Names are imported lazily, so the config layer can validate a method block without loading torch.
"""

from importlib import import_module
from typing import Any

_WHERE = {
    "METHOD_SPECS": ".specs",
    "MethodSpec": ".specs",
    "get_method_spec": ".specs",
    "register_method": ".specs",
    "ResolvedMethod": ".resolve",
    "resolve_method": ".resolve",
    "validate_method": ".resolve",
    "METHODS": ".registry",
    "default_targets": ".registry",
    "masked_parameters": ".registry",
    "wrap_model": ".registry",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
