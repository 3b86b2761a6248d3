"""MUG facial expressions (licensed; the user supplies the file) from the reference ``.npz`` format.

The file holds ``videos``: uint8 sequences [N, T, H, W, 3] (or an object array of
[T, H, W, 3]) and ``labels``: int [N, 2] = (identity, action); optionally
``action_names``. Frames larger than 160 are center-cropped to 160, then every frame is
resized to 64. Six expressions are kept and relabelled 0-5 (anger, disgust, fear,
happiness, sadness, surprise); the split holds out a seeded share of subjects.
"""
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .common import DataError, carve, check_split

__all__ = ["MUG", "EXPRESSIONS"]

#: The six expressions the VDSM reference uses, in label order.
EXPRESSIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
CROP = 160


def _keep_map(actions, names, keep):
    """Original action id -> new label 0..5."""
    if keep is None and names is not None:
        names = [str(n).lower() for n in names]
        missing = [e for e in EXPRESSIONS if e not in names]
        if missing:
            raise DataError(f"MUG action_names lack {missing}: pass mug_actions=<six ids> explicitly")
        keep = [names.index(e) for e in EXPRESSIONS]
    if keep is None:
        distinct = sorted(set(int(a) for a in actions))
        if len(distinct) > len(EXPRESSIONS):
            raise DataError(f"MUG file has {len(distinct)} actions and no action_names: pass "
                            f"mug_actions=<the six ids of {', '.join(EXPRESSIONS)}>")
        keep = distinct
    return {int(a): k for k, a in enumerate(keep)}


class MUG(Dataset):
    """MUG-FED; item = ``(frames [T, 3, 64, 64], {"identity", "action"})``.

    :param mug: path of the ``.npz`` (default ``$MUG_PATH``).
    :param seq_len: frames per sequence (default: all, must be <= the shortest video).
    :param mug_actions: the six original action ids to keep, in EXPRESSIONS order.
    :param holdout: share of subjects in the test split (seeded by ``split_seed``).

    Splits are by subject: "test" holds ``holdout`` of them; of the others a seeded 10% (seed 42,
    at least one subject) are "val", the rest "train"; "trainval" is train + val.
    """

    def __init__(self, split="train", root=None, *, mug=None, seq_len=None, mug_actions=None,
                 holdout=0.2, split_seed=0):
        check_split(split)
        path = Path(mug or os.environ.get("MUG_PATH") or "")
        if not path.is_file():
            raise DataError(f"MUG file {path} does not exist: pass --mug FILE.npz (MUG is licensed; "
                            f"request it from its authors)")
        try:
            with np.load(path, allow_pickle=False) as f:
                videos, labels = f["videos"], f["labels"]
                names = f["action_names"] if "action_names" in f else None
        except (OSError, ValueError, KeyError) as err:
            raise DataError(f"cannot read {path} ({err}): expected an .npz with uint8 'videos' "
                            f"[N, T, H, W, 3] and int 'labels' [N, 2]") from None
        if videos.ndim != 5 or videos.shape[-1] != 3 or labels.ndim != 2 or labels.shape[1] != 2:
            raise DataError(f"{path}: videos {videos.shape} / labels {labels.shape} are not "
                            f"[N, T, H, W, 3] / [N, 2]")
        if seq_len is not None and not 1 <= seq_len <= videos.shape[1]:
            raise DataError(f"seq_len={seq_len} is out of range for MUG ({videos.shape[1]} frames): "
                            f"choose 1..{videos.shape[1]}")
        relabel = _keep_map(labels[:, 1], names, mug_actions)
        subjects = np.unique(labels[:, 0])
        order = np.random.RandomState(split_seed).permutation(subjects)
        n_test = max(1, int(round(holdout * len(subjects))))
        chosen = order[:n_test] if split == "test" else carve(np.sort(order[n_test:]), split, 0.1, 42)
        in_split = np.isin(labels[:, 0], chosen)
        keep = in_split & np.isin(labels[:, 1], list(relabel))
        self.videos, self.labels = videos[keep], labels[keep]
        self.relabel, self.seq_len = relabel, seq_len or videos.shape[1]

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, i):
        x = torch.from_numpy(np.ascontiguousarray(self.videos[i, : self.seq_len])).permute(0, 3, 1, 2).float() / 255
        h, w = x.shape[-2:]
        if min(h, w) > CROP:
            top, left = (h - CROP) // 2, (w - CROP) // 2
            x = x[..., top:top + CROP, left:left + CROP]
        if x.shape[-1] != 64:
            x = F.interpolate(x, size=(64, 64), mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)
        identity, action = self.labels[i]
        return x, {"identity": int(identity), "action": self.relabel[int(action)]}
