"""Judge classifiers: a conv frame encoder + LSTM with one head per label, trained once and cached."""
import hashlib
import json
import logging
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from data import get_dataset
from data.common import data_root

from ..checkpoint import load_checkpoint, save_checkpoint

__all__ = ["Judge", "JUDGE_HEADS", "train_judge", "load_or_train_judge", "judge_accuracy"]

log = logging.getLogger(__name__)

JUDGE_HEADS = {
    "sprites": {"action": 9, "body": 6, "bottom": 6, "top": 6, "hair": 6},
    "sprites-dsa": {"action": 3, "body": 7, "shirt": 4, "pants": 5, "hair": 6},
    "mug": {"action": 6},
    "pendulum": {"length": 3, "angle": 4, "damping": 2},
}
ACTION_HEADS = ("action",)


class Judge(nn.Module):
    """Sequence classifier: conv frame features -> LSTM; heads read [last LSTM state, mean frame feature].

    :param heads: dict ``label -> number of classes``.

    Example::

        judge = Judge(3, {"action": 9, "hair": 6})
        logits = judge(torch.rand(4, 8, 3, 64, 64))   # {"action": [4, 9], "hair": [4, 6]}
    """

    def __init__(self, nc, heads, width=16, hidden=128):
        super().__init__()
        self.heads_spec = dict(heads)
        layers, c = [], nc
        for w in (width, 2 * width, 4 * width, 8 * width):   # 64 -> 4
            layers += [nn.Conv2d(c, w, 4, 2, 1), nn.BatchNorm2d(w), nn.LeakyReLU(0.2)]
            c = w
        self.frames = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * 16, hidden), nn.LeakyReLU(0.2))
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.heads = nn.ModuleDict({k: nn.Linear(2 * hidden, n) for k, n in heads.items()})

    def forward(self, x):
        b, t = x.shape[:2]
        f = self.frames(x.reshape(b * t, *x.shape[2:])).reshape(b, t, -1)
        _, (h, _) = self.lstm(f)
        g = torch.cat([h[-1], f.mean(1)], -1)
        return {k: head(g) for k, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, x, batch_size=256):
        """Class probabilities per head for frames [N, T, C, H, W] (in chunks, eval mode)."""
        self.eval()
        outs = [{k: v.softmax(-1) for k, v in self(chunk).items()} for chunk in x.split(batch_size)]
        return {k: torch.cat([o[k] for o in outs]) for k in self.heads_spec}


def _labels(batch_labels, heads, device):
    return {k: batch_labels[k].to(device) for k in heads}


def judge_accuracy(judge, dataset, device="cpu", max_sequences=None, batch_size=128):
    """Per-head accuracy of ``judge`` on (a prefix of) ``dataset``."""
    n = len(dataset) if max_sequences is None else min(max_sequences, len(dataset))
    subset = torch.utils.data.Subset(dataset, range(n))
    correct, total = {k: 0 for k in judge.heads_spec}, 0
    judge.eval()
    with torch.no_grad():
        for x, labels in torch.utils.data.DataLoader(subset, batch_size=batch_size):
            logits = judge(x.to(device))
            for k in correct:
                correct[k] += (logits[k].argmax(-1).cpu() == labels[k]).sum().item()
            total += x.shape[0]
    return {k: v / total for k, v in correct.items()}


def train_judge(dataset_name, *, root=None, steps=1500, batch_size=32, lr=2e-3, device="cpu", seed=0,
                num_workers=1, progress=False, max_train=None, max_test=None, **data_options):
    """Train a judge on real training sequences of ``dataset_name``; returns (judge, test accuracy).

    ``max_train`` / ``max_test`` restrict training / scoring to a seeded random subset.
    """
    heads = JUDGE_HEADS[dataset_name]
    torch.manual_seed(seed)
    train = get_dataset(dataset_name, "train", root, **data_options)
    test = get_dataset(dataset_name, "test", root, **data_options)
    if max_train:
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:max_train]
        train = torch.utils.data.Subset(train, pick.tolist())
    if max_test:
        pick = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed + 1))[:max_test]
        test = torch.utils.data.Subset(test, pick.tolist())
    nc = train[0][0].shape[1]
    judge = Judge(nc, heads).to(device)
    optimizer = torch.optim.Adam(judge.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    loader = torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True, drop_last=True,
                                         num_workers=num_workers, generator=torch.Generator().manual_seed(seed))
    step, started = 0, time.time()
    while step < steps:
        for x, labels in loader:
            judge.train()
            logits = judge(x.to(device))
            loss = sum(F.cross_entropy(logits[k], labels[k].to(device)) for k in heads)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if progress and step % 100 == 0:
                log.info("judge step %d/%d loss %.4f", step, steps, loss.item())
            if step >= steps:
                break
    acc = judge_accuracy(judge, test, device)
    log.info("judge trained in %.0f s; test accuracy %s", time.time() - started, acc)
    return judge, acc


def _cache_path(dataset_name, root, settings):
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return data_root(root) / "judges" / f"{dataset_name}-{key}.pt"


def load_or_train_judge(dataset_name, *, root=None, device="cpu", steps=1500, **data_options):
    """The cached judge of ``dataset_name`` (trained and cached in the data root the first time).

    Data folders (``sprites_layers`` ...) are not part of the cache key; the label layout and
    training settings are. Returns (judge, test accuracy per head).
    """
    if dataset_name not in JUDGE_HEADS:
        raise ValueError(f"no judge for dataset {dataset_name!r}: judges exist for {', '.join(JUDGE_HEADS)}")
    settings = {"heads": JUDGE_HEADS[dataset_name], "steps": steps,
                **{k: v for k, v in data_options.items() if not k.endswith(("layers", "mnist", "mug"))}}
    path = _cache_path(dataset_name, root, settings)
    if path.is_file():
        state = load_checkpoint(path, device)
        judge = Judge(state["nc"], state["heads"]).to(device)
        judge.load_state_dict(state["judge"])
        return judge.eval(), state["test_accuracy"]
    judge, acc = train_judge(dataset_name, root=root, device=device, steps=steps, **data_options)
    nc = next(iter(judge.frames.parameters())).shape[1]
    save_checkpoint(path, {"judge": judge.state_dict(), "heads": judge.heads_spec, "nc": nc,
                           "test_accuracy": acc, "settings": json.dumps(settings, default=str)})
    return judge.eval(), acc
