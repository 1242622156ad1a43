"""Stopping a run: SIGINT/SIGTERM set a token that the scheduler checks between rounds.

Kept apart from the scheduler so that the CLI can hand one over without importing Ray's
and Arrow's worlds first (see execution/start.py: they load while Ray starts).
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any


class StopNow(BaseException):
    """A second SIGINT/SIGTERM while a batch runs in this process (the inline pool): the
    batch is abandoned where it is, as a Ray run abandons its in-flight batches."""


class StopToken:
    """Set by SIGINT/SIGTERM (or by code); the scheduler checks it between rounds."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.count = 0
        self.running_here = False
        """True while a batch runs in this process's main thread (`InlinePool`), where the
        scheduler cannot check the token: then a second signal raises `StopNow`."""
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
        if self.running_here and self.count >= 2:
            raise StopNow


class DeferredInterrupt:
    """Holds a Ctrl-C back while Ray starts, then raises it at a safe point (`check`).

    A KeyboardInterrupt raised wherever the main thread happens to be during Ray's start
    can land in a fork handler, where Python prints "Exception ignored" and carries on (the
    run then went on to succeed). The first SIGINT only sets `hit` and gives SIGINT its
    previous handler back, so a second one interrupts at once. Off the main thread (an API
    caller's thread) signals cannot be caught: nothing is changed."""

    def __init__(self) -> None:
        self.hit = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> DeferredInterrupt:
        try:
            self._previous = signal.signal(signal.SIGINT, self._on_signal)
            self._installed = True
        except ValueError:  # not the main thread
            pass
        return self

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.hit = True
        signal.signal(signal.SIGINT, self._previous)
        self._installed = False

    def check(self) -> None:
        if self.hit:
            raise KeyboardInterrupt

    def __exit__(self, *exc_info: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
