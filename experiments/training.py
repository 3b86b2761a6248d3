"""Training a spec's stages into a run folder: resume from each stage's newest checkpoint, the frozen
networks, ``vdsm.train.train_stage`` with the run's hooks; then the spec's ``after_training`` (VDSM:
its fitted priors). Everything comes from one ``experiments.context.RunContext``."""
import logging
from types import SimpleNamespace

from vdsm.batches import ResumableBatches
from vdsm.train import train_stage
from vdsm.train_hooks import OnStep, TensorBoardLog

from .cli import UsageError

__all__ = ["run_stage", "train_stages", "without_losses"]

log = logging.getLogger("experiments.run")


def without_losses(stats):
    """Statistics for metrics.json: the per-step losses and gradient norms are in TensorBoard already."""
    return {k: v for k, v in stats.items() if k not in ("losses", "grad_norms_per_frame")}


def _resume_point(ctx, stage, checkpoints):
    """The newest checkpoint of ``stage`` (None without one), checked against the run's model config."""
    if not checkpoints.exists():
        return None
    resume = checkpoints.load_newest(ctx.device)
    trained, config = ctx.spec.complete_model(resume["config"]), ctx.config["model"]
    if trained != config:
        differ = sorted(k for k in trained if config.get(k) != trained[k])
        saved = ", ".join(f"{k}={trained[k]}" for k in differ)
        raise UsageError(f"checkpoint {checkpoints.latest} was trained with other {', '.join(differ)} "
                         f"(checkpoint: {saved}); resume with the run's own config.json")
    return resume


def run_stage(ctx, stage, run):
    """Train (or resume) one stage; returns (its statistics, whether it trained in this call)."""
    model, guide = stage.pair(run)
    checkpoints = ctx.checkpoints(stage.tag)
    resume = _resume_point(ctx, stage, checkpoints)
    if resume is not None and resume["step"] >= ctx.config[stage.section]["steps"]:
        log.info("%s already finished (%d steps), skipped", stage.tag, resume["step"])
        model.load_state_dict(resume["model"])
        guide.load_state_dict(resume["guide"])
        return resume.get("stats", {"steps": resume["step"], "resumed": "already finished"}), False
    for frozen in stage.frozen(run):  # no gradients, not in the optimiser
        frozen.requires_grad_(False)
    section = ctx.config[stage.section]
    batches = ResumableBatches(ctx.dataset(stage), section["batch_size"], seed=ctx.config["seed"],
                               num_workers=ctx.num_workers, rank=ctx.rank, world_size=ctx.world_size,
                               pin_memory=ctx.device.type == "cuda")
    hooks = [TensorBoardLog(ctx.writer, stage.tag)] if ctx.writer is not None else []
    if ctx.monitor is not None:
        hooks.append(OnStep(lambda step, last: ctx.monitor(run, stage.tag, step, last)))
    stats = train_stage(model, guide, batches, options=ctx.train_options(stage.section),
                        schedule=stage.schedule(section), device=ctx.device,
                        checkpoints=checkpoints if ctx.rank == 0 else None, resume=resume,
                        extra_state={"config": ctx.config["model"], "stage": stage.tag}, tag=stage.tag, hooks=hooks)
    return stats, True


def train_stages(ctx, run):
    """Train the stages of ``ctx.stages``, each from its newest checkpoint; earlier stages not trained
    now are loaded from the run folder. Then the spec's ``after_training``. Returns the entries for
    metrics.json."""
    spec, tags = ctx.spec, ctx.stages
    first = [stage.tag for stage in spec.stages].index(tags[0])
    for stage in spec.stages[:first]:   # e.g. VDSM --stage 2: its stage 1 from the same folder
        if not run.load_stage(stage, ctx.checkpoints(stage.tag)):
            raise UsageError(f"{ctx.run_dir} has no {stage.title} checkpoint to train {spec.stage(tags[0]).title} "
                             f"on: train {stage.title} first")
    metrics, trained = {}, set()
    for tag in tags:
        stage = spec.stage(tag)
        stats, trained_now = run_stage(ctx, stage, run)
        metrics[stage.section] = without_losses(stats)
        if trained_now:
            trained.add(tag)
    metrics["trained_now"] = sorted(trained)   # the stages this call trained (resumed or new steps)
    run.use_stage(tags[-1])
    if spec.after_training is not None:
        last = spec.stage(tags[-1])
        context = SimpleNamespace(run_dir=ctx.run_dir, trained=trained, rank=ctx.rank, seed=ctx.config["seed"],
                                  train_split=ctx.config["train_split"],
                                  dataset=lambda split: ctx.dataset(last, split))
        metrics.update(spec.after_training(run, context))
    return metrics
