"""Judge classifiers: a conv frame encoder + LSTM with one head per label, trained once and cached."""
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from data import FOLDER_OPTIONS, get_dataset
from data.common import data_root

from ..checkpoint import load_checkpoint, save_checkpoint
from ..nets import LSTM

__all__ = ["Judge", "JudgeSpec", "JUDGES", "JUDGE_HEADS", "judge_spec", "train_judge", "load_or_train_judge", "judge_accuracy"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JudgeSpec:
    """The labels a dataset's judge predicts (head -> number of classes), in two groups: ``dynamic``
    heads describe the motion (what fixing the dynamics latent must keep), ``static`` heads the
    appearance (what fixing the identity latent must keep). ``parts``: a head whose classes combine
    several factors, head -> ((factor, classes), ...), class = mixed-radix number of the factors (first
    most significant), so that the protocols can tell which factor a model loses. The judge, the
    protocols and ``experiments.evaluate`` all read this one spec."""

    dynamic: dict
    static: dict
    parts: dict = field(default_factory=dict)

    @property
    def heads(self):
        return {**self.dynamic, **self.static}


#: Each labelled dataset's judge: its dynamic heads and static heads, with their number of classes.
JUDGES = {
    # Sprites' 9 actions are 3 motions x 3 directions (data.sprites: action_type * 3 + direction)
    "sprites": JudgeSpec(dynamic={"action": 9}, static={"body": 6, "bottom": 6, "top": 6, "hair": 6},
                         parts={"action": (("action_type", 3), ("direction", 3))}),
    "sprites-dsa": JudgeSpec(dynamic={"action": 3}, static={"body": 7, "shirt": 4, "pants": 5, "hair": 6}),
    # MUG's identities are subjects, disjoint between splits: no static head a judge could score
    "mug": JudgeSpec(dynamic={"action": 6}, static={}),
    # the rod length is what the pendulum looks like; the start angle and the damping are how it moves
    "pendulum": JudgeSpec(dynamic={"angle": 4, "damping": 2}, static={"length": 3}),
}
#: Each labelled dataset's judge heads: name -> number of classes.
JUDGE_HEADS = {name: spec.heads for name, spec in JUDGES.items()}


def judge_spec(dataset_name, root=None, **data_options):
    """The judge's heads for ``dataset_name``: ``JUDGES``' for the benchmarks; for a dataset labelled by
    its user (``--dataset videos`` with a labels.csv) the factors its labels declare; None when the
    dataset has no labels a judge could learn."""
    if dataset_name in JUDGES:
        return JUDGES[dataset_name]
    factors = getattr(get_dataset(dataset_name, "train", root, **data_options), "judge_factors", None)
    return None if factors is None else JudgeSpec(dynamic=dict(factors["dynamic"]), static=dict(factors["static"]))


def _spec_or_error(dataset_name, root, data_options):
    spec = judge_spec(dataset_name, root, **data_options)
    if spec is None:
        known = ", ".join(JUDGES)
        raise ValueError(f"no judge for dataset {dataset_name!r}: it has no labels (judges exist for {known}, "
                         f"and for --dataset videos with a labels.csv)")
    return spec


class Judge(nn.Module):
    """Sequence classifier: conv frame features -> LSTM; heads read [last LSTM state, mean frame feature].

    :param heads: dict ``label -> number of classes``.
    :param dynamic: the heads that describe motion (the others describe appearance).
    :param parts: the factors a head's classes combine (``JudgeSpec.parts``).

    Example::

        judge = Judge(3, {"action": 9, "hair": 6}, dynamic=["action"])
        logits = judge(torch.rand(4, 8, 3, 64, 64))   # {"action": [4, 9], "hair": [4, 6]}
    """

    def __init__(self, nc, heads, width=16, hidden=128, dynamic=(), parts=None):
        super().__init__()
        self.heads_spec = dict(heads)
        self.head_parts = dict(parts or {})
        self.dynamic_heads = [k for k in heads if k in dynamic]
        self.static_heads = [k for k in heads if k not in dynamic]
        layers, c = [], nc
        for w in (width, 2 * width, 4 * width, 8 * width):   # 64 -> 4
            layers += [nn.Conv2d(c, w, 4, 2, 1), nn.BatchNorm2d(w), nn.LeakyReLU(0.2)]
            c = w
        self.frames = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * 16, hidden), nn.LeakyReLU(0.2))
        self.lstm = LSTM(hidden, hidden, batch_first=True)
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

    @torch.no_grad()
    def frame_features(self, x, batch_size=1024):
        """Per-frame features [N * T, hidden] of frames [N, T, C, H, W] (eval mode), for Frechet distances."""
        self.eval()
        frames = x.reshape(-1, *x.shape[-3:])
        return torch.cat([self.frames(chunk) for chunk in frames.split(batch_size)])


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
                num_workers=1, progress=False, max_train=None, max_test=None, score_on=("val",), **data_options):
    """Train a judge on real "train" sequences of ``dataset_name`` (val held out); returns (judge,
    {split: accuracy per head} for the splits in ``score_on``).

    ``max_train`` / ``max_test`` restrict training / scoring to a seeded random subset.
    """
    spec = _spec_or_error(dataset_name, root, data_options)
    heads = spec.heads
    torch.manual_seed(seed)
    train = get_dataset(dataset_name, "train", root, **data_options)
    scored = {split: get_dataset(dataset_name, split, root, **data_options) for split in score_on}
    if max_train:
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:max_train]
        train = torch.utils.data.Subset(train, pick.tolist())
    if max_test:
        for split, ds in scored.items():
            pick = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed + 1))[:max_test]
            scored[split] = torch.utils.data.Subset(ds, pick.tolist())
    if len(train) == 0:
        raise ValueError(f"the judge of {dataset_name!r} has no training sequences")
    batch_size = min(batch_size, len(train))   # a small dataset (the user's videos) still fills one batch
    nc = train[0][0].shape[1]
    judge = Judge(nc, heads, dynamic=list(spec.dynamic), parts=spec.parts).to(device)
    optimizer = torch.optim.Adam(judge.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    loader = torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True, drop_last=True,
                                         num_workers=num_workers, persistent_workers=num_workers > 0,
                                         generator=torch.Generator().manual_seed(seed))
    step, started = 0, time.time()
    bar = tqdm(total=steps, desc=f"judge ({dataset_name})", disable=not progress, dynamic_ncols=True)
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
            bar.update(1)
            if step >= steps:
                break
    bar.close()
    acc = {split: judge_accuracy(judge, ds, device) for split, ds in scored.items()}
    log.info("judge trained in %.0f s; accuracy %s", time.time() - started, acc)
    return judge, acc


