"""Pre-emption: SIGTERM or SIGUSR1 asks the loop to checkpoint and stop at the next step boundary.

Clusters (SLURM, Kubernetes) send SIGTERM, or SIGUSR1 ahead of a time limit; the handler only sets
a flag, so a step is never cut in half, and the loop turns the flag into a checkpoint and exit 75.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

__all__ = ["StopRequest"]

_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None))
                 if s is not None)


class StopRequest:
    """Context manager: `requested` becomes the signal's name once one arrives."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for s in _SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
