"""One checkpoint dict per stage, written atomically and loaded with ``weights_only=True``."""
import os
import tempfile
from pathlib import Path

import torch

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError", "CheckpointManager"]


class CheckpointError(ValueError):
    """A missing, unreadable or mismatching checkpoint (one-line message with the fix)."""


def save_checkpoint(path, state):
    """Write ``state`` (tensors and plain data only) to ``path`` via a temp file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_checkpoint(path, map_location="cpu"):
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: train first, or pass the run folder that holds it")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # unpickling refused or file damaged
        raise CheckpointError(f"cannot load checkpoint {path} ({type(err).__name__}): the file is damaged or "
                              f"not a vdsm checkpoint; delete it and retrain") from None


class CheckpointManager:
    """Periodic checkpoints of one training stage in ``folder``.

    ``<name>.pt`` is always the newest checkpoint, ``<name>-best.pt`` the one with the
    lowest smoothed training loss, and ``<name>/step-XXXXXXX.pt`` the last ``keep_last``
    periodic ones. A checkpoint is due every ``every_steps`` steps or ``every_minutes``
    minutes, whichever comes first. Every file appears atomically (temp file + rename;
    the named copies are hard links), so a killed process never leaves a partial one.
    """

    def __init__(self, folder, name, *, every_steps=200, every_minutes=10.0, keep_last=3):
        self.folder, self.name = Path(folder), name
        self.every_steps, self.every_seconds, self.keep_last = every_steps, every_minutes * 60.0, keep_last
        self.best_loss = float("inf")
        self._last_time = None

    @property
    def latest(self):
        return self.folder / f"{self.name}.pt"

    @property
    def best(self):
        return self.folder / f"{self.name}-best.pt"

    def due(self, step, now):
        if self._last_time is None:
            self._last_time = now
        return (self.every_steps and step % self.every_steps == 0) or now - self._last_time >= self.every_seconds

    def save(self, step, state, loss=None, now=None):
        import time

        self._last_time = now if now is not None else time.monotonic()
        periodic = save_checkpoint(self.folder / self.name / f"step-{step:07d}.pt", state)
        self._link(periodic, self.latest)
        if loss is not None and loss < self.best_loss:
            self.best_loss = loss
            self._link(periodic, self.best)
        for old in sorted((self.folder / self.name).glob("step-*.pt"))[: -self.keep_last]:
            old.unlink()
        return periodic

    @staticmethod
    def _link(source, target):
        tmp = target.with_name(target.name + ".tmp")
        if tmp.exists():
            tmp.unlink()
        os.link(source, tmp)
        os.replace(tmp, target)
