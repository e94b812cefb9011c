"""Cooperative preemption: SIGTERM/SIGINT set a flag; training loops check it at step boundaries,
save a checkpoint, wait for Orbax, and raise `Preempted`. main.py exits with EXIT_CODE then.
Re-running the same command resumes.

A signal that arrives outside a training loop (loading data, writing results) is acted on at
the next step boundary, or not at all if none is left: the run then finishes and exits 0. Inside
a long phase with nothing a checkpoint could keep (k-means, UMAP, a Gaussian mixture: minutes
to a quarter of an hour), `stop_at_once` makes a stop request raise `Preempted` at once instead
(Python runs the handler between its own bytecodes: within one k-means restart or one UMAP
epoch, but only after a single native call such as scikit-learn's Ward clustering returns);
the phase is redone on the next run, as it would be after a kill.
A second Ctrl-C stops at once without a checkpoint, which is as safe as kill -9 (the last
complete checkpoint is used on the next run)."""

from __future__ import annotations

import contextlib
import signal

EXIT_CODE = 75  # EX_TEMPFAIL: "try again"; schedulers can requeue on it.

_requested = False
_at_once: str | None = None  # the phase inside `stop_at_once`, if any


class Preempted(Exception):
    """Raised after a checkpoint has been written because a stop was requested."""


class _StopNow(BaseException):
    """Raised by the handler inside `stop_at_once`: a BaseException, so that no `except
    Exception` in the library code of the phase (scikit-learn, UMAP) swallows it; `stop_at_once`
    turns it into Preempted."""


def _handler(signum, frame):
    global _requested
    if _requested and signum == signal.SIGINT:  # a second Ctrl-C stops at once
        raise KeyboardInterrupt
    _requested = True
    if _at_once is not None:
        raise _StopNow(_at_once)


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


@contextlib.contextmanager
def stop_at_once(phase: str):
    """Inside, a stop request raises Preempted at once (see the module docstring); one that came
    before the phase began raises on entry. `phase` names it in the message.

    The entry check reads the flag itself, not `requested()`, so the tests that monkeypatch
    `requested()` to stop at a chosen training step count only the step loops' calls."""
    global _at_once
    if _requested:
        raise Preempted(f"stopped before {phase}, which has no checkpoint: it runs on resume")
    outer = _at_once
    try:
        _at_once = phase
        yield
    except _StopNow:
        raise Preempted(
            f"stopped during {phase}, which has no checkpoint: it is redone on resume"
        ) from None
    finally:
        _at_once = outer
