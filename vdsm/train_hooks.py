"""The small collaborators of ``vdsm.train.train_stage``, each testable alone: hooks that see every
optimiser step (progress bar, the loss series, factor terms, TensorBoard, checkpoints, a caller's
callback), the fault guard (skipped steps and rollbacks), stopping on a signal, and the process group.

A hook is any object with ``after_step(record)`` (a ``StepRecord``) and ``end()`` returning entries
for the stage's statistics (``Hook`` has both as no-ops).
"""
import copy
import logging
import signal
import statistics
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from . import stopping

__all__ = ["StepRecord", "Hook", "ProgressBar", "LossSeries", "FactorTermAverages", "TensorBoardLog",
           "PeriodicCheckpoints", "OnStep", "FaultGuard", "StopOnSignal", "ProcessGroup", "last_tenth"]

log = logging.getLogger("vdsm.train")


@dataclass
class StepRecord:
    """What one optimiser step reports to the hooks."""

    step: int                    # steps done, this one included
    steps: int                   # the stage's length
    loss_per_frame: float
    grad_norm_per_frame: float
    clipped: bool                # the gradient was rescaled to clip_norm
    lr: float
    factors: dict                # the annealing factors of this step
    terms: dict                  # each pyro.factor site's share of the loss per frame


class Hook:
    def after_step(self, record):
        pass

    def end(self):
        return {}


