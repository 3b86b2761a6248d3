"""The SVI loop: the model's ELBO estimator with annealing factors, NaN guard and rollback,
gradient clipping, checkpoints, DDP.

One step: factors = schedule.factors(progress) go to model and guide, with progress =
min(1, step / schedule_steps) (``schedule_steps`` is the stage's planned length: a run extended
beyond it keeps the schedules' final values); the learning rate is the stage's lr times
schedule.lr_factor(progress). The loss is ``differentiable_loss`` of the model's estimator
(``model.elbo``, default ``Trace_ELBO``: the SVI objective; SVG uses ``TraceMeanField_ELBO``, its
KL in closed form as the reference computes it), and Adam updates every parameter that requires
a gradient: those of the model's and guide's ``nn.Module`` trees and every Pyro param site the
pair reads (``pyro.param``, ``pyro.module``, ``PyroModule``; found by tracing one evaluation),
frozen ones (stage 1's networks in stage 2) left out.

Gradient clipping (``clip_norm`` > 0): the gradient of the loss per frame (the summed negative
ELBO divided by batch x frames, over all processes) is rescaled to norm ``clip_norm`` when it is
larger; the summed loss's gradient is what is actually applied, scaled by the same factor. Every
step logs that per-frame norm and whether it was clipped; the stage's statistics count the
clipped steps. ``clip_norm`` 0 turns clipping off.

Terms beyond the ELBO: each ``pyro.factor`` site of the model (C-DSVAE's contrastive and MI terms)
is recorded as its contribution to the loss per frame (minus the factor's value, scaled as the ELBO
scores it, over batch x frames): logged every step beside the loss (``<tag>/term_<site>``), its mean
over the last tenth of the steps in the statistics (``final_terms_per_frame``).

Faults: a non-finite loss or gradient skips the step (weights untouched). After
``max_bad_steps`` such steps in a row the run rolls back to its newest checkpoint and
multiplies the learning rate by ``lr_drop``; every event is logged and returned.

Stopping: under ``vdsm.stopping.signals_handled()`` (the commands), SIGINT or SIGTERM ends the step
in progress, writes a checkpoint and raises ``vdsm.stopping.Interrupted`` naming it; ``--resume``
then continues exactly where it stopped. Each checkpoint carries the stage's training seconds so
far, and the last one the stage's statistics, so that a resumed or re-run stage reports the whole.

Distributed: when ``torch.distributed`` is initialised, the ELBO is wrapped in
``DistributedDataParallel``; each rank's loss is multiplied by the world size so that
the averaged gradient equals the gradient of the combined batch's ELBO.

The loop itself is the SVI step and a list of hooks (``vdsm.train_hooks``: progress, the loss series,
factor terms, TensorBoard, checkpoints, a caller's callback); its resumable state is one dataclass
(``vdsm.train_state.TrainState``) that every checkpoint carries.
"""
import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.poutine.messenger import Messenger

from . import stopping
from .train_hooks import (FactorTermAverages, FaultGuard, LossSeries, PeriodicCheckpoints, ProcessGroup, ProgressBar,
                          StepRecord, StopOnSignal, last_tenth)
from .train_state import Snapshots, TrainState, forked_rng

__all__ = ["TrainOptions", "train_stage", "SVIStep", "ELBOLoss", "FactorTerms"]


@dataclass
class TrainOptions:
    """Optimisation and fault-handling settings of one stage."""

    steps: int
    lr: float = 1e-3
    clip_norm: float = 0.0       # bound on the norm of the per-frame loss's gradient (0: no clipping)
    max_bad_steps: int = 5       # consecutive non-finite steps before a rollback
    lr_drop: float = 0.5         # learning-rate factor applied at each rollback
    max_rollbacks: int = 10
    amp: bool = False            # bf16 autocast of the networks; log-probs stay fp32
    progress: bool = True
    schedule_steps: int = None   # length the schedules run over (default: steps)
    report_after: int = 100      # after this many steps, log the measured s/step and the expected end


