"""A small hand-written progress bar for long transfers (stderr, only when it is a terminal)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


class ProgressBar:
    """Call it with (done, total); it redraws at most ten times a second."""

    def __init__(self, label: str, *, stream: TextIO | None = None, enabled: bool | None = None,
                 width: int = 30) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.width = width
        self.started = time.monotonic()
        self._last = 0.0
        self._drawn = False

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and done != total):
            return
        self._last = now
        rate = done / max(now - self.started, 1e-6)
        if total:
            filled = int(self.width * done / total)
            bar = "#" * filled + "-" * (self.width - filled)
            text = f"\r{self.label} [{bar}] {done * 100 // total:3d}% {human(done)}/{human(total)} {human(rate)}/s"
        else:
            text = f"\r{self.label} {human(done)} {human(rate)}/s"
        self.stream.write(text)
        self.stream.flush()
        self._drawn = True

    def finish(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