def last_tenth(values):
    """The last tenth of a per-step series (at least one value): what the final statistics average."""
    return values[-max(1, len(values) // 10):]


class ProgressBar(Hook):
    """tqdm over the stage's steps, and after ``report_after`` steps one log line with the measured
    s/step and the expected end (also with the bar off); again after ``4 x report_after`` steps, from
    the steps since the first line, since a model's steps may grow dearer after a warm-up (SPYL's
    contrastive terms start after 5% of its steps)."""

    def __init__(self, options, start, tag, show):
        self.start, self.tag, self.report_after, self.started = start, tag, options.report_after, time.perf_counter()
        self.show, self.first_report = show, None
        self.bar = tqdm(total=options.steps, initial=start, desc=tag, disable=not (options.progress and show),
                        dynamic_ncols=True)

    def after_step(self, r):
        self.bar.update(1)
        done = r.step - self.start
        if self.show and done == self.report_after and r.step < r.steps:
            self.first_report = (time.perf_counter(), r.step)
            log.info("%s", expected_end(self.tag, self.first_report[0] - self.started, done, r.steps - r.step))
        elif self.show and done == 4 * self.report_after and r.step < r.steps and self.first_report:
            since, step = self.first_report
            log.info("%s", expected_end(self.tag, time.perf_counter() - since, r.step - step, r.steps - r.step,
                                        over=f"steps {step + 1}-{r.step}"))
        if self.show:
            self.bar.set_postfix(loss_per_frame=f"{r.loss_per_frame:.1f}", **{k: f"{v:.3g}" for k, v in r.factors.items()})

    def moved_to(self, step):
        self.bar.n = step

    def close(self):
        self.bar.close()


def expected_end(tag, seconds, done, left, over=None):
    """``stage1: 0.193 s/step over its first 100 steps; 6300 steps left, ends about 14:02 (in 20.3 min)``
    (``over``: which steps were timed, when not the first ``done``)."""
    per_step = seconds / done
    end = time.time() + per_step * left
    when = time.strftime("%H:%M" if per_step * left < 12 * 3600 else "%Y-%m-%d %H:%M", time.localtime(end))
    return (f"{tag}: {per_step:.3f} s/step over {over or f'its first {done} steps'}; {left} steps left, ends about {when} "
            f"(in {per_step * left / 60:.1f} min)")


class LossSeries(Hook):
    """Every step's loss and gradient norm per frame (TensorBoard has them too; the statistics return them)."""

    def __init__(self):
        self.losses, self.grad_norms = [], []

    def after_step(self, r):
        self.grad_norms.append(r.grad_norm_per_frame)
        self.losses.append(r.loss_per_frame)

    def end(self):
        return {"losses": self.losses, "grad_norms_per_frame": self.grad_norms}


class FactorTermAverages(Hook):
    """Each ``pyro.factor`` site's share of the loss per frame, averaged over the last tenth of the steps."""

    def __init__(self):
        self.terms = {}

    def after_step(self, r):
        for name, value in r.terms.items():
            self.terms.setdefault(name, []).append(value)

    def end(self):
        return {"final_terms_per_frame": {name: statistics.fmean(last_tenth(v)) for name, v in self.terms.items()}}


class TensorBoardLog(Hook):
    """Scalars of every step under ``<tag>/``: loss, gradient norm, clipped, lr, factors, factor terms."""

    def __init__(self, writer, tag):
        self.writer, self.tag = writer, tag

    def after_step(self, r):
        scalars = {"loss_per_frame": r.loss_per_frame, "grad_norm_per_frame": r.grad_norm_per_frame,
                   "clipped": float(r.clipped), "lr": r.lr, **{f"factor_{k}": v for k, v in r.factors.items()},
                   **{f"term_{k}": v for k, v in r.terms.items()}}
        for name, value in scalars.items():
            self.writer.add_scalar(f"{self.tag}/{name}", value, r.step)


class PeriodicCheckpoints(Hook):
    """A checkpoint whenever the manager says one is due (not at the last step: the stage's final
    checkpoint carries its statistics)."""

    def __init__(self, checkpoints, save):
        self.checkpoints, self.save = checkpoints, save

    def after_step(self, r):
        if r.step < r.steps and self.checkpoints.due(r.step, time.monotonic()):
            self.save()


class OnStep(Hook):
    """``callback(step, last)`` after every step (e.g. a quality monitor)."""

    def __init__(self, callback):
        self.callback = callback

    def after_step(self, r):
        self.callback(r.step, r.step == r.steps)


class FaultGuard:
    """Skipped steps and rollbacks: a non-finite loss or gradient skips the step; after
    ``max_bad_steps`` in a row the stage goes back to its newest checkpoint (or, before the first one,
    to the weights it started from) with the learning rate times ``lr_drop``."""

    def __init__(self, options, snapshots, checkpoints, state, device, tag):
        self.options, self.snapshots, self.checkpoints, self.device, self.tag = options, snapshots, checkpoints, device, tag
        self.initial, self.bad = snapshots.initial(state), 0

    def good_step(self):
        self.bad = 0

    def bad_step(self, state):
        """Record a skipped step in ``state``; roll back when due. True when it rolled back."""
        self.bad += 1
        state.events.append({"step": state.step, "event": "non-finite loss or gradient: step skipped"})
        log.warning("%s step %d: non-finite loss or gradient, step skipped (%d in a row)", self.tag, state.step, self.bad)
        if self.bad < self.options.max_bad_steps:
            return False
        if self.checkpoints is not None and self.checkpoints.exists():
            back = self.snapshots.restore(self.checkpoints.load_newest(self.device))
            where = f"checkpoint of step {back.step}"
        else:
            back = self.snapshots.restore(copy.deepcopy(self.initial))
            where = f"the weights the stage started from (step {back.step}; no checkpoint yet)"
        state.step, state.loss, state.lr_scale = back.step, back.loss, state.lr_scale * self.options.lr_drop
        for group in self.snapshots.optimizer.param_groups:
            group["lr"] = self.options.lr * state.lr_scale
        state.events.append({"step": state.step, "event": f"rolled back to {where}, lr x{state.lr_scale:g}"})
        log.warning("%s: rolled back to %s, learning rate now %g", self.tag, where, self.options.lr * state.lr_scale)
        state.rollbacks, self.bad = state.rollbacks + 1, 0
        if state.rollbacks > self.options.max_rollbacks:
            raise RuntimeError(f"{self.tag}: {state.rollbacks} rollbacks without recovering; lower --lr and resume")
        return True


class ProcessGroup:
    """This process's place under ``torch.distributed`` (a plain run: rank 0 of 1): every rank skips a
    step and stops at a signal together, or the next all-reduce would hang."""

    def __init__(self, device):
        self.device = device
        on = dist.is_available() and dist.is_initialized()
        self.world, self.rank = (dist.get_world_size(), dist.get_rank()) if on else (1, 0)

    def wrap(self, loss_module):
        if self.world == 1:
            return loss_module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(loss_module, device_ids=ids)

    def all_finite(self, ok):
        if self.world > 1:
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        return ok

    def any_asked_to_stop(self):
        asked = stopping.requested() is not None
        if self.world == 1:
            return asked
        flag = torch.tensor([float(asked)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


class StopOnSignal:
    """After a step that a signal interrupted (``vdsm.stopping``): a checkpoint (rank 0), then
    ``Interrupted`` naming it."""

    def __init__(self, group, save, bar):
        self.group, self.save, self.bar = group, save, bar

    def check(self, step, steps):
        if step < steps and self.group.any_asked_to_stop():
            path = self.save() if self.group.rank == 0 else None
            self.bar.close()
            raise stopping.Interrupted(stopping.requested() or signal.SIGTERM, path, step)