class ELBOLoss(nn.Module):
    """The negative ELBO of a model/guide pair as a module (so that DDP can wrap it).

    The estimator is ``elbo``, else the model's ``elbo`` attribute (a Pyro ELBO class), else
    ``Trace_ELBO``: training and the tests of a model's objective use this one class.
    """

    def __init__(self, model, guide, elbo=None):
        super().__init__()
        self.model, self.guide = model, guide
        self.elbo = elbo or getattr(model, "elbo", Trace_ELBO)()

    def forward(self, x, factors):
        terms = FactorTerms()
        with terms:
            loss = self.elbo.differentiable_loss(self.model, self.guide, x, factors=factors)
        self.last_terms = terms.values   # {factor site: its contribution to this loss}, detached
        return loss


class FactorTerms(Messenger):
    """Records, for every ``pyro.factor`` site run inside it, the site's contribution to the negative
    ELBO: minus its log factor times the site's scale, summed (``values``: name -> detached tensor)."""

    def __init__(self):
        super().__init__()
        self.values = {}

    def _postprocess_message(self, msg):
        log_factor = getattr(msg["fn"], "log_factor", None)   # pyro.factor samples a dist.Unit
        if msg["type"] == "sample" and msg["infer"].get("is_auxiliary") and log_factor is not None:
            self.values[msg["name"]] = -(log_factor.detach() * msg["scale"]).sum()


def _trainable(loss_module, run_once):
    """Every tensor to optimise: ``nn.Module`` parameters of the pair and the unconstrained values of
    the Pyro param sites that one evaluation (``run_once``) reads, those that require a gradient."""
    with poutine.trace(param_only=True) as capture:
        run_once()
    pyro_params = [site["value"].unconstrained() for site in capture.trace.nodes.values()]
    return list({id(p): p for p in [*loss_module.parameters(), *pyro_params] if p.requires_grad}.values())


class SVIStep:
    """One optimiser step on the ELBO: the loss of a batch under the step's factors and learning rate,
    the gradient (clipped per frame), Adam. ``batches`` is an iterator of frame batches; the
    parameters are found by one evaluation on zeros, which creates lazily built ones (a Pyro
    autoguide's) without consuming data or the global RNG."""

    def __init__(self, model, guide, batches, schedule, options, device, group, fault_injector=None):
        self.elbo_loss = ELBOLoss(model, guide)
        self.schedule, self.options, self.device, self.group = schedule, options, device, group
        self.fault_injector = fault_injector
        if hasattr(batches, "dataset"):
            shape = (batches.batch_size, *batches.dataset[0][0].shape)
        else:  # a plain iterator: peek at its first batch and put it back
            first = next(batches)
            batches, shape = itertools.chain([first], batches), first.shape
        self.batches = batches
        with forked_rng(device):
            zeros = torch.zeros(shape, device=device)
            self.params = _trainable(self.elbo_loss, lambda: self.elbo_loss(zeros, schedule.factors(0.0)))
        self.loss_module = group.wrap(self.elbo_loss)
        self.optimizer = torch.optim.Adam(self.params, lr=options.lr)

    def __call__(self, state):
        """The step at ``state``; a ``StepRecord``, or None when the loss or gradient is not finite
        (the weights untouched)."""
        x = next(self.batches).to(self.device, non_blocking=True)
        progress = min(1.0, state.step / (self.options.schedule_steps or self.options.steps))
        factors = self.schedule.factors(progress)
        for group in self.optimizer.param_groups:  # rollbacks lower lr_scale; the schedule shapes it over the stage
            group["lr"] = self.options.lr * state.lr_scale * self.schedule.lr_factor(progress)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.options.amp):
            loss = self.loss_module(x, factors)
        if self.fault_injector is not None:
            loss = self.fault_injector(state.step, loss)
        world = self.group.world
        frames = x.shape[0] * x.shape[1] * world   # the gradient is that of the combined batch's loss
        if not self.group.all_finite(torch.isfinite(loss.detach()).float()).item():
            return None
        self.optimizer.zero_grad(set_to_none=True)
        (loss * world).backward()
        # the bound applies to the per-frame loss's gradient, i.e. to the summed one at clip_norm * frames
        bound = self.options.clip_norm * frames if self.options.clip_norm > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, bound) / frames
        if not torch.isfinite(grad_norm):
            return None
        self.optimizer.step()
        per_step = x.shape[0] * x.shape[1]
        # one transfer for all terms (the loss's .item() waits for the step anyway)
        terms = self.elbo_loss.last_terms
        values = torch.stack(list(terms.values())).tolist() if terms else []
        return StepRecord(step=state.step + 1, steps=self.options.steps, loss_per_frame=loss.item() / per_step,
                          grad_norm_per_frame=grad_norm.item(),
                          clipped=self.options.clip_norm > 0 and grad_norm.item() > self.options.clip_norm,
                          lr=self.optimizer.param_groups[0]["lr"], factors=factors,
                          terms={name: value / per_step for name, value in zip(terms, values)})


