"""Stochastic (SVG) and deterministic Moving MNIST: 64x64, 1 or 2 digits of 32x32, any length.

Training items are drawn fresh on every access. The test set is fixed: built once from
the MNIST test digits with a fixed seed and stored in the data root as an ``.npz`` of
its exact ingredients (the resized digit images and every frame's digit positions), from
which frames are rendered bit-identically. That file is ~11 MB instead of 500 MB of frames.

Validation: a seeded 5% of the 60000 MNIST training digits (3000, seed 42) are held out;
"train" draws its sequences from the other 57000, and "val" is a fixed set (1000 sequences by
default) built from the held-out digits and stored like the test set. "trainval" draws from
all 60000 training digits.
"""
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .common import DataError, carve, check_split, data_root
from .mnist import load_mnist

__all__ = ["MovingMNIST", "simulate_positions", "render"]

IMAGE_SIZE, DIGIT_SIZE, MAX_SPEED = 64, 32, 4
VAL_FRACTION, VAL_SEED = 0.05, 42   # MNIST training digits held out for the val split


def resize_digits(images):
    """uint8 [N, 28, 28] -> uint8 [N, 32, 32] (bilinear, as SVG's transforms.Scale)."""
    return np.stack([np.asarray(Image.fromarray(im).resize((DIGIT_SIZE, DIGIT_SIZE), Image.BILINEAR))
                     for im in images])


def simulate_positions(rng, seq_len, num_digits, deterministic):
    """Top-left corners [T, num_digits, 2] (y, x) of bouncing digits (SVG's rules)."""
    limit = IMAGE_SIZE - DIGIT_SIZE
    pos = np.empty((seq_len, num_digits, 2), np.int16)
    for n in range(num_digits):
        y, x = rng.integers(limit, size=2)
        dy, dx = rng.integers(-MAX_SPEED, MAX_SPEED + 1, size=2)
        for t in range(seq_len):
            # On a wall: clamp inside and bounce (flip, or a new random velocity away from it).
            if y < 0:
                y, dy = 0, (-dy if deterministic else rng.integers(1, MAX_SPEED + 1))
                dx = dx if deterministic else rng.integers(-MAX_SPEED, MAX_SPEED + 1)
            elif y >= limit:
                y, dy = limit - 1, (-dy if deterministic else rng.integers(-MAX_SPEED, 0))
                dx = dx if deterministic else rng.integers(-MAX_SPEED, MAX_SPEED + 1)
            if x < 0:
                x, dx = 0, (-dx if deterministic else rng.integers(1, MAX_SPEED + 1))
                dy = dy if deterministic else rng.integers(-MAX_SPEED, MAX_SPEED + 1)
            elif x >= limit:
                x, dx = limit - 1, (-dx if deterministic else rng.integers(-MAX_SPEED, 0))
                dy = dy if deterministic else rng.integers(-MAX_SPEED, MAX_SPEED + 1)
            pos[t, n] = y, x
            y, x = y + dy, x + dx
    return pos


def render(digits, positions):
    """Frames float [T, 1, 64, 64] in [0, 1]: digits uint8 [D, 32, 32] at positions [T, D, 2]; sum, clip at 1."""
    seq_len = positions.shape[0]
    frames = np.zeros((seq_len, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    glyphs = digits.astype(np.float32) / 255.0
    for t in range(seq_len):
        for d, (y, x) in enumerate(positions[t]):
            frames[t, y:y + DIGIT_SIZE, x:x + DIGIT_SIZE] += glyphs[d]
    return torch.from_numpy(np.minimum(frames, 1.0)).unsqueeze(1)


class MovingMNIST(Dataset):
    """Moving MNIST; item = ``(frames [T, 1, 64, 64], labels)``, labels ``digit0``(, ``digit1``): digit classes.

    :param split: "train" or "trainval" (new random sequences every epoch: set ``epoch``), "val" or
        "test" (fixed, seeded; see the module docstring).
    :param seq_len: frames per sequence (default 25 val / test, 20 train; any length).
    :param num_digits: 1 or 2.
    :param deterministic: flip velocity at walls (``mmnist``) instead of SVG's random bounce.
    :param num_sequences: epoch length for train; size of the fixed set (default 1000 val, 5000 test).
    :param seed: seed of the fixed set and of the training sequences.
    :param mnist: local MNIST ``.npz`` or torchvision folder (default ``$MNIST_PATH``/download).
    """

    def __init__(self, split="train", root=None, *, seq_len=None, num_digits=2, deterministic=False,
                 num_sequences=None, seed=0, mnist=None, download=True):
        if num_digits not in (1, 2):
            raise DataError(f"num_digits={num_digits} is not supported: use 1 or 2")
        if seq_len is not None and seq_len < 1:
            raise DataError(f"seq_len={seq_len} must be at least 1")
        self.split, self.num_digits, self.deterministic = split, num_digits, deterministic
        self.epoch = 0  # training items are a function of (seed, epoch, index): new every epoch, reproducible
        self.seed = seed
        check_split(split)
        if split in ("train", "trainval"):
            self.seq_len = seq_len or 20
            self.num_sequences = num_sequences or 60000
            self._mnist, self._mnist_labels = self._digits_of(split, mnist, root, download)
            return
        self.seq_len = seq_len or 25
        self.num_sequences = num_sequences or (5000 if split == "test" else 1000)
        kind = "mmnist" if deterministic else "smmnist"
        path = data_root(root) / f"{kind}_{split}_{num_digits}d_{self.num_sequences}x{self.seq_len}_seed{seed}.npz"
        if not path.is_file():
            self._build_test_set(path, *self._digits_of(split, mnist, root, download), seed)
        with np.load(path) as f:
            self._digits, self._positions, self._labels = f["digits"], f["positions"], f["labels"]

    @staticmethod
    def _digits_of(split, mnist, root, download):
        """MNIST images and labels a split draws its digits from."""
        if split == "test":
            return load_mnist("test", mnist, root, download)
        images, labels = load_mnist("train", mnist, root, download)
        keep = carve(np.arange(len(images)), split, VAL_FRACTION, VAL_SEED)
        return images[keep], labels[keep]

    def _build_test_set(self, path, mnist_images, mnist_labels, seed):
        rng = np.random.default_rng(seed)
        index = rng.integers(len(mnist_images), size=(self.num_sequences, self.num_digits))
        digits = resize_digits(mnist_images[index.ravel()]).reshape(self.num_sequences, self.num_digits,
                                                                    DIGIT_SIZE, DIGIT_SIZE)
        positions = np.stack([simulate_positions(rng, self.seq_len, self.num_digits, self.deterministic)
                              for _ in range(self.num_sequences)])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, digits=digits, positions=positions, labels=mnist_labels[index])
        tmp.replace(path)

    def __len__(self):
        return self.num_sequences

    def __getitem__(self, i):
        if not 0 <= i < len(self):
            raise IndexError(i)
        if self.split in ("val", "test"):
            digits, positions, classes = self._digits[i], self._positions[i], self._labels[i]
        else:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            ids = rng.integers(len(self._mnist), size=self.num_digits)
            digits, classes = resize_digits(self._mnist[ids]), self._mnist_labels[ids]
            positions = simulate_positions(rng, self.seq_len, self.num_digits, self.deterministic)
        return render(digits, positions), {f"digit{k}": int(classes[k]) for k in range(self.num_digits)}
