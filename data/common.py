"""Helpers shared by the dataset modules: errors, data root, image I/O, frame format."""
import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["DataError", "data_root", "load_rgba", "frames_to_tensor", "check_length", "SPLITS", "check_split", "given_folder",
           "carve"]

#: "train" is the training data minus "val" (what training and tuning use); "val" is held out of
#: the training data for monitoring and tuning; "test" is the published test split, for final
#: reports only; "trainval" is all of the training data (train + val), for a final fit.
SPLITS = ("train", "val", "test", "trainval")


class DataError(ValueError):
    """Bad or missing data; the message is one line that names the path or option and the fix."""


def data_root(root=None):
    """The folder where downloads and generated caches live.

    Order: the ``root`` argument, ``$VDSM_DATA_ROOT``, ``./data_cache``.
    """
    return Path(root or os.environ.get("VDSM_DATA_ROOT") or "data_cache").expanduser()


def load_rgba(path, option_hint=""):
    """Read a PNG as an RGBA uint8 array [H, W, 4] with a clear error when it is missing or broken."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing image file {path}{option_hint}")
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGBA"))
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"cannot read image {path} ({err}); the file is truncated or not a PNG: "
                        f"delete it and download or copy it again") from None


def frames_to_tensor(frames_uint8, scale=1.0 / 255.0):
    """uint8 frames [T, H, W, C] -> float tensor [T, C, H, W] in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames_uint8)).permute(0, 3, 1, 2)
    return x.float().mul_(scale)


def check_length(seq_len, available, name):
    """Fail clearly when a requested sequence length exceeds what the data has."""
    if seq_len is not None and (seq_len < 1 or seq_len > available):
        raise DataError(f"seq_len={seq_len} is out of range for {name}, which has {available} frames "
                        f"per sequence: choose 1..{available}")


def check_split(split):
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    return split


def carve(items, split, fraction, seed):
    """The ``split`` ("train", "val" or "trainval") part of the training ``items`` (a 1-D array).

    "val" is a seeded random ``fraction`` of the items (at least one), "train" the rest, both in
    the items' own order; "trainval" is all of them.
    """
    items = np.asarray(items)
    if split == "trainval":
        return items
    n_val = max(1, int(round(fraction * len(items))))
    held = np.zeros(len(items), bool)
    held[np.random.RandomState(seed).permutation(len(items))[:n_val]] = True
    return items[held] if split == "val" else items[~held]


def given_folder(given, env, what):
    """The folder the user named (``given``, else the environment variable ``env``), checked; None when
    neither names one (the caller downloads). ``what``: how the error names the folder, its flag and
    what it must hold."""
    folder = given or os.environ.get(env)
    if not folder:
        return None
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"{what[0]} {folder} does not exist: fix {what[1]} or ${env} (it must hold {what[2]})")
    return folder
