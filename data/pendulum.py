"""A synthetic damped pendulum rendered to 64x64 grey frames, with labels for its factors.

Every sequence is a deterministic function of (split, index): a rod of one of three
lengths swings from one of four initial-angle buckets with one of two damping levels.
"""
import numpy as np
import torch
from torch.utils.data import Dataset

from .common import DataError, check_split

__all__ = ["Pendulum"]

IMAGE_SIZE = 64
LENGTHS = (14.0, 20.0, 26.0)              # pixels
ANGLE_BUCKETS = ((-150, -90), (-90, -30), (30, 90), (90, 150))  # degrees from straight down
DAMPINGS = (0.02, 0.25)                   # 1/s
GRAVITY, DT = 400.0, 0.05                 # px/s^2, s per frame
PIVOT = (20.0, 32.0)                      # (y, x) of the pivot
BOB_RADIUS, ROD_WIDTH = 4.0, 1.0
_SPLIT_SEEDS = {"train": 1, "test": 2, "val": 3}  # every split is its own seeded set of sequences


def simulate(length, theta0, damping, seq_len, substeps=20):
    """Angles [T] of theta'' = -(g / L) sin(theta) - damping * theta' (semi-implicit Euler)."""
    theta, omega, h = theta0, 0.0, DT / substeps
    out = np.empty(seq_len)
    for t in range(seq_len):
        out[t] = theta
        for _ in range(substeps):
            omega += h * (-(GRAVITY / length) * np.sin(theta) - damping * omega)
            theta += h * omega
    return out


def render(length, angles):
    """Anti-aliased rod and bob, float frames [T, 1, 64, 64] in [0, 1]."""
    yy, xx = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE].astype(np.float32) + 0.5
    p = np.stack([yy - PIVOT[0], xx - PIVOT[1]], -1)                       # [H, W, 2]
    tip = length * np.stack([np.cos(angles), np.sin(angles)], -1)          # [T, 2]
    # distance of every pixel to the rod segment, for all frames at once
    s = np.clip((p[None] * tip[:, None, None]).sum(-1) / length ** 2, 0, 1)
    rod = np.linalg.norm(p[None] - s[..., None] * tip[:, None, None], axis=-1)
    bob = np.linalg.norm(p[None] - tip[:, None, None], axis=-1)
    img = np.maximum(np.clip(ROD_WIDTH + 0.5 - rod, 0, 1) * 0.6, np.clip(BOB_RADIUS + 0.5 - bob, 0, 1))
    return torch.from_numpy(img.astype(np.float32)).unsqueeze(1)


class Pendulum(Dataset):
    """Damped pendulum videos; item = ``(frames [T, 1, 64, 64], labels)``.

    Labels: ``length`` (3), ``angle`` (4 initial-angle buckets), ``damping`` (2).

    ``split``: "train", "val", "test" (independent seeded draws) or "trainval" (train then val).

    :param seq_len: frames per sequence (default 20).
    :param num_sequences: dataset size (default 5000 train, 1000 val, 1000 test).
    """

    def __init__(self, split="train", root=None, *, seq_len=20, num_sequences=None):
        check_split(split)
        if seq_len < 1:
            raise DataError(f"seq_len={seq_len} must be at least 1")
        self.split, self.seq_len = split, seq_len
        sizes = {"train": 5000, "val": 1000, "test": 1000}
        if split == "trainval":  # the train sequences, then the val ones
            self.parts = [("train", num_sequences or sizes["train"]), ("val", sizes["val"])]
        else:
            self.parts = [(split, num_sequences or sizes[split])]
        self.num_sequences = sum(n for _, n in self.parts)

    def __len__(self):
        return self.num_sequences

    def factors(self, i):
        for part, n in self.parts:
            if i < n:
                break
            i -= n
        rng = np.random.default_rng([_SPLIT_SEEDS[part], i])
        labels = {"length": int(rng.integers(len(LENGTHS))), "angle": int(rng.integers(len(ANGLE_BUCKETS))),
                  "damping": int(rng.integers(len(DAMPINGS)))}
        theta0 = np.deg2rad(rng.uniform(*ANGLE_BUCKETS[labels["angle"]]))
        return labels, theta0

    def __getitem__(self, i):
        if not 0 <= i < len(self):
            raise IndexError(i)
        labels, theta0 = self.factors(i)
        length = LENGTHS[labels["length"]]
        angles = simulate(length, theta0, DAMPINGS[labels["damping"]], self.seq_len)
        return render(length, angles), labels
