"""A run folder held by one process at a time, its config.json read with one-line errors, and the
temp files a killed process left behind.

A config.json records the library version that wrote it (``vdsm_version``); the commands read run
folders of this version only, and refuse an older one in one line (nothing is released yet, so no
older format is carried along).

``RunLock(folder, what)`` takes an exclusive ``fcntl.flock`` on ``folder/.lock`` and writes the
holder's pid, host, command and start time into it. The kernel releases the lock when its holder
dies however it dies, so a lock left by a killed process is simply taken over (with a warning); a
lock held by a living process is refused with its pid and command. Every command that writes into a
run folder (experiments.run, evaluate, damage, fit_prior) holds it while it writes.
"""
import fcntl
import json
import logging
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from . import __version__
from .checkpoint import CheckpointError

__all__ = ["RunFolderError", "RunLock", "read_config_json", "read_metrics", "holds_a_run", "remove_temp_files",
           "check_folder_can_be_made"]

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
_HELD = {}   # folder -> the RunLock of this process holding it (a nested hold of one folder is a no-op)


class RunFolderError(CheckpointError):
    """A run folder that cannot be used as asked (held by another process, a damaged config.json)."""


def read_config_json(run_dir, flag="--run", need_dataset=False):
    """The dict in ``run_dir/config.json``; RunFolderError (one line, with the fix) when it is missing,
    not JSON, not an object with a ``model`` section, written by another version of the library (its
    ``vdsm_version``), or, with ``need_dataset``, without a ``dataset`` name (what the commands read; a
    folder saved through the API alone may lack it)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise RunFolderError(f"{flag} {run_dir}: no config.json there; pass a run folder of experiments.run")
    try:
        config = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise RunFolderError(f"{path} is not text: the file is damaged; restore it from a copy of the run") from None
    except json.JSONDecodeError as err:
        raise RunFolderError(f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}): "
                             f"fix the edit or restore the file from a copy of the run") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise RunFolderError(f"{path} has no \"model\" section: it is not a config.json of experiments.run; "
                             f"restore it from a copy of the run")
    if config.get("vdsm_version") != __version__:
        written = f"vdsm {config['vdsm_version']}" if "vdsm_version" in config else "a vdsm before 0.2.0"
        raise RunFolderError(f"{run_dir} was written by {written}; this is vdsm {__version__}, which reads run folders "
                             f"of its own version only: train the run again, or read it with the version that wrote it")
    if need_dataset and not isinstance(config.get("dataset"), str):
        raise RunFolderError(f"{path}: key 'dataset' is missing or not a string; it was edited or damaged: fix it, "
                             f"or restore it from a copy of the run")
    return config


def read_metrics(run_dir):
    """The dict in ``run_dir/metrics.json`` ({} when there is none); a damaged file is moved aside to
    ``metrics.damaged.json`` (with a warning), never overwritten."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        return {}
    try:
        metrics = json.loads(path.read_text())
        if isinstance(metrics, dict):
            return metrics
    except (ValueError, UnicodeDecodeError):
        pass
    aside = path.with_name("metrics.damaged.json")
    path.replace(aside)
    log.warning("warning: %s was not a JSON object; moved to %s, a new one is written", path, aside)
    return {}


def holds_a_run(folder):
    """What in ``folder`` makes it a run folder (a config.json, a checkpoint), or None."""
    folder = Path(folder)
    if (folder / "config.json").exists():
        return "a config.json"
    checkpoints = folder / "checkpoints"
    if checkpoints.is_dir() and next(checkpoints.rglob("*.pt"), None) is not None:
        return "checkpoints"
    return None


def check_folder_can_be_made(folder, flag="--out"):
    """RunFolderError (one line) when ``folder`` is a file, lies below a file, or its nearest existing
    parent cannot be written to; creates nothing (``RunLock.acquire`` makes the folder)."""
    folder = Path(folder).absolute()
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{flag} {folder} is a file, not a folder: name a folder for the run")
    parent = next(p for p in folder.parents if p.exists()) if not folder.exists() else folder
    if not parent.is_dir():
        raise RunFolderError(f"{flag} {folder}: {parent} is a file, not a folder: name a folder for the run")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunFolderError(f"{flag} {folder}: {parent} cannot be written to (no permission): name a folder you "
                             f"can write to")


def remove_temp_files(folder):
    """Delete the ``*.tmp`` files a killed writer left in ``folder`` and below (call under the lock:
    no other process is writing there); returns their number."""
    removed = 0
    for tmp in Path(folder).rglob("*.tmp"):
        if tmp.is_file():
            tmp.unlink()
            removed += 1
    if removed:
        log.info("removed %d temporary file(s) a killed process left in %s", removed, folder)
    return removed


class RunLock:
    """Exclusive hold of a run folder for one command (a context manager; ``acquire``/``release``).

    :param folder: the run folder; created when missing (``created`` says so, and ``release(remove_empty=
        True)`` removes it again when nothing else was written there).
    :param what: what the holder does, for the message another process gets ("training", "evaluate").
    """

    def __init__(self, folder, what):
        self.folder, self.what = Path(folder), what
        self.created, self._fd = False, None

    @property
    def path(self):
        return self.folder / LOCK_NAME

    def acquire(self):
        key = self.folder.resolve()
        if key in _HELD:   # this process holds it already (a benchmark that runs experiments.run)
            return self
        if self.folder.exists() and not self.folder.is_dir():
            raise RunFolderError(f"{self.folder} is a file, not a folder: name a folder for the run (--out)")
        try:
            self.folder.mkdir(parents=True)
            self.created = True
        except FileExistsError:   # there already, or made by another process between its check and ours
            pass
        except OSError as err:   # no permission, a read-only disk, a file on the way
            raise RunFolderError(f"cannot make the folder {self.folder} ({err.strerror}): name a folder you can "
                                 f"write to (--out)") from None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise RunFolderError(f"cannot write into {self.folder} ({err.strerror}): name a folder you can write to "
                                 f"(--out)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder()
            os.close(fd)
            raise RunFolderError(f"{self.folder} is in use by {holder}: wait for it to end, or use another folder "
                                 f"(--out)") from None
        previous = self._holder_record()   # a clean release empties the record: this one's holder died
        if previous:
            log.warning("warning: %s was left locked by pid %s (%s since %s), which is gone; taking the lock over",
                        self.folder, previous.get("pid"), previous.get("what"), previous.get("started"))
        record = {"pid": os.getpid(), "host": socket.gethostname(), "what": self.what,
                  "command": " ".join(sys.argv), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        _HELD[key] = self
        return self

    def _holder_record(self):
        try:
            text = self.path.read_text()
            return json.loads(text) if text.strip() else None
        except (OSError, ValueError):
            return None

    def _holder(self):
        record = self._holder_record()
        if not record:
            return "another process"
        return (f"pid {record.get('pid')} on {record.get('host')} ({record.get('what')} since {record.get('started')}: "
                f"{record.get('command')})")

    def release(self, remove_empty=False):
        """Give the folder up; ``remove_empty``: remove a folder this lock created if nothing but the lock
        file and empty folders is in it. The lock file stays (removing it would let two processes lock
        two different files of one name), emptied: the next holder sees a clean release."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        _HELD.pop(self.folder.resolve(), None)
        if remove_empty and self.created and all(p.is_dir() or p.name == LOCK_NAME for p in self.folder.rglob("*")):
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, kind, err, tb):
        self.release(remove_empty=err is not None)
