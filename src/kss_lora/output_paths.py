"""Checks of an output path before anything is written: a directory to write into must not be a file.

Checked first, so a bad ``-o`` is one line (exit 2) and nothing is written, instead of a traceback from
``mkdir`` after the work was done; and a folder holding a user's files of the names a command rewrites is
refused (:func:`check_own_outputs`).
"""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError

__all__ = ["check_output_dir", "check_output_file", "check_own_outputs"]


def check_output_dir(path: str | Path, field: str) -> Path:
    """``path`` as a :class:`Path` if it is, or can be created as, a directory; else :class:`ConfigError`
    naming ``field`` (``-o``, ``--out``). Creates nothing."""
    p = Path(path)
    for part in (p, *p.parents):
        if part.exists():
            if not part.is_dir():
                what = "is a file" if part == p else f"is below {part}, which is a file"
                raise ConfigError(field, f"{p} {what}; name a directory (created if missing)")
            break
    return p


def check_own_outputs(out: Path, names: tuple[str, ...], *, marker: str, field: str) -> None:
    """Refuse (:class:`ConfigError` naming ``field``) a folder holding any of ``names`` unless ``marker``, a file
    only this command writes, is there too: those names are rewritten on every call, so only in a folder the
    same command wrote before; a user's files of the same names are never overwritten."""
    if (out / marker).is_file() or not any((out / name).exists() for name in names):
        return
    raise ConfigError(field, f"{out} holds files kss did not write here ({', '.join(names)}); use a new folder")


def check_output_file(path: str | Path, field: str) -> Path:
    """``path`` as a :class:`Path` if a file can be written there: not a directory, its folder not a file."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(field, f"{p} is a directory; name a file")
    check_output_dir(p.parent, field)
    return p
