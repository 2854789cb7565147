"""``python -m kss_lora ...`` is the ``kss`` command."""

from kss_lora.cli import entry

entry()
