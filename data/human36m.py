"""Human3.6M videos as SRVP prepares them (licensed: the user brings the data).

Layout: ``ROOT/train/*.npz`` and ``ROOT/test/*.npz``, one file per video with ``image`` (uint8
[T, 64, 64, 3]) and ``subject``, as written by the SRVP release's ``preprocessing/human/convert.py``
or by :func:`convert_frames` here (each frame cropped to the box (100, 100, 900, 900), then resized
to 64 x 64 with Lanczos, in that order; the ``_ALL`` videos are skipped). Subjects 1, 5, 6, 7, 8
train and 9, 11 test, as SRVP.

Sequences are ``seq_len`` frames, one in ``subsampling`` (8, as SRVP) of the original frames.
- "test": SRVP's fixed test set, drawn the release's way: NumPy's seed 42, then for each of
  ``test_size`` (1000) sequences a video uniformly among the sorted test files and a start
  uniformly among those that fit.
- "train" / "val": a seeded 5% of the training videos (seed 42) are val; "train" draws a random
  video (weighted by its number of clips, i.e. each clip equally likely) and a random start per
  item, "val" takes a fixed seeded draw of ``val_size`` (200) clips from the val videos.
Labels: ``subject``.
"""
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .common import DataError, carve, check_split, frames_to_tensor

__all__ = ["Human36M", "convert_frames", "TRAIN_SUBJECTS", "TEST_SUBJECTS"]

TRAIN_SUBJECTS, TEST_SUBJECTS = (1, 5, 6, 7, 8), (9, 11)
CROP_BOX = (100, 100, 900, 900)
VAL_FRACTION, VAL_SEED, TEST_SEED = 0.05, 42, 42


def convert_frames(frames, image_size=64):
    """Original frames uint8 [T, H, W, 3] -> [T, image_size, image_size, 3]: crop to ``CROP_BOX``,
    then a Lanczos resize (SRVP's preprocessing, after "Unsupervised learning of object structure
    and dynamics from videos")."""
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).crop(CROP_BOX).resize((image_size, image_size), Image.LANCZOS))
                     for f in frames])


def _video_length(path):
    """Frames in ``path``'s ``image`` array, from the npz member's header (no data read)."""
    try:
        with zipfile.ZipFile(path) as z, z.open("image.npy") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, _ = read(f)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(f"cannot read {path} ({err}): expected an .npz with an 'image' array as written by "
                        f"SRVP's preprocessing/human/convert.py; convert that video again") from None
    if len(shape) != 4 or shape[-1] != 3:
        raise DataError(f"{path}: 'image' has shape {shape}, expected [T, 64, 64, 3] uint8 frames")
    return shape[0]


class Human36M(Dataset):
    """Human3.6M clips; item = ``(frames [seq_len, 3, 64, 64], {"subject": n})``."""

    def __init__(self, split="train", root=None, *, human36m=None, seq_len=16, subsampling=8, test_size=1000,
                 val_size=200):
        check_split(split)
        folder = Path(human36m) if human36m else None
        sub = "test" if split == "test" else "train"
        if folder is None or not (folder / sub).is_dir():
            raise DataError(f"Human3.6M folder {folder} has no {sub}/ folder: pass --human36m DIR holding train/ and "
                            f"test/ .npz videos (Human3.6M is licensed; convert it with SRVP's "
                            f"preprocessing/human/convert.py or data.human36m.convert_frames)")
        files = sorted((folder / sub).glob("*.npz"))
        if not files:
            raise DataError(f"no .npz videos in {folder / sub}: convert the Human3.6M videos first")
        if split != "test":
            files = [files[k] for k in carve(np.arange(len(files)), split, VAL_FRACTION, VAL_SEED)]
        self.seq_len, self.subsampling, self.split = seq_len, subsampling, split
        self.span = (seq_len - 1) * subsampling + 1
        lengths = np.array([_video_length(f) for f in files])
        fits = lengths >= self.span
        if not fits.any():
            raise DataError(f"no {sub} video of {folder} has {self.span} frames ({seq_len} frames, one in "
                            f"{subsampling}): lower --seq-len")
        self.files, self.lengths = [f for f, ok in zip(files, fits) if ok], lengths[fits]
        self.starts = None
        if split == "test":  # the release's draw over every test video
            self.starts = self._fixed_draw(test_size, TEST_SEED, files, lengths)
        elif split == "val":
            self.starts = self._fixed_draw(val_size, VAL_SEED + 1, self.files, self.lengths)
        self._cache = (None, None)

    def _fixed_draw(self, size, seed, all_files, all_lengths):
        """(file index, start) pairs, the release's procedure: a video uniformly, then a start."""
        rng = np.random.RandomState(seed)
        index = {f: k for k, f in enumerate(self.files)}
        draws = []
        for _ in range(size):
            video = rng.randint(len(all_files))
            if all_lengths[video] < self.span:
                raise DataError(f"{all_files[video]} has {all_lengths[video]} frames, fewer than the {self.span} a "
                                f"sequence spans: lower --seq-len")
            draws.append((index[all_files[video]], rng.randint(all_lengths[video] - self.span + 1)))
        return draws

    def __len__(self):
        return len(self.starts) if self.starts is not None else int(sum(self.lengths - self.span + 1))

    def _video(self, k):
        if self._cache[0] != k:  # consecutive items often come from one video in evaluation
            with np.load(self.files[k]) as z:
                self._cache = (k, z["image"])
        return self._cache[1]

    def __getitem__(self, i):
        if self.starts is not None:
            k, t0 = self.starts[i]
        else:  # each clip of each video equally likely, a new draw per item
            clips = self.lengths - self.span + 1
            k = int(np.searchsorted(np.cumsum(clips), int(torch.randint(int(clips.sum()), ())), side="right"))
            t0 = int(torch.randint(int(clips[k]), ()))
        frames = self._video(k)[t0:t0 + self.span:self.subsampling]
        subject = self.files[k].name.split("-")[0].lstrip("S")
        return frames_to_tensor(frames), {"subject": int(subject) if subject.isdigit() else -1}
