"""An endless, resumable, shardable stream of training batches.

The order of epoch ``e`` is a permutation drawn from ``(seed, e)``; rank ``r`` of
``world_size`` takes every ``world_size``-th index, so the first batches of all ranks
together are exactly the first ``world_size * batch_size`` indices of the permutation.
Datasets with per-item randomness draw it from ``(dataset.seed, dataset.epoch, index)``.
``state()`` / ``load_state()`` give (epoch, position): a resumed stream yields the same
batches as an uninterrupted one.
"""
import signal

import torch
from torch.utils.data import DataLoader, Sampler

__all__ = ["ResumableBatches"]


def _ignore_stop_signals(worker_id):
    """A worker leaves Ctrl-C and SIGTERM to the training process (which stops after its step, with a
    checkpoint): a worker killed by them first would end the run with a DataLoader error instead."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class _Indices(Sampler):
    def __init__(self, indices):
        self.indices = indices

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


class ResumableBatches:
    """Iterator of frame batches ``x [B, T, C, H, W]`` over ``dataset``, epoch after epoch."""

    def __init__(self, dataset, batch_size, *, seed=0, num_workers=0, rank=0, world_size=1, pin_memory=False):
        per_rank = len(dataset) // world_size
        if per_rank < batch_size:
            raise ValueError(f"batch size {batch_size} is larger than the {per_rank} training sequences per process: "
                             f"lower --batch-size")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.num_workers, self.rank, self.world_size, self.pin_memory = num_workers, rank, world_size, pin_memory
        self.batches_per_epoch = per_rank // batch_size
        self.epoch, self.position = 0, 0
        self._iterator = None

    def state(self):
        return {"epoch": self.epoch, "position": self.position}

    def load_state(self, state):
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._iterator = None

    def _start_epoch(self):
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed * 100003 + self.epoch))
        mine = order[self.rank::self.world_size][: self.batches_per_epoch * self.batch_size]
        mine = mine[self.position * self.batch_size:].tolist()
        if hasattr(self.dataset, "epoch"):
            self.dataset.epoch = self.epoch  # workers start fresh each epoch and copy this
        # its own generator: creating workers must not draw from the global RNG (exact resume)
        generator = torch.Generator().manual_seed(self.seed * 100003 + self.epoch + 1)
        loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=_Indices(mine),
                            num_workers=self.num_workers, pin_memory=self.pin_memory, drop_last=True,
                            generator=generator, worker_init_fn=_ignore_stop_signals if self.num_workers else None)
        self._iterator = iter(loader)

    def __iter__(self):
        return self

    def __next__(self):
        if self._iterator is None:
            self._start_epoch()
        try:
            x, _ = next(self._iterator)
        except StopIteration:
            self.epoch, self.position = self.epoch + 1, 0
            self._start_epoch()
            x, _ = next(self._iterator)
        self.position += 1
        return x
