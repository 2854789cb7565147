"""Errors that reach users as one line: ``field: what is wrong (what is allowed)``.

The CLI catches :class:`KSSError` and prints ``error: <message>`` with exit code 2, never a traceback.
"""

from __future__ import annotations


class KSSError(ValueError):
    """Base class for user-facing errors (bad config, bad data, bad arguments)."""


class ConfigError(KSSError):
    """A config field holds a value that is not allowed.

    ``ConfigError("method.sparsity", "must be in [0, 1), got 1.2")`` prints as
    ``method.sparsity: must be in [0, 1), got 1.2``.
    """

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class DataError(KSSError):
    """Input data cannot be read or does not have what the config asks for."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the run is recorded as failed with this reason."""
