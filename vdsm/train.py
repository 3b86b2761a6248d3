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
"""
import copy
import itertools
import logging
import math
import random
import signal
import statistics
import time
from dataclasses import dataclass

import numpy as np
import pyro
import torch
import torch.distributed as dist
import torch.nn as nn
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.poutine.messenger import Messenger
from tqdm.auto import tqdm

from . import stopping
from .checkpoint import CheckpointError
from .handlers import MODULE_SEPARATOR

__all__ = ["TrainOptions", "train_stage", "ELBOLoss", "FactorTerms", "rng_state", "set_rng_state", "param_store_state",
           "load_param_store_state", "forked_rng"]

log = logging.getLogger(__name__)


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


def _distributed():
    return dist.is_available() and dist.is_initialized()


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
    # module parameters (in checkpoints written before they were left out) load with the state dicts
    saved = {k: v for k, v in saved.items() if MODULE_SEPARATOR not in k}
    missing = sorted(set(saved) - set(store))
    if missing:
        raise CheckpointError(f"the checkpoint holds Pyro params {', '.join(missing[:5])} that this model and "
                              f"guide do not create: resume with the run's own config.json and guide")
    with torch.no_grad():
        for name, value in saved.items():
            store[name].copy_(value.to(store[name].device))


def _trainable(loss_module, run_once):
    """Every tensor to optimise: ``nn.Module`` parameters of the pair and the unconstrained values of
    the Pyro param sites that one evaluation (``run_once``) reads, those that require a gradient."""
    with poutine.trace(param_only=True) as capture:
        run_once()
    pyro_params = [site["value"].unconstrained() for site in capture.trace.nodes.values()]
    return list({id(p): p for p in [*loss_module.parameters(), *pyro_params] if p.requires_grad}.values())


def train_stage(model, guide, batches, *, options, schedule, device, checkpoints=None, resume=None,
                extra_state=None, writer=None, tag="stage", fault_injector=None, on_step=None):
    """Optimise the ELBO of ``model``/``guide`` for ``options.steps`` steps; returns statistics.

    :param batches: a :class:`vdsm.batches.ResumableBatches` (or any iterator of frame batches;
        exact resume needs ``state()``/``load_state()``).
    :param checkpoints: a :class:`vdsm.checkpoint.CheckpointManager` or None.
    :param resume: a checkpoint dict written by this function, to continue from.
    :param fault_injector: ``f(step, loss) -> loss`` used by tests to inject faults.
    :param on_step: ``f(step, last)`` called after every optimiser step (e.g. a quality monitor).
    """
    device = torch.device(device)
    world = dist.get_world_size() if _distributed() else 1
    rank = dist.get_rank() if _distributed() else 0
    loss_module = elbo_loss = ELBOLoss(model, guide)
    # One call on zeros creates lazily built parameters (e.g. of a Pyro autoguide) without
    # consuming data or the global RNG, so a resumed run sees the same random numbers.
    if hasattr(batches, "dataset"):
        shape = (batches.batch_size, *batches.dataset[0][0].shape)
    else:  # a plain iterator: peek at its first batch and put it back
        first = next(batches)
        batches, shape = itertools.chain([first], batches), first.shape
    with forked_rng(device):
        params = _trainable(loss_module, lambda: loss_module(torch.zeros(shape, device=device), schedule.factors(0.0)))
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        loss_module = DistributedDataParallel(loss_module, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(params, lr=options.lr)
    start, lr_scale, smoothed = 0, 1.0, None
    schedule_steps = options.schedule_steps or options.steps

    def progress(step):
        return min(1.0, step / schedule_steps)

    def state(step, **more):
        return dict(extra_state or {}, model=model.state_dict(), guide=guide.state_dict(),
                    optimizer=optimizer.state_dict(), step=step, steps=options.steps, lr_scale=lr_scale,
                    loss=smoothed, data=batches.state() if hasattr(batches, "state") else None, rng=rng_state(),
                    param_store=param_store_state(), schedule_steps=schedule_steps,
                    train_seconds=seconds_before + time.perf_counter() - started, events=events,
                    rollbacks=rollbacks, clipped_steps=clipped_steps, **more)

    def restore(saved):
        model.load_state_dict(saved["model"])
        guide.load_state_dict(saved["guide"])
        load_param_store_state(saved.get("param_store", {}))
        optimizer.load_state_dict(saved["optimizer"])
        for group in optimizer.param_groups:
            group["lr"] = options.lr * saved["lr_scale"]
        return saved["step"], saved["lr_scale"], saved["loss"]

    seconds_before, started = 0.0, time.perf_counter()
    if resume is not None:
        seconds_before = float(resume.get("train_seconds", 0.0))
        start, lr_scale, smoothed = restore(resume)
        if resume.get("data") is not None and hasattr(batches, "load_state"):
            batches.load_state(resume["data"])
        set_rng_state(resume["rng"])

    events, losses, grad_norms, bad, rollbacks, clipped_steps = [], [], [], 0, 0, 0
    terms = {}   # factor site -> its per-frame contribution to the loss at each step
    if resume is not None:   # the events of the stage's earlier calls
        events = list(resume.get("events", []))
        rollbacks, clipped_steps = int(resume.get("rollbacks", 0)), int(resume.get("clipped_steps", 0))
    # what a rollback returns to before the first checkpoint exists: the weights the stage started from
    initial = copy.deepcopy({k: v for k, v in state(start).items() if k not in ("data", "rng")})
    started = time.perf_counter()
    bar = tqdm(total=options.steps, initial=start, desc=tag, disable=not options.progress or rank != 0,
               dynamic_ncols=True)
    step = start
    with stopping.deferred():   # a signal ends the step in progress, then stops below
        while step < options.steps:
            x = next(batches).to(device, non_blocking=True)
            factors = schedule.factors(progress(step))
            for group in optimizer.param_groups:  # rollbacks lower lr_scale; the schedule shapes it over the stage
                group["lr"] = options.lr * lr_scale * schedule.lr_factor(progress(step))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=options.amp):
                loss = loss_module(x, factors)
            if fault_injector is not None:
                loss = fault_injector(step, loss)
            ok = torch.isfinite(loss.detach()).float()
            if world > 1:  # every rank skips together, or DDP's gradient all-reduce would hang
                dist.all_reduce(ok, op=dist.ReduceOp.MIN)
            grad_norm = None
            frames = x.shape[0] * x.shape[1] * world   # the gradient is that of the combined batch's loss
            if ok.item():
                optimizer.zero_grad(set_to_none=True)
                (loss * world).backward()
                # the bound applies to the per-frame loss's gradient, i.e. to the summed one at clip_norm * frames
                bound = options.clip_norm * frames if options.clip_norm > 0 else math.inf
                grad_norm = torch.nn.utils.clip_grad_norm_(params, bound) / frames
                ok = torch.isfinite(grad_norm)
            if not ok:
                bad += 1
                events.append({"step": step, "event": "non-finite loss or gradient: step skipped"})
                log.warning("%s step %d: non-finite loss or gradient, step skipped (%d in a row)", tag, step, bad)
                if bad >= options.max_bad_steps:
                    step, lr_scale, smoothed, bad = _roll_back(checkpoints, restore, initial, optimizer, options, lr_scale,
                                                               step, tag, events, device)
                    rollbacks += 1
                    if rollbacks > options.max_rollbacks:
                        raise RuntimeError(f"{tag}: {rollbacks} rollbacks without recovering; lower --lr and resume")
                    bar.n = step
                continue
            optimizer.step()
            bad = 0
            clipped = options.clip_norm > 0 and grad_norm.item() > options.clip_norm
            clipped_steps += clipped
            grad_norms.append(grad_norm.item())
            per_frame = loss.item() / (x.shape[0] * x.shape[1])
            smoothed = per_frame if smoothed is None else 0.98 * smoothed + 0.02 * per_frame
            losses.append(per_frame)
            # one transfer for all terms (the loss's .item() above already waited for the step)
            values = torch.stack(list(elbo_loss.last_terms.values())).tolist() if elbo_loss.last_terms else []
            step_terms = {name: value / (x.shape[0] * x.shape[1]) for name, value in zip(elbo_loss.last_terms, values)}
            for name, value in step_terms.items():
                terms.setdefault(name, []).append(value)
            step += 1
            bar.update(1)
            if rank == 0 and step - start == options.report_after and step < options.steps:
                log.info("%s", _expected_end(tag, time.perf_counter() - started, step - start, options.steps - step))
            if rank == 0:
                bar.set_postfix(loss_per_frame=f"{per_frame:.1f}", **{k: f"{v:.3g}" for k, v in factors.items()})
                if writer is not None:
                    writer.add_scalar(f"{tag}/loss_per_frame", per_frame, step)
                    writer.add_scalar(f"{tag}/grad_norm_per_frame", float(grad_norm), step)
                    writer.add_scalar(f"{tag}/clipped", float(clipped), step)
                    writer.add_scalar(f"{tag}/lr", optimizer.param_groups[0]["lr"], step)
                    for k, v in factors.items():
                        writer.add_scalar(f"{tag}/factor_{k}", v, step)
                    for name, value in step_terms.items():
                        writer.add_scalar(f"{tag}/term_{name}", value, step)
                if checkpoints is not None and step < options.steps and checkpoints.due(step, time.monotonic()):
                    checkpoints.save(step, state(step), smoothed)
            if on_step is not None:
                on_step(step, step == options.steps)
            if step < options.steps and _stop_requested(world, device):
                path = None
                if rank == 0 and checkpoints is not None:
                    path = checkpoints.save(step, state(step), smoothed)
                bar.close()
                raise stopping.Interrupted(stopping.requested() or signal.SIGTERM, path, step)
    bar.close()
    seconds = time.perf_counter() - started
    tail = _last_tenth(losses) if losses else [smoothed if smoothed is not None else math.nan]
    final_terms = {name: statistics.fmean(_last_tenth(values)) for name, values in terms.items()}
    stats = {"steps": options.steps, "seconds": seconds_before + seconds, "seconds_this_call": seconds,
             "resumed_at_step": start if resume is not None else None,
             "seconds_per_step": seconds / max(1, len(losses)),
             "skipped_steps": sum(e["event"].endswith("skipped") for e in events), "rollbacks": rollbacks,
             "clip_norm_per_frame": options.clip_norm, "clipped_steps": clipped_steps,
             "events": events, "final_loss_per_frame": sum(tail) / len(tail), "final_terms_per_frame": final_terms,
             "lr_scale": lr_scale, "last_lr": optimizer.param_groups[0]["lr"], "trained_tensors": len(params)}
    if rank == 0 and checkpoints is not None:   # the stage's statistics travel with its last checkpoint
        checkpoints.save(options.steps, state(options.steps, stats=stats), smoothed)
    return {**stats, "losses": losses, "grad_norms_per_frame": grad_norms}


def _last_tenth(values):
    """The last tenth of a per-step series (at least one value): what the final statistics average."""
    return values[-max(1, len(values) // 10):]


def _stop_requested(world, device):
    """Whether a signal asked this process, or under DDP any process, to stop (all stop at the same
    step, or the next all-reduce would hang)."""
    asked = stopping.requested() is not None
    if world == 1:
        return asked
    flag = torch.tensor([float(asked)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _expected_end(tag, seconds, done, left):
    """``stage1: 0.193 s/step over its first 100 steps; 6300 steps left, ends about 14:02 (in 20.3 min)``."""
    per_step = seconds / done
    end = time.time() + per_step * left
    when = time.strftime("%H:%M" if per_step * left < 12 * 3600 else "%Y-%m-%d %H:%M", time.localtime(end))
    return (f"{tag}: {per_step:.3f} s/step over its first {done} steps; {left} steps left, ends about {when} "
            f"(in {per_step * left / 60:.1f} min)")


def _roll_back(checkpoints, restore, initial, optimizer, options, lr_scale, step, tag, events, device):
    """Back to the newest checkpoint, or without one to the weights the stage started from, with the
    learning rate lowered by ``lr_drop``."""
    if checkpoints is not None and checkpoints.exists():
        saved = checkpoints.load_newest(device)
        step, _, smoothed = restore(saved)
        where = f"checkpoint of step {step}"
    else:
        step, _, smoothed = restore(copy.deepcopy(initial))
        where = f"the weights the stage started from (step {step}; no checkpoint yet)"
    lr_scale *= options.lr_drop
    for group in optimizer.param_groups:
        group["lr"] = options.lr * lr_scale
    events.append({"step": step, "event": f"rolled back to {where}, lr x{lr_scale:g}"})
    log.warning("%s: rolled back to %s, learning rate now %g", tag, where, options.lr * lr_scale)
    return step, lr_scale, smoothed, 0
