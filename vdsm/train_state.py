"""What a stage's checkpoint holds, as plain data loadable with ``weights_only=True``: the resumable
counters (``TrainState``), every RNG the loop touches, and Pyro's param store; ``Snapshots`` writes
and restores the whole of it for one model/guide pair."""
import copy
import random
import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import pyro
import torch

from .checkpoint import CheckpointError
from .handlers import MODULE_SEPARATOR

__all__ = ["TrainState", "Snapshots", "rng_state", "set_rng_state", "forked_rng", "param_store_state",
           "load_param_store_state"]


@dataclass
class TrainState:
    """The counters of a stage that a checkpoint carries, so that a resumed stage goes on exactly where
    it stopped and reports the whole of its training."""

    step: int = 0                # optimiser steps done
    lr_scale: float = 1.0        # the learning rate's factor: lr_drop at each rollback
    loss: float = None           # the smoothed loss per frame (0.98 / 0.02), which ranks checkpoints
    train_seconds: float = 0.0   # training seconds of the stage, every call together
    events: list = field(default_factory=list)   # skipped steps and rollbacks: {"step", "event"}
    rollbacks: int = 0
    clipped_steps: int = 0       # steps whose gradient was rescaled to clip_norm

    @classmethod
    def from_checkpoint(cls, saved):
        return cls(**{f.name: copy.deepcopy(saved[f.name]) for f in fields(cls)})


class Snapshots:
    """Checkpoint dicts of one stage (weights, optimiser, param store, data order, RNGs, ``TrainState``,
    the stage's length and ``extra_state``) and their restoration, in place."""

    def __init__(self, model, guide, optimizer, batches, options, extra_state=None):
        self.model, self.guide, self.optimizer, self.batches = model, guide, optimizer, batches
        self.options, self.extra_state = options, extra_state or {}
        self.started, self.seconds_before = time.perf_counter(), 0.0

    def state_dict(self, state, **more):
        seconds = self.seconds_before + time.perf_counter() - self.started
        return dict(self.extra_state, model=self.model.state_dict(), guide=self.guide.state_dict(),
                    optimizer=self.optimizer.state_dict(), steps=self.options.steps,
                    schedule_steps=self.options.schedule_steps or self.options.steps,
                    data=self.batches.state() if hasattr(self.batches, "state") else None, rng=rng_state(),
                    param_store=param_store_state(), **{**asdict(state), "train_seconds": seconds}, **more)

    def initial(self, state):
        """A copy of the weights as they are now, for a rollback before the first checkpoint."""
        return copy.deepcopy({k: v for k, v in self.state_dict(state).items() if k not in ("data", "rng")})

    def restore(self, saved, resume=False):
        """Weights, optimiser and param store of ``saved``; with ``resume`` also its data order, RNGs and
        training time (a rollback keeps the stream and the clock it has). Returns its ``TrainState``."""
        self.model.load_state_dict(saved["model"])
        self.guide.load_state_dict(saved["guide"])
        load_param_store_state(saved.get("param_store", {}))
        self.optimizer.load_state_dict(saved["optimizer"])
        for group in self.optimizer.param_groups:
            group["lr"] = self.options.lr * saved["lr_scale"]
        if resume:
            self.seconds_before = float(saved["train_seconds"])
            if saved.get("data") is not None and hasattr(self.batches, "load_state"):
                self.batches.load_state(saved["data"])
            set_rng_state(saved["rng"])
        return TrainState.from_checkpoint(saved)

    def start_clock(self):
        self.started = time.perf_counter()

    def seconds_this_call(self):
        return time.perf_counter() - self.started


def rng_state():
    """Every RNG the loop touches, as plain data (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "python": random.getstate()}


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def forked_rng(device):
    """``torch.random.fork_rng`` over the CPU generator and, on CUDA, ``device``'s: random numbers
    drawn inside (an evaluation, a dry run) leave training's streams untouched."""
    device = torch.device(device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=cuda)


def param_store_state():
    """Pyro's param store as plain data: name -> unconstrained tensor (on the CPU). Parameters of
    registered modules (``pyro.module``, ``vdsm.handlers.register_module``) are left out: they are
    in the model's and guide's state dicts already."""
    return {k: v.detach().cpu() for k, v in pyro.get_param_store().named_parameters() if MODULE_SEPARATOR not in k}


def load_param_store_state(saved):
    """Copy saved values (``param_store_state``) into the param store's existing entries, in place
    (so that an optimiser holding them keeps working). The entries must exist: run the model and
    guide once first. A saved name the store lacks is a CheckpointError."""
    store = dict(pyro.get_param_store().named_parameters())
    missing = sorted(set(saved) - set(store))
    if missing:
        raise CheckpointError(f"the checkpoint holds Pyro params {', '.join(missing[:5])} that this model and "
                              f"guide do not create: resume with the run's own config.json and guide")
    with torch.no_grad():
        for name, value in saved.items():
            store[name].copy_(value.to(store[name].device))
