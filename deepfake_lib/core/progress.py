"""Periodic progress lines for long jobs: done/total, rate, ETA and running counts."""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import TextIO


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Prints ``label: done/total (pct), rate/s, ETA, counts`` at most every ``every_s``
    seconds, and once more on :meth:`close`."""

    def __init__(self, label: str, total: int, unit: str = "videos", every_s: float = 10.0,
                 stream: TextIO = sys.stderr):
        self.label, self.total, self.unit = label, total, unit
        self.every_s, self.stream = every_s, stream
        self.done = 0
        self._printed = -1
        self.counts: Counter[str] = Counter()
        self.start = self._last = time.monotonic()

    def update(self, n: int = 1, **counts: int) -> None:
        self.done += n
        self.counts.update(counts)
        if time.monotonic() - self._last >= self.every_s:
            self._print()

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        pct = 100.0 * self.done / self.total if self.total else 100.0
        text = f"{self.label}: {self.done}/{self.total} {self.unit} ({pct:.0f}%), {self.rate:.2f}/s"
        if 0 < self.done < self.total and self.rate > 0:
            text += f", ETA {format_seconds((self.total - self.done) / self.rate)}"
        if self.counts:
            text += ", " + ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        return text

    def _print(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self._last = time.monotonic()
        self._printed = self.done

    def close(self) -> None:
        """Print the final line, unless the last one printed already says it."""
        if self._printed != self.done:
            self._print()
