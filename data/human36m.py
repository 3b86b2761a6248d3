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

#: The subjects of SRVP's training videos and of its test videos.
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


def _video_layout(path):
    """(offset, dtype, shape) of the ``image`` array inside an .npz video, read from the headers only:
    ``np.savez`` stores members uncompressed, so the frames can be memory-mapped where they lie
    (offset None: a compressed member, read whole when used)."""
    try:
        with zipfile.ZipFile(path) as z:
            info = z.getinfo("image.npy")
            with z.open(info) as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read(f)
                header = f.tell()
        offset = None
        if info.compress_type == zipfile.ZIP_STORED and not fortran:
            with open(path, "rb") as raw:  # the member's data start: after its local file header
                raw.seek(info.header_offset + 26)
                name_len, extra_len = np.frombuffer(raw.read(4), "<u2")
            offset = info.header_offset + 30 + int(name_len) + int(extra_len) + header
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(f"cannot read {path} ({err}): expected an .npz with an 'image' array as written by "
                        f"SRVP's preprocessing/human/convert.py; convert that video again") from None
    if len(shape) != 4 or shape[-1] != 3:
        raise DataError(f"{path}: 'image' has shape {shape}, expected [T, 64, 64, 3] uint8 frames")
    return offset, dtype, shape


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
        layouts = [_video_layout(f) for f in files]
        lengths = np.array([shape[0] for _, _, shape in layouts])
        fits = lengths >= self.span
        if not fits.any():
            raise DataError(f"no {sub} video of {folder} has {self.span} frames ({seq_len} frames, one in "
                            f"{subsampling}): lower --seq-len")
        self.files, self.lengths = [f for f, ok in zip(files, fits) if ok], lengths[fits]
        self.layouts = [v for v, ok in zip(layouts, fits) if ok]
        self._maps = {}                                    # memory maps, opened per process on first use
        self.clips = self.lengths - self.span + 1          # clip starts per video
        self.first_clip = np.cumsum(self.clips)            # to draw every clip equally likely
        self.starts = None
        if split == "test":  # the release's draw over every test video
            self.starts = self._fixed_draw(test_size, TEST_SEED, files, lengths)
        elif split == "val":
            self.starts = self._fixed_draw(val_size, VAL_SEED + 1, self.files, self.lengths)

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
        return len(self.starts) if self.starts is not None else int(self.clips.sum())

    def __getstate__(self):  # DataLoader workers open their own maps
        return {**self.__dict__, "_maps": {}}

    def _video(self, k):
        if k not in self._maps:
            offset, dtype, shape = self.layouts[k]
            if offset is None:
                with np.load(self.files[k]) as z:
                    self._maps[k] = z["image"]
            else:
                self._maps[k] = np.memmap(self.files[k], dtype=dtype, mode="r", offset=offset, shape=shape)
        return self._maps[k]

    def __getitem__(self, i):
        if self.starts is not None:
            k, t0 = self.starts[i]
        else:  # each clip of each video equally likely, a new draw per item
            k = int(np.searchsorted(self.first_clip, int(torch.randint(int(self.first_clip[-1]), ())), side="right"))
            t0 = int(torch.randint(int(self.clips[k]), ()))
        frames = np.array(self._video(k)[t0:t0 + self.span:self.subsampling])
        subject = self.files[k].name.split("-")[0].lstrip("S")
        return frames_to_tensor(frames), {"subject": int(subject) if subject.isdigit() else -1}
