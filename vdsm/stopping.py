"""Ctrl-C (SIGINT) and SIGTERM (what a cluster scheduler sends before it kills a job): the training loop
finishes its step, writes a checkpoint and stops; anywhere else, and at a second signal, the process
stops at once. Either way the command exits with 128 + the signal's number (130, 143).

``signals_handled()`` installs the handlers for a command (in the main thread; elsewhere it does
nothing). Inside ``deferred()`` (the training loop) the first signal only sets ``requested()``;
the loop checks it after each step and raises :class:`Interrupted` itself, naming its checkpoint.
"""
import contextlib
import logging
import signal
import threading

__all__ = ["Interrupted", "signals_handled", "deferred", "requested"]

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_state = {"deferring": 0, "requested": None}


class Interrupted(KeyboardInterrupt):
    """The command was stopped by ``signum``; ``checkpoint``/``step``: what the training loop wrote;
    ``hint``: how to continue (set by the command)."""

    def __init__(self, signum, checkpoint=None, step=None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.checkpoint, self.step, self.hint = signum, checkpoint, step, None

    @property
    def exit_code(self):
        return 128 + self.signum

    def message(self):
        name = signal.Signals(self.signum).name
        if self.checkpoint is not None:
            told = f"stopped by {name} after step {self.step}: checkpoint {self.checkpoint}"
        else:
            told = f"stopped by {name}; files already written are complete"
        return told + (f"; {self.hint}" if self.hint else "")


def _handle(signum, frame):
    if _state["deferring"] and _state["requested"] is None:
        _state["requested"] = signum
        log.warning("%s: finishing this step and writing a checkpoint (send it again to stop at once)",
                    signal.Signals(signum).name)
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_handled():
    """SIGINT and SIGTERM raise :class:`Interrupted` (or, inside ``deferred()``, stop after the step)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handle) for s in SIGNALS}
    _state["requested"] = None
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _state["requested"] = None


@contextlib.contextmanager
def deferred():
    """Within: the first signal waits for ``requested()`` to be checked (the training loop's steps)."""
    _state["deferring"] += 1
    try:
        yield
    finally:
        _state["deferring"] -= 1


def requested():
    """The number of the signal that asked to stop, or None."""
    return _state["requested"]