_FOLDER_OPTIONS = set(FOLDER_OPTIONS.values())


def _cache_path(dataset_name, root, settings):
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return data_root(root) / "judges" / f"{dataset_name}-{key}.pt"


def load_or_train_judge(dataset_name, *, root=None, device="cpu", steps=1500, progress=False, accuracy_on=("val",),
                        **data_options):
    """The cached judge of ``dataset_name`` (trained and cached in the data root the first time).

    Data folders (``sprites_layers`` ...) are not part of the cache key; the label layout, the
    training split and the training settings are. Returns (judge, {split: accuracy per head}) for
    the splits in ``accuracy_on``; each split is scored once and cached with the judge, and only
    when asked for (monitoring asks for "val" alone: it never reads the test split).
    """
    spec = _spec_or_error(dataset_name, root, data_options)
    settings = {"heads": spec.heads, "dynamic": list(spec.dynamic), "steps": steps, "trained_on": "train (val held out)",
                **{k: v for k, v in data_options.items() if k not in _FOLDER_OPTIONS}}
    if dataset_name not in JUDGES:   # the user's data: its contents are part of the key
        settings["data"] = getattr(get_dataset(dataset_name, "train", root, **data_options), "fingerprint", None)
    path = _cache_path(dataset_name, root, settings)
    if path.is_file():
        state = load_checkpoint(path, device)
        judge = Judge(state["nc"], state["heads"], dynamic=state["dynamic"], parts=spec.parts).to(device)
        judge.load_state_dict(state["judge"])
        acc, changed = dict(state["accuracy"]), False
    else:
        judge, acc = train_judge(dataset_name, root=root, device=device, steps=steps, progress=progress, score_on=(),
                                 **data_options)
        changed = True
    for split in accuracy_on:
        if split not in acc:
            acc[split] = judge_accuracy(judge, get_dataset(dataset_name, split, root, **data_options), device)
            changed = True
    if changed:
        nc = next(iter(judge.frames.parameters())).shape[1]
        save_checkpoint(path, {"judge": judge.state_dict(), "heads": judge.heads_spec, "dynamic": judge.dynamic_heads,
                               "nc": nc, "accuracy": acc, "settings": json.dumps(settings, default=str)})
    return judge.eval(), {split: acc[split] for split in accuracy_on}
