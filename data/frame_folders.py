"""Videos stored as folders of frame PNGs (natural order), the usual format of KTH and BAIR."""
from pathlib import Path

import numpy as np
import torch
from natsort import natsorted
from PIL import Image
from torch.utils.data import Dataset

from .common import DataError, frames_to_tensor

__all__ = ["FrameFolderVideos", "find_videos"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def find_videos(folder):
    """Every folder below ``folder`` that directly holds frame images, in natural order."""
    folder = Path(folder)
    leaves = {p.parent for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS}
    return natsorted(leaves, key=str)


class FrameFolderVideos(Dataset):
    """Clips of ``seq_len`` frames from frame-folder videos; item = ``(frames [T, C, 64, 64], labels)``.

    :param videos: list of folders (one per video).
    :param labels: list of label dicts, one per video.
    :param seq_len: frames per clip; videos shorter than that are an error.
    :param random_start: pick the clip start at random (training) instead of frame 0.
    :param channels: 1 (grey) or 3 (RGB).
    :param option_hint: which option names the folder (for error messages).
    """

    def __init__(self, videos, labels, *, seq_len, random_start, channels=3, image_size=64, option_hint=""):
        if not videos:
            raise DataError(f"no videos (folders of frame images) found{option_hint}")
        self.videos, self.labels = list(videos), list(labels)
        self.seq_len, self.random_start = seq_len, random_start
        self.mode, self.image_size, self.option_hint = ("L" if channels == 1 else "RGB"), image_size, option_hint
        self.frames = [natsorted(p for p in Path(v).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
                       for v in self.videos]
        shortest = min(len(f) for f in self.frames)
        if seq_len > shortest:
            raise DataError(f"seq_len={seq_len} is longer than the shortest video ({shortest} frames, "
                            f"{self.videos[int(np.argmin([len(f) for f in self.frames]))]}): "
                            f"lower --seq-len")

    def __len__(self):
        return len(self.videos)

    def _read(self, path):
        try:
            with Image.open(path) as im:
                im = im.convert(self.mode)
                if im.size != (self.image_size, self.image_size):
                    im = im.resize((self.image_size, self.image_size), Image.BILINEAR)
                arr = np.asarray(im)
        except (OSError, SyntaxError, ValueError) as err:
            raise DataError(f"cannot read frame {path} ({err}): the file is truncated or not an image; "
                            f"re-extract that video") from None
        return arr[..., None] if arr.ndim == 2 else arr

    def __getitem__(self, i):
        frames = self.frames[i]
        start = int(torch.randint(len(frames) - self.seq_len + 1, ())) if self.random_start else 0
        clip = np.stack([self._read(p) for p in frames[start:start + self.seq_len]])
        return frames_to_tensor(clip), dict(self.labels[i])
