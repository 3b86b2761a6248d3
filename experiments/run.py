"""Train a model and write a run folder: ``python -m experiments.run --dataset sprites [--model vdsm]``;
continue one with ``python -m experiments.run --resume DIR``.

Any model of ``models.registry`` (``--model vdsm``, ``svg-lp``, ``svg-fp``, ``srvp``, ``dsa``, ``cdsvae``) or one
defined outside the library (``--model my_package.my_module:SPEC``, a ``models.spec.ModelSpec``)
trains the same way: its spec's stages in order (VDSM: stage 1, then stage 2), each from its newest
checkpoint. The run folder holds config.json, checkpoints/, tensorboard/ and metrics.json, and the
val-split pictures its evaluations call for (``experiments.report``: reconstructions, samples,
identity swaps and action transfers for the models the judge scores; futures for the prediction
models). The test split is for ``experiments.evaluate``'s final report.

Every flag either changes what runs or is refused with a one-line error (exit 2) before
anything is written: a flag of another model, a data folder of another dataset, and with
``--resume`` any flag that contradicts the saved run (``--resume DIR`` alone continues the run: its
dataset and model are read from its config.json; a different ``--model`` is refused). ``--resume DIR --steps N`` (or
``--stageN-steps N``) beyond the saved count extends the run: the annealing schedules and the
learning-rate decay keep their original length, so the added steps use their final values.
"""
import json
import logging
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import pyro
import torch

from vdsm.checkpoint import write_text_atomic
from vdsm.runfolder import RunLock, check_folder_can_be_made, holds_a_run, read_metrics, remove_temp_files
from vdsm.runtime import keep_freed_memory, machine_line, machine_summary
from vdsm.stopping import Interrupted

from .cli import UsageError, choose_device, cli_main
from .config import prepare, trained_as
from .flags import build_parser, check_flags, given_flags, help_context
from .report import report
from .context import RunContext
from .training import train_stages

__all__ = ["run", "main", "build_parser", "check_flags", "given_flags", "prepare", "init_distributed"]

log = logging.getLogger("experiments.run")


