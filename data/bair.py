"""BAIR robot pushing from frame folders: ``ROOT/{train,test}/<trajectory>/*.png`` (64x64 RGB).

"test" is the ``test/`` folder; a seeded 5% of the ``train/`` trajectories (seed 42, as SRVP's
validation split) are "val", the others "train"; "trainval" is all of ``train/``.
"""
from pathlib import Path

from .common import DataError, carve, check_split
from .frame_folders import FrameFolderVideos, find_videos

__all__ = ["BAIR"]

VAL_FRACTION, VAL_SEED = 0.05, 42


def BAIR(split="train", root=None, *, bair=None, seq_len=30):
    """BAIR clips (no labels besides ``video``). ``bair``: folder with ``train/`` and ``test/``."""
    check_split(split)
    folder = Path(bair) / ("test" if split == "test" else "train") if bair else None
    if folder is None or not folder.is_dir():
        raise DataError(f"BAIR folder {folder} does not exist: pass --bair DIR holding train/ and test/ "
                        f"with one folder of frame PNGs per trajectory")
    videos = find_videos(folder)
    if split != "test" and videos:
        videos = [videos[k] for k in carve(range(len(videos)), split, VAL_FRACTION, VAL_SEED)]
    return FrameFolderVideos(videos, [{"video": k} for k in range(len(videos))], seq_len=seq_len,
                             random_start=(split in ("train", "trainval")), option_hint=f" under --bair {folder}")
