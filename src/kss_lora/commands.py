"""The ``kss`` subcommand registry, below every feature.

Each feature's ``cli`` module (lab, dynamics, detect, precision_lab, eval) registers its subcommands here with
:func:`command`; :mod:`kss_lora.cli` imports those modules by name and builds the parser from
:data:`COMMANDS`. Why a module of its own: a feature that registered on ``kss_lora.cli`` would import the CLI
back, and the CLI imports every feature, which is an import cycle.

Imports nothing from the project, so any layer may use it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

AddArgs = Callable[[argparse.ArgumentParser], None]
Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    """One subcommand: its help line, the function adding its arguments and the function running it."""

    name: str
    help: str
    add_args: AddArgs
    handler: Handler


COMMANDS: dict[str, Command] = {}
"""Registered subcommands by name, in registration order (the order ``kss --help`` lists them)."""


def command(name: str, help: str) -> Callable[[AddArgs], Callable[[Handler], Handler]]:  # noqa: A002 - argparse's word
    """Register a subcommand: ``@command(name, help)(add_args)`` on the handler function."""

    def register(add_args: AddArgs) -> Callable[[Handler], Handler]:
        def bind(handler: Handler) -> Handler:
            old = COMMANDS.get(name)
            # Re-importing a module registers the same handler again; two features claiming one name is a bug.
            if old is not None and _where(old.handler) != _where(handler):
                raise ValueError(f"subcommand {name!r} is registered by {_where(old.handler)} and {_where(handler)}")
            COMMANDS[name] = Command(name, help, add_args, handler)
            return handler

        return bind

    return register


def _where(handler: Handler) -> str:
    return f"{handler.__module__}.{handler.__qualname__}"


def quiet_libraries() -> None:
    """Library chatter (new-head notices, deprecations) buries our one-line output; keep errors only."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
