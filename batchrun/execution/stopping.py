"""Stopping a run: SIGINT/SIGTERM set a token that the scheduler checks between rounds.

Kept apart from the scheduler so that the CLI can hand one over without importing Ray's
and Arrow's worlds first (see execution/start.py: they load while Ray starts).
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any


class StopToken:
    """Set by SIGINT/SIGTERM (or by code); the scheduler checks it between rounds."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.count = 0
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def request(self, signum: int = signal.SIGINT) -> None:
        self.signum = self.signum or signum
        self.count += 1

    def install(self) -> None:
        """Catch SIGINT and SIGTERM (call after ray.init, which sets its own)."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.request(signum)
