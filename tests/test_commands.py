"""Subcommands register explicitly with kss_lora.commands; kss_lora.cli names the feature modules."""

from __future__ import annotations

import argparse

import pytest

from kss_lora import commands
from kss_lora.cli import build_parser

SUBCOMMANDS = {
    "run": "kss_lora.cli",
    "configs": "kss_lora.cli",
    "sweep": "kss_lora.lab.cli",
    "ls": "kss_lora.lab.cli",
    "aggregate": "kss_lora.lab.cli",
    "report": "kss_lora.lab.cli",
    "mirror": "kss_lora.lab.cli",
    "dynamics": "kss_lora.dynamics.cli",
    "entropy": "kss_lora.dynamics.cli",
    "entropy-data": "kss_lora.dynamics.cli",
    "optimal-rank": "kss_lora.dynamics.cli",
    "detect": "kss_lora.detect.cli",
    "precision": "kss_lora.precision_lab.cli",
    "eval": "kss_lora.eval.cli",
    "predict": "kss_lora.predict_cli",
}


def test_every_subcommand_registered_by_its_feature():
    build_parser()
    assert {name: cmd.handler.__module__ for name, cmd in commands.COMMANDS.items()} == SUBCOMMANDS


def test_parser_dispatches_to_the_registered_handler():
    args = build_parser().parse_args(["ls", "somewhere"])
    assert args.handler is commands.COMMANDS["ls"].handler


def test_a_name_claimed_twice_is_refused(monkeypatch):
    monkeypatch.setattr(commands, "COMMANDS", dict(commands.COMMANDS))

    def other(args: argparse.Namespace) -> int:
        return 0

    with pytest.raises(ValueError, match="'ls' is registered by kss_lora.lab.cli"):
        commands.command("ls", "another ls")(lambda p: None)(other)
    again = commands.COMMANDS["ls"]
    commands.command("ls", again.help)(again.add_args)(again.handler)  # re-registering the same handler is fine
    assert commands.COMMANDS["ls"] == again
