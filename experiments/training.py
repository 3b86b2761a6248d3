"""Training a spec's stages into a run folder: the data of each stage, checked against the model;
resume from the stage's newest checkpoint; the frozen networks; ``vdsm.train.train_stage``; then
the spec's ``after_training`` (VDSM: its fitted priors)."""
import logging
from types import SimpleNamespace

import data
from vdsm.batches import ResumableBatches
from vdsm.checkpoint import CheckpointManager
from vdsm.train import TrainOptions, train_stage

from .cli import UsageError, run_data_options

__all__ = ["stage_data", "check_frames", "checkpoint_manager", "run_stage", "train_stages", "without_losses"]

log = logging.getLogger("experiments.run")


def data_options(args, config, stage):
    """The dataset options of ``stage`` (frames per sequence, its flags), the run's recorded ones and
    the raw-data folder (this command line's, else the recorded one)."""
    return run_data_options(args, config, **stage.data_options(config))


def check_frames(x, config):
    nc = config["model"]["nc"]
    if tuple(x.shape[-3:]) != (nc, 64, 64):
        raise UsageError(f"dataset frames are {tuple(x.shape[-3:])} but the model expects ({nc}, 64, 64): "
                         f"pass --nc {x.shape[-3]} or resize the data to 64x64")


def stage_data(args, config, stage, split=None):
    """The training split (or ``split``) in ``stage``'s sequences, its frames checked against the model's
    channels (before anything is written)."""
    ds = data.get_dataset(args.dataset, split or config["train_split"], args.data_root,
                          **data_options(args, config, stage))
    check_frames(ds[0][0], config)
    if hasattr(ds, "seed"):
        ds.seed = config["seed"]
    return ds


def checkpoint_manager(args, run_dir, tag):
    return CheckpointManager(run_dir / "checkpoints", tag, every_steps=args.checkpoint_every,
                             every_minutes=args.checkpoint_minutes, keep_last=args.keep_last)


def without_losses(stats):
    """Statistics for metrics.json: the per-step losses and gradient norms are in TensorBoard already."""
    return {k: v for k, v in stats.items() if k not in ("losses", "grad_norms_per_frame")}


def train_options(args, config, section):
    s = config[section]
    return TrainOptions(steps=s["steps"], lr=s["lr"], clip_norm=s["clip_norm"],
                        max_bad_steps=config["safety"]["max_bad_steps"], lr_drop=config["safety"]["lr_drop"],
                        amp=args.amp, progress=not args.no_progress, schedule_steps=s.get("schedule_steps"))


def run_stage(spec, stage, run, args, config, run_dir, device, writer, rank=0, world_size=1, monitor=None):
    """Train (or resume) one stage; returns (its statistics, whether it trained in this call)."""
    model, guide = stage.pair(run)
    checkpoints = checkpoint_manager(args, run_dir, stage.tag)
    resume = None
    if checkpoints.exists():
        resume = checkpoints.load_newest(device)
        trained = spec.complete_model(resume["config"])
        if trained != config["model"]:
            differ = sorted(k for k in trained if config["model"].get(k) != trained[k])
            saved = ", ".join(f"{k}={trained[k]}" for k in differ)
            raise UsageError(f"checkpoint {checkpoints.latest} was trained with other {', '.join(differ)} "
                             f"(checkpoint: {saved}); resume with the run's own config.json")
        if resume["step"] >= config[stage.section]["steps"]:
            log.info("%s already finished (%d steps), skipped", stage.tag, resume["step"])
            model.load_state_dict(resume["model"])
            guide.load_state_dict(resume["guide"])
            return resume.get("stats", {"steps": resume["step"], "resumed": "already finished"}), False
    for frozen in stage.frozen(run):  # no gradients, not in the optimiser
        frozen.requires_grad_(False)
    section = config[stage.section]
    batches = ResumableBatches(stage_data(args, config, stage), section["batch_size"], seed=config["seed"],
                               num_workers=args.num_workers, rank=rank, world_size=world_size,
                               pin_memory=device.type == "cuda")
    stats = train_stage(model, guide, batches, options=train_options(args, config, stage.section),
                        schedule=stage.schedule(section), device=device,
                        checkpoints=checkpoints if rank == 0 else None, resume=resume,
                        extra_state={"config": config["model"], "stage": stage.tag}, writer=writer, tag=stage.tag,
                        on_step=None if monitor is None else lambda step, last: monitor(run, stage.tag, step, last))
    return stats, True


def train_stages(spec, run, args, config, run_dir, device, writer, rank=0, world_size=1, monitor=None):
    """Train the stages this command line asks for (``spec.cli.stages``; default all), each from its
    newest checkpoint; earlier stages not trained now are loaded from the run folder. Then the
    spec's ``after_training``. Returns the entries for metrics.json."""
    tags = spec.cli.stages(args, spec) if spec.cli is not None else [stage.tag for stage in spec.stages]
    first = [stage.tag for stage in spec.stages].index(tags[0])
    for stage in spec.stages[:first]:   # e.g. VDSM --stage 2: its stage 1 from the same folder
        if not run.load_stage(stage, checkpoint_manager(args, run_dir, stage.tag)):
            raise UsageError(f"{run_dir} has no {stage.title} checkpoint to train {spec.stage(tags[0]).title} on: "
                             f"train {stage.title} first")
    metrics, trained = {}, set()
    for tag in tags:
        stage = spec.stage(tag)
        stats, trained_now = run_stage(spec, stage, run, args, config, run_dir, device, writer, rank, world_size,
                                       monitor)
        metrics[stage.section] = without_losses(stats)
        if trained_now:
            trained.add(tag)
    metrics["trained_now"] = sorted(trained)   # the stages this call trained (resumed or new steps)
    run.use_stage(tags[-1])
    if spec.after_training is not None:
        last = spec.stage(tags[-1])
        context = SimpleNamespace(run_dir=run_dir, trained=trained, rank=rank, seed=config["seed"],
                                  train_split=config["train_split"],
                                  dataset=lambda split: stage_data(args, config, last, split))
        metrics.update(spec.after_training(run, context))
    return metrics
