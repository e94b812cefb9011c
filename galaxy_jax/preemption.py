"""Cooperative preemption: SIGTERM/SIGINT set a flag; training loops check it at step boundaries,
save a checkpoint, wait for Orbax, and raise `Preempted`. main.py exits with EXIT_CODE then.
Re-running the same command resumes."""

from __future__ import annotations

import signal

EXIT_CODE = 75  # EX_TEMPFAIL: "try again"; schedulers can requeue on it.

_requested = False


class Preempted(Exception):
    """Raised after a checkpoint has been written because a stop was requested."""


def _handler(signum, frame):
    global _requested
    if _requested and signum == signal.SIGINT:  # a second Ctrl-C stops at once
        raise KeyboardInterrupt
    _requested = True


def install() -> None:
    """Installs the handlers (main thread only; a no-op elsewhere)."""
    try:
        signal.signal(signal.SIGTERM, _handler)
        signal.signal(signal.SIGINT, _handler)
    except ValueError:
        pass


def requested() -> bool:
    """True once SIGTERM/SIGINT arrived. Tests monkeypatch this to stop a run at a chosen step."""
    return _requested
