"""Fault injection, for tests only: the one seam through which a test makes a worker die or
hang. Stages take a :class:`Faults` apart from their user config (no flag sets it), and its
default injects nothing.

A :class:`Faults` travels with the work to Ray workers and actors (it pickles), so the
failure happens where a real one would: in the worker process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Faults:
    crash_once_marker: str | None = None  # see crash_once
    slow_videos: tuple[str, ...] = ()     # see maybe_slow
    slow_seconds: float = 3600.0
    slow_once_marker: str | None = None   # see maybe_slow

    def crash_once(self, before: Callable[[], object] | None = None) -> None:
        """End this process at once, as a killed worker ends, the first time any process
        gets here: the marker file, created just before, says it happened. ``before`` runs
        just before the end (e.g. to let Ray record what was reported)."""
        marker = self.crash_once_marker
        if marker and not os.path.exists(marker):
            open(marker, "w").close()
            if before is not None:
                before()
            os._exit(1)

    def maybe_slow(self, video_id: str) -> None:
        """Sleep ``slow_seconds`` (ignoring every budget) when ``video_id`` is a slow video.
        With ``slow_once_marker``, only the first process to get here sleeps (the marker file,
        written just before with the process's id, says it happened and where): a test holds
        one task where it runs, and its retry goes through."""
        if video_id not in self.slow_videos:
            return
        if self.slow_once_marker:
            if os.path.exists(self.slow_once_marker):
                return
            with open(self.slow_once_marker, "w") as marker:
                marker.write(str(os.getpid()))
        time.sleep(self.slow_seconds)


NO_FAULTS = Faults()
