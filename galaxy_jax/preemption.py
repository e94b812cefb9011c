"""Cooperative preemption: SIGTERM/SIGINT set a flag; training loops check it at step boundaries,
save a checkpoint, wait for Orbax, and raise `Preempted`. main.py exits with EXIT_CODE then.
Re-running the same command resumes.

A signal that arrives outside a training loop (loading data, k-means, writing results) is acted
on at the next step boundary, or not at all if none is left: the run then finishes and exits 0.
A second Ctrl-C stops at once without a checkpoint, which is as safe as kill -9 (the last
complete checkpoint is used on the next run)."""

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