def init_distributed(device):
    """(rank, world_size, device) from torchrun's environment; a plain run is rank 0 of 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, device
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device(f"cuda:{local_rank}")
        torch.cuda.set_device(device)
    return dist.get_rank(), world_size, device


def run(args, monitor=None):
    """Train (and draw) one run; ``monitor(run, stage, step, last)``, if given, is called after every
    optimiser step; its ``evaluation`` must be one of the spec's (``experiments.time_to_quality``:
    the judge protocols; ``experiments.prediction_quality``: prediction, with ``prepare(ctx)``)."""
    args.given = given_flags(args)
    check_flags(args, args.given)
    spec = args.spec
    rank0 = int(os.environ.get("RANK", "0")) == 0
    logging.basicConfig(level=logging.INFO if rank0 else logging.ERROR, format="%(message)s")
    if args.out and not args.resume:
        check_folder_can_be_made(args.out)
    device = choose_device(args.device)
    if monitor is not None and monitor.evaluation not in spec.evaluations:
        raise UsageError(f"this quality monitor does not score {args.model} runs")
    run_dir, config, extended = prepare(args, device)
    if monitor is not None and config["train_split"] == "trainval":
        raise UsageError("the quality monitor scores val sequences, which --train-split trainval trains on")
    ctx = RunContext.from_args(args, config, device, monitor)
    train_data = ctx.dataset(spec.stage(ctx.stages[0]))  # fail on bad data before anything is written
    if run_dir is None and hasattr(train_data, "pinned_options"):   # e.g. the split by video, fixed for the run
        config["data_options"] = {**config.get("data_options", {}), **train_data.pinned_options}
        config["data_summary"] = train_data.summary
        if rank0:
            print(f"data: {train_data.describe_split()}", flush=True)
    rank, world_size, device = init_distributed(device)
    check_batch_sizes(spec, config, len(train_data), world_size)
    if run_dir is None:
        run_dir = Path(args.out or f"runs/{args.dataset}-{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        refuse_existing_run(run_dir)
    ctx = ctx.replace(run_dir=run_dir, device=device, rank=rank, world_size=world_size)
    lock = RunLock(run_dir, "training").acquire() if rank == 0 else None
    failed = True
    try:
        if rank == 0:
            if not args.resume:
                refuse_existing_run(run_dir)   # again under the lock: another run may have started there
            remove_temp_files(run_dir)
        train_in(ctx, resumed=bool(args.resume), extended=extended)
        failed = False
    except Interrupted as stop:
        failed = False
        stop.hint = f"continue with: python -m experiments.run --resume {run_dir}"
        raise
    finally:
        if lock is not None:
            lock.release(remove_empty=failed)   # a folder this run made and left empty goes
    return run_dir


def refuse_existing_run(run_dir):
    what = holds_a_run(run_dir)
    if what:
        raise UsageError(f"--out {run_dir} already holds a run ({what}): continue it with --resume {run_dir}, or "
                         f"pass --out with a new folder")


def check_batch_sizes(spec, config, n_sequences, world_size):
    for stage in spec.stages:
        batch_size = config[stage.section]["batch_size"]
        if batch_size > n_sequences // world_size:
            raise UsageError(f"--batch-size {batch_size} ({stage.section}) is larger than the {n_sequences // world_size} "
                             f"{config['train_split']} sequences{' per process' if world_size > 1 else ''}: lower "
                             f"--batch-size")


def train_in(ctx, resumed, extended):
    run_dir, config = ctx.run_dir, ctx.config
    if ctx.rank == 0 and (not resumed or extended):
        write_text_atomic(run_dir / "config.json", json.dumps(config, indent=1))
    machine = machine_summary(ctx.device, amp=ctx.amp) if ctx.rank == 0 else None
    if ctx.rank == 0:
        what = f"resuming {run_dir}" if resumed else f"run folder {run_dir}"
        print(f"{what}: {trained_as(config)} on {config['dataset']}, preset {config['preset']} "
              f"({config.get('preset_reason', 'saved run')})"
              + "".join(f"; {k} extended {a} -> {b} steps" for k, (a, b) in extended.items()), flush=True)
        # every time this run reports is only meaningful beside the machine it was measured on
        print(machine_line(machine), flush=True)
    if ctx.world_size > 1:
        torch.distributed.barrier()
    pyro.clear_param_store()  # guides written with pyro.param start from their own initial values
    torch.manual_seed(config["seed"])
    np.random.seed(config["seed"])
    random.seed(config["seed"])
    if ctx.monitor is not None and hasattr(ctx.monitor, "prepare"):
        ctx.monitor.prepare(ctx)
    train_and_report(ctx, machine)
    if ctx.rank == 0:
        log.info("run folder: %s", run_dir)
    if ctx.world_size > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def train_and_report(ctx, machine):
    writer = None
    if ctx.rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(ctx.run_dir / "tensorboard"))
    ctx = ctx.replace(writer=writer)
    config, spec = ctx.config, ctx.spec
    trained = spec.run_cls.from_config(config, ctx.device)
    metrics, started = {"dataset": config["dataset"], "model": trained_as(config),
                        "preset": config["preset"], "preset_reason": config.get("preset_reason"),
                        "device": str(ctx.device), "world_size": ctx.world_size}, time.time()
    metrics.update(train_stages(ctx, trained))
    if ctx.rank == 0:
        metrics.update(report(trained, ctx))
        metrics["wall_seconds"], metrics["machine"] = time.time() - started, machine
        metrics["train_seconds"] = sum(metrics[s.section].get("seconds", 0.0) for s in spec.stages if s.section in metrics)
        write_text_atomic(ctx.run_dir / "metrics.json", json.dumps(merge_metrics(ctx.run_dir, metrics), indent=1))
        writer.close()


BEFORE_RESUME_NOTE = ("written by experiments.evaluate / damage / fit_prior before --resume trained this run further: "
                      "they describe the earlier weights, as do the tables and pictures they left in this folder; "
                      "run them again")


def merge_metrics(run_dir, metrics):
    """``metrics`` (this call's training and report) with what metrics.json held besides: kept as it was
    when this call trained nothing, moved to ``before_resume`` (with a note) when it trained further."""
    previous = read_metrics(run_dir)
    others = {k: v for k, v in previous.items() if k not in metrics and k != "before_resume"}
    if metrics.get("trained_now") and others:
        return {**metrics, "before_resume": {"note": BEFORE_RESUME_NOTE, **previous.get("before_resume", {}), **others}}
    return {**metrics, **others, **({"before_resume": previous["before_resume"]} if "before_resume" in previous else {})}


def main(argv=None):
    keep_freed_memory()  # allocator setting for the whole process (see vdsm.runtime)
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    return cli_main(build_parser(*help_context(argv)), run, argv)


if __name__ == "__main__":
    sys.exit(main())
