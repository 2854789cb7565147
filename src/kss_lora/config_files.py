"""Config files as data: YAML read safely (no objects, no duplicate keys) and shipped configs found by name.

Below :mod:`kss_lora.config`, which re-exports these names; torch-free.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping gives the same key twice."""


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping.

    Plain YAML keeps the last of two ``train:`` blocks (or two ``lr:`` lines) without a word, so half of a
    config would be silently ignored. Merge keys (``<<: *base``) still override as YAML says.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in first_line:
                    raise DuplicateKeyError(
                        None,
                        None,
                        f"duplicate key {key!r} (first given at line {first_line[key]})",
                        key_node.start_mark,
                    )
                first_line[key] = key_node.start_mark.line + 1
            except TypeError:  # an unhashable key: the base class says so
                continue
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str) -> dict[str, Any]:
    """A config file's (or an override's) YAML as a dict; malformed YAML or a duplicate key is a ConfigError."""
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass: no objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        what = "YAML" if isinstance(exc, DuplicateKeyError) else "malformed YAML"
        raise ConfigError(source, f"{what}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(source, "top level must be a mapping of blocks (model, data, method, train, ...)")
    return data


NOT_RUN_CONFIGS = ("accelerate", "sweeps", "precision")


def shipped_configs() -> dict[str, Path]:
    """Configs shipped as package data, by name (file stem), e.g. ``quickstart``."""
    root = resources.files("kss_lora") / "configs"
    if not root.is_dir():
        return {}
    base = Path(str(root))
    paths = (Path(str(p)) for p in root.rglob("*.yaml"))
    # Not run configs: accelerate launcher profiles (kss run --profile), sweep files (kss sweep) and
    # precision experiment specs (benchmarks/run_precision_experiment.py).
    return {p.stem: p for p in paths if p.relative_to(base).parts[0] not in NOT_RUN_CONFIGS}


def resolve_config_path(name_or_path: str, *, shipped: dict[str, Path] | None = None, what: str = "config") -> Path:
    """A file path, or the name of a shipped file (run configs by default; pass ``shipped`` for others)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = shipped_configs() if shipped is None else shipped
    if name_or_path in shipped:
        return shipped[name_or_path]
    raise ConfigError(what, f"no such file or shipped {what} {name_or_path!r}; shipped: {', '.join(sorted(shipped))}")
