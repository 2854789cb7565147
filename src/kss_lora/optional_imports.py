"""Keep torchao off the default path: only ``precision.mode: fp8`` needs it.

transformers and peft probe for torchao with ``importlib.util.find_spec`` and, when it is installed, import
it at start-up (transformers' quantizer registry); torchao then logs a line per kernel library it cannot load
and torch's pytree deprecation warnings, on every command, and costs seconds. The ``kss`` command's entry
point (:func:`kss_lora.cli.entry`, also ``python -m kss_lora``) marks torchao absent in ``sys.modules`` (a
``None`` entry: ``find_spec`` returns None and ``import torchao`` raises ImportError) until the FP8 runtime
asks for it (:func:`allow_torchao`). Nothing else does: ``import kss_lora`` or calling ``cli.main`` from
Python (tests) leaves the process's imports alone.
"""

from __future__ import annotations

import sys


def defer_torchao() -> None:
    """Hide torchao from other libraries' availability probes in this process (the CLI calls this first)."""
    if "torchao" not in sys.modules:
        sys.modules["torchao"] = None  # type: ignore[assignment]


def allow_torchao() -> None:
    """Undo :func:`defer_torchao` so that ``import torchao`` loads it (FP8 training)."""
    if "torchao" in sys.modules and sys.modules["torchao"] is None:
        del sys.modules["torchao"]
