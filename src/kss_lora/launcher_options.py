"""Which launcher arguments a config may carry: where the other machines are, never what to run.

A config is data. ``launcher.args`` is passed to torchrun or ``accelerate launch``, whose other options
(``--no-python``, a script or program) would let a config file run a command; so only the multi-node options
below are accepted, each with a plain value. Torch-free: config validation uses it.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import ConfigError

# A config is data: launcher.args may only say where the other machines are, never what to run.
# Option -> takes a value. Both spellings (--node_rank / --node-rank) are accepted by both launchers.
LAUNCHER_OPTIONS: dict[str, dict[str, bool]] = {
    "torchrun": {
        "nnodes": True,
        "node_rank": True,
        "master_addr": True,
        "master_port": True,
        "rdzv_backend": True,
        "rdzv_endpoint": True,
        "rdzv_id": True,
        "max_restarts": True,
        "monitor_interval": True,
    },
    "accelerate": {
        "num_machines": True,
        "machine_rank": True,
        "main_process_ip": True,
        "main_process_port": True,
        "rdzv_backend": True,
        "same_network": False,
    },
}
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_.:\[\]][A-Za-z0-9_.:\[\]-]*")  # hosts, ports, ids, host:port, [v6]:port


def check_launcher_args(launcher: str, args: list[Any]) -> None:
    """Refuse any launcher argument that is not an allowed option with a plain value (ConfigError)."""
    if not args:
        return
    allowed = LAUNCHER_OPTIONS.get(launcher)
    if allowed is None:
        raise ConfigError("launcher.args", f"only used with accelerate or torchrun, not launcher.name={launcher!r}")
    names = ", ".join(f"--{name}" for name in allowed)
    tokens = [str(a) for a in args]
    i = 0
    while i < len(tokens):
        token = tokens[i]
        option, eq, value = token.partition("=")
        name = option[2:].replace("-", "_") if option.startswith("--") else None
        if name not in allowed:
            raise ConfigError("launcher.args", f"{token!r} is not an allowed {launcher} option; allowed: {names}")
        if not allowed[name]:
            if eq:
                raise ConfigError("launcher.args", f"{option} takes no value, got {token!r}")
            i += 1
            continue
        if not eq:
            if i + 1 >= len(tokens):
                raise ConfigError("launcher.args", f"{option} needs a value")
            value = tokens[i + 1]
            i += 1
        if not _PLAIN_VALUE.fullmatch(value):
            raise ConfigError(
                "launcher.args", f"{option} value {value!r} is not plain (letters, digits, . _ : - [ ] only)"
            )
        i += 1
