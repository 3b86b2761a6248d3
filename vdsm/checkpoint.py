"""One checkpoint dict per stage, written durably and atomically, loaded with ``weights_only=True``."""
import errno
import io
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError", "DiskFullError", "CheckpointManager",
           "fsync_folder", "write_text_atomic", "FILE_MODE"]

log = logging.getLogger(__name__)


def _file_mode():
    umask = os.umask(0o022)   # read it (there is no other way) and put it back at once
    os.umask(umask)
    return 0o666 & ~umask


#: The mode open() would give a new file: temp files (mkstemp: 0600) get it before they are renamed into place,
#: so a shared run folder's checkpoints and JSON files are as readable as its pictures.
FILE_MODE = _file_mode()


class CheckpointError(ValueError):
    """A missing, unreadable or mismatching checkpoint (one-line message with the fix)."""


class DiskFullError(CheckpointError):
    """A write that found no space left: which folder, how much was being written."""

    def __init__(self, folder, needed):
        try:
            free = f", {shutil.disk_usage(folder).free / 1e6:.1f} MB free"
        except OSError:
            free = ""
        super().__init__(f"no space left on the disk of {folder} (writing {needed / 1e6:.1f} MB{free}): free some "
                         f"space or use a folder on another disk; older checkpoints and files are kept")


def fsync_folder(folder):
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def _write_durably(path, data):
    """``data`` (bytes) into a temp file beside ``path``, fsync it, rename it into place, fsync the folder.

    After a kill at any moment ``path`` is the old file or the new one; after a power loss or a
    kernel crash too, since the data reaches the disk before the rename and the rename before
    this returns. A full disk (ENOSPC, EDQUOT) is a DiskFullError and leaves the old file.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
        fsync_folder(path.parent)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(path.parent, len(data)) from None
        raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
    return path


def save_checkpoint(path, state):
    """Write ``state`` (tensors and plain data only) to ``path`` durably and atomically."""
    buffer = io.BytesIO()   # serialised first: a full disk is then told how much was needed
    torch.save(state, buffer)
    return _write_durably(path, buffer.getvalue())


def write_text_atomic(path, text):
    """Replace a text file (config.json, metrics.json) durably and atomically."""
    return _write_durably(path, text.encode())


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
    minutes, whichever comes first. Every file appears atomically and is on disk before it
    is named (temp file, fsync, rename, fsync of the folder; the named copies are hard links),
    so neither a killed process nor a crash of the machine leaves a partial one.
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

    def periodic(self):
        """The periodic checkpoints, newest first."""
        return sorted((self.folder / self.name).glob("step-*.pt"), reverse=True)

    def exists(self):
        return self.latest.is_file() or bool(self.periodic())

    def load_newest(self, map_location="cpu"):
        """The newest checkpoint that loads: ``<name>.pt``, else the newest periodic one that loads
        (with a one-line warning); CheckpointError when none does."""
        candidates = ([self.latest] if self.latest.is_file() else []) + self.periodic()
        failed = []
        for path in candidates:
            try:
                state = load_checkpoint(path, map_location)
            except CheckpointError:
                failed.append(path.name)
                continue
            if failed:
                log.warning("warning: %s did not load (damaged); resuming from %s (step %s)",
                            ", ".join(failed), path, state.get("step"))
            return state
        raise CheckpointError(f"no loadable checkpoint of {self.name} in {self.folder} "
                              f"({', '.join(failed) or 'none written'}): start a new run")

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
        for old in self.periodic()[self.keep_last:]:
            old.unlink()
        return periodic

    @staticmethod
    def _link(source, target):
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")   # two processes never share a temp name
        if tmp.exists():
            tmp.unlink()
        os.link(source, tmp)
        os.replace(tmp, target)
        fsync_folder(target.parent)
