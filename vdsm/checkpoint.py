"""One checkpoint dict per stage, written atomically and loaded with ``weights_only=True``."""
import os
import tempfile
from pathlib import Path

import torch

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError"]


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
