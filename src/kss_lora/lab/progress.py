"""Sweep-level progress: runs done / failed / remaining, as a bar on a terminal or one line per run in a log."""

from __future__ import annotations

import sys
from typing import Any


class SweepProgress:
    """Sweep-level progress: a bar on a terminal, one line per finished run in a log."""

    def __init__(self, summary: Any, *, enabled: bool):
        self.summary = summary
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self.bar = None
        if self.tty:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=summary.total, initial=summary.skipped, desc="sweep", unit="run")
            self._postfix()
        elif enabled:
            s = summary
            print(
                f"sweep: {s.total} runs, {s.skipped} already finished, {s.total - s.skipped} to run",
                file=sys.stderr,
                flush=True,
            )

    def _postfix(self) -> None:
        s = self.summary
        if self.bar is not None:
            self.bar.set_postfix(done=s.done + s.skipped, failed=s.failed, remaining=s.remaining)

    def update(self, name: str, result: dict[str, Any] | None, error: str | None) -> None:
        if not self.enabled:
            return
        s = self.summary
        if self.bar is not None:
            self.bar.update(1)
            self._postfix()
            if error:
                self.bar.write(f"failed: {name}: {error}")
            return
        finished = s.total - s.remaining
        if result is not None and result.get("status") == "ok":
            what = f"ok gap={result.get('gap', float('nan')):.4f} val_loss={result.get('val_loss', float('nan')):.4f}"
        else:
            what = f"FAILED {error}"
        print(
            f"[{finished}/{s.total}] {name}: {what}  (failed {s.failed}, remaining {s.remaining})",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
