"""The version lives in one place (``kss_lora.__version__``) and ``kss --version`` prints it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import kss_lora
from kss_lora.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_kss_version_prints_the_package_version(capsys):
    try:
        main(["--version"])
    except SystemExit as done:  # argparse's version action exits 0 after printing
        assert done.code == 0
    assert capsys.readouterr().out.strip() == f"kss {kss_lora.__version__}"


def test_version_is_declared_once():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "kss_lora.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", kss_lora.__version__)


def test_changelog_names_the_current_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", text, flags=re.M)
    assert "## [Unreleased]" in text and released and released[0] == kss_lora.__version__