def train_stage(model, guide, batches, *, options, schedule, device, checkpoints=None, resume=None,
                extra_state=None, tag="stage", hooks=(), fault_injector=None):
    """Optimise the ELBO of ``model``/``guide`` for ``options.steps`` steps; returns statistics.

    :param batches: a :class:`vdsm.batches.ResumableBatches` (or any iterator of frame batches;
        exact resume needs ``state()``/``load_state()``).
    :param checkpoints: a :class:`vdsm.checkpoint.CheckpointManager` or None (rank 0 only).
    :param resume: a checkpoint dict written by this function, to continue from.
    :param hooks: more ``vdsm.train_hooks.Hook`` objects (``TensorBoardLog``, ``OnStep``), after every step.
    :param fault_injector: ``f(step, loss) -> loss`` used by tests to inject faults.
    """
    device = torch.device(device)
    group = ProcessGroup(device)
    svi = SVIStep(model, guide, batches, schedule, options, device, group, fault_injector)
    snapshots = Snapshots(model, guide, svi.optimizer, batches, options, extra_state)
    state = snapshots.restore(resume, resume=True) if resume is not None else TrainState()
    start, guard = state.step, FaultGuard(options, snapshots, checkpoints, state, device, tag)

    def save(**more):
        return checkpoints.save(state.step, snapshots.state_dict(state, **more), state.loss) if checkpoints else None

    series, terms = LossSeries(), FactorTermAverages()
    bar = ProgressBar(options, start, tag, show=group.rank == 0)
    every_step = [bar, series, terms, *([PeriodicCheckpoints(checkpoints, save)] if checkpoints else []), *hooks]
    stop = StopOnSignal(group, save, bar)
    snapshots.start_clock()
    with stopping.deferred():   # a signal ends the step in progress, then stops below
        while state.step < options.steps:
            record = svi(state)
            if record is None:
                if guard.bad_step(state):
                    bar.moved_to(state.step)
                continue
            guard.good_step()
            state.clipped_steps += record.clipped
            state.loss = record.loss_per_frame if state.loss is None else 0.98 * state.loss + 0.02 * record.loss_per_frame
            state.step += 1
            for hook in every_step:
                hook.after_step(record)
            stop.check(state.step, options.steps)
    bar.close()
    seconds = snapshots.seconds_this_call()
    losses = series.losses or [state.loss if state.loss is not None else math.nan]
    stats = {"steps": options.steps, "seconds": snapshots.seconds_before + seconds, "seconds_this_call": seconds,
             "resumed_at_step": start if resume is not None else None,
             "seconds_per_step": seconds / max(1, len(series.losses)),
             "skipped_steps": sum(e["event"].endswith("skipped") for e in state.events), "rollbacks": state.rollbacks,
             "clip_norm_per_frame": options.clip_norm, "clipped_steps": state.clipped_steps, "events": state.events,
             "final_loss_per_frame": sum(last_tenth(losses)) / len(last_tenth(losses)), **terms.end(),
             "lr_scale": state.lr_scale, "last_lr": svi.optimizer.param_groups[0]["lr"],
             "trained_tensors": len(svi.params)}
    save(stats=stats)   # the stage's statistics travel with its last checkpoint
    return {**stats, **series.end()}
