"""The SVI loop: Trace_ELBO, annealing factors per step, progress bar, TensorBoard, checkpoints."""
import itertools
import logging
import math
import time

import torch
from pyro.infer import Trace_ELBO
from tqdm.auto import tqdm

from .checkpoint import save_checkpoint

__all__ = ["train_stage", "infinite_batches"]

log = logging.getLogger(__name__)


def infinite_batches(loader):
    """Frames of every batch of ``loader``, epoch after epoch."""
    for epoch in itertools.count():
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        for x, _ in loader:
            yield x


def train_stage(model, guide, batches, *, steps, schedule, lr, device, checkpoint_path=None,
                checkpoint_every=200, clip_norm=10.0, start_step=0, optimizer_state=None, extra_state=None,
                writer=None, tag="stage", progress=True):
    """Optimise the ELBO of ``model``/``guide`` for ``steps`` steps; returns a dict of statistics.

    Parameters with ``requires_grad=False`` (frozen stage-1 nets) are not optimised.
    ``schedule.factors(progress)`` gives the annealing factors of each step; they go to
    model and guide alike. Non-finite losses skip the step. A checkpoint (model, guide,
    optimiser, step) is written every ``checkpoint_every`` steps and at the end.
    """
    elbo = Trace_ELBO()
    x = next(batches).to(device)
    # one call creates any lazily built parameters of a custom guide (e.g. a Pyro autoguide)
    elbo.differentiable_loss(model, guide, x, factors=schedule.factors(0.0))
    params = [p for p in itertools.chain(model.parameters(), guide.parameters()) if p.requires_grad]
    seen, unique = set(), []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            unique.append(p)
    optimizer = torch.optim.Adam(unique, lr=lr)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)

    def checkpoint(step):
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, dict(extra_state or {}, model=model.state_dict(),
                                                  guide=guide.state_dict(), optimizer=optimizer.state_dict(),
                                                  step=step, steps=steps, rng=torch.get_rng_state()))

    losses, skipped, started = [], 0, time.perf_counter()
    bar = tqdm(range(start_step, steps), desc=tag, disable=not progress, dynamic_ncols=True)
    for step in bar:
        if step > start_step:
            x = next(batches).to(device)
        factors = schedule.factors(step / max(1, steps))
        loss = elbo.differentiable_loss(model, guide, x, factors=factors)
        frames = x.shape[0] * x.shape[1]
        if not torch.isfinite(loss):
            skipped += 1
            log.warning("%s step %d: non-finite loss, step skipped", tag, step)
            continue
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(unique, clip_norm)
        if not torch.isfinite(grad_norm):
            skipped += 1
            log.warning("%s step %d: non-finite gradient, step skipped", tag, step)
            continue
        optimizer.step()
        per_frame = loss.item() / frames
        losses.append(per_frame)
        bar.set_postfix(loss_per_frame=f"{per_frame:.1f}", **{k: f"{v:.3g}" for k, v in factors.items()})
        if writer is not None:
            writer.add_scalar(f"{tag}/loss_per_frame", per_frame, step)
            for k, v in factors.items():
                writer.add_scalar(f"{tag}/factor_{k}", v, step)
        if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            checkpoint(step + 1)
    checkpoint(steps)
    seconds = time.perf_counter() - started
    done = max(1, steps - start_step)
    tail = losses[-max(1, len(losses) // 10):] if losses else [math.nan]
    return {"steps": steps, "seconds": seconds, "seconds_per_step": seconds / done, "skipped_steps": skipped,
            "final_loss_per_frame": sum(tail) / len(tail)}
