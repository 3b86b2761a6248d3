"""MNIST digits for Moving MNIST: a local .npz / torchvision folder, or torchvision's downloader."""
import os
from pathlib import Path

import numpy as np

from .common import DataError, data_root

__all__ = ["load_mnist"]


def load_mnist(split="train", mnist=None, root=None, download=True):
    """MNIST of a split: images uint8 [N, 28, 28] and class labels int64 [N].

    :param mnist: an ``.npz`` with ``x_train``/``x_test`` or a torchvision MNIST folder
        (default ``$MNIST_PATH``); without it torchvision downloads into the data root.
    """
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}: use 'train' or 'test'")
    path = mnist or os.environ.get("MNIST_PATH")
    if path:
        path = Path(path).expanduser()
        if path.suffix == ".npz":
            if not path.is_file():
                raise DataError(f"MNIST file {path} does not exist: fix --mnist or $MNIST_PATH")
            try:
                with np.load(path) as f:
                    images, labels = f[f"x_{split}"], f[f"y_{split}"].astype(np.int64)
            except (OSError, ValueError, KeyError) as err:
                raise DataError(f"cannot read MNIST from {path} ({err}): expected an .npz with "
                                f"x_/y_train and x_/y_test arrays") from None
            if images.ndim != 3 or images.dtype != np.uint8:
                raise DataError(f"{path}: x_{split} is {images.dtype} {images.shape}, expected uint8 "
                                f"[N, 28, 28]")
            return images, labels
        if not path.is_dir():
            raise DataError(f"MNIST path {path} does not exist: fix --mnist or $MNIST_PATH "
                            f"(an .npz file or a torchvision MNIST folder)")
        return _torchvision_mnist(path, split, download=False)
    return _torchvision_mnist(data_root(root) / "mnist", split, download=download)


def _torchvision_mnist(folder, split, download):
    from torchvision.datasets import MNIST

    try:
        dataset = MNIST(str(folder), train=(split == "train"), download=download)
    except RuntimeError as err:  # torchvision says "Dataset not found" when files are missing
        raise DataError(f"no MNIST in {folder} ({err}): pass --mnist PATH to a local copy") from None
    except OSError as err:  # offline
        raise DataError(f"cannot download MNIST into {folder} ({err}): you seem to be offline; "
                        f"pass --mnist PATH to a local .npz or torchvision folder") from None
    return dataset.data.numpy(), dataset.targets.numpy().astype(np.int64)
