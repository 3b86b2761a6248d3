"""BAIR robot pushing from frame folders: ``ROOT/{train,test}/<trajectory>/*.png`` (64x64 RGB)."""
from pathlib import Path

from .common import DataError
from .frame_folders import FrameFolderVideos, find_videos

__all__ = ["BAIR"]


def BAIR(split="train", root=None, *, bair=None, seq_len=30):
    """BAIR clips (no labels besides ``video``). ``bair``: folder with ``train/`` and ``test/``."""
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}: use 'train' or 'test'")
    folder = Path(bair) / split if bair else None
    if folder is None or not folder.is_dir():
        raise DataError(f"BAIR folder {folder} does not exist: pass --bair DIR holding train/ and test/ "
                        f"with one folder of frame PNGs per trajectory")
    videos = find_videos(folder)
    return FrameFolderVideos(videos, [{"video": k} for k in range(len(videos))], seq_len=seq_len,
                             random_start=(split == "train"), option_hint=f" under --bair {folder}")
