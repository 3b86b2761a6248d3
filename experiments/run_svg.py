"""Training the prediction models (SVG-LP, SVG-FP, SRVP: ``experiments.registry``) from the runner:
``python -m experiments.run --dataset smmnist --model svg-lp`` (or ``svg-fp``, ``srvp``).

The run folder receives config.json, checkpoints/<svg|srvp>.pt (+ best and periodic ones),
tensorboard/, futures.gif (ground truth | best of the samples | a random sample, on val
sequences) and a quick prediction score on val sequences in metrics.json
(``python -m experiments.evaluate --run DIR`` runs the full protocol on the test split).
"""
import copy
import dataclasses
import json
import logging
import time

import torch

import data
from vdsm.batches import ResumableBatches
from vdsm.checkpoint import write_text_atomic
from vdsm.metrics.prediction import mean_with_interval, running_best_of_n
from vdsm.svg_api import ConstantFactors
from vdsm.train import TrainOptions, train_stage
from vdsm.viz import save_gif

from .cli import UsageError
from .registry import api_class, prediction_model

log = logging.getLogger("experiments.run")


def complete_svg_config(config):
    """A prediction model's config.json of any age with every key this version reads (older runs:
    their behaviour)."""
    config = copy.deepcopy(config)
    entry = prediction_model(config["model_name"])
    config["model"] = dataclasses.asdict(entry.config_cls.from_dict(config["model"]))
    config["train"].setdefault("lr_decay_frac", 0.0)
    config.setdefault("seed", 0)
    config.setdefault("train_split", "trainval")  # before the val split, "train" was all training data
    config.setdefault("safety", {"max_bad_steps": 5, "lr_drop": 0.5})
    frames = config["model"]["n_past"] + config["train"]["n_future"]
    config["train"].setdefault("clip_norm", 10.0 / (config["train"]["batch_size"] * frames))  # the old summed bound
    return config


def one_stage_config(args, base, entry, train_keys, count_keys):
    """``base`` (a preset or a saved config) with the command line's model flags and the
    ``train_keys`` training flags applied, the model's sizes and the counts ``count_keys``
    checked (one-stage models: SVG, SRVP, DSA)."""
    config = copy.deepcopy(base)
    config.update(model_name=args.model, seed=args.seed, train_split=args.train_split,
                  safety={"max_bad_steps": args.max_bad_steps, "lr_drop": args.lr_drop})
    config["model"].update(entry.fixed)
    for name in entry.flags():
        value = getattr(args, name, None)
        if value is not None:
            config["model"][name] = value
    for key in train_keys:
        if getattr(args, key, None) is not None:
            config["train"][key] = getattr(args, key)
    config["train"].setdefault("clip_norm", 0.0)
    config["train"].setdefault("lr_decay_frac", 0.0)
    try:
        model = entry.config_cls.from_dict(config["model"])
        model.check()
    except (ValueError, TypeError) as err:
        raise UsageError(f"bad {args.model} hyperparameter: {err}") from None
    config["model"] = dataclasses.asdict(model)
    for key in count_keys:
        if config["train"][key] < 1:
            raise UsageError(f"--{key.replace('_', '-')}={config['train'][key]} must be at least 1")
    if config["train"]["lr"] <= 0:
        raise UsageError(f"--lr={config['train']['lr']} must be positive")
    return config


def svg_config(args, base):
    """``base`` (a preset or a saved config) with the command line's overrides, checked."""
    config = one_stage_config(args, base, prediction_model(args.model),
                              ("steps", "batch_size", "lr", "n_future", "clip_norm"), ("steps", "batch_size", "n_future"))
    if args.eval_samples is not None:
        config["eval"]["samples"] = args.eval_samples
    if config["eval"]["samples"] < 1:
        raise UsageError(f"--eval-samples={config['eval']['samples']} must be at least 1")
    return config


def data_options(args, seq_len):
    options = {"seq_len": seq_len}
    key = data.FOLDER_OPTIONS.get(args.dataset)
    if key and getattr(args, key, None) is not None:
        options[key] = getattr(args, key)
    return options


def train_length(config):
    return config["model"]["n_past"] + config["train"]["n_future"]


def check_svg_data(args, config):
    """The training split of the data, checked against the model (before anything is written)."""
    return training_data(args, config, train_length(config))


def training_data(args, config, seq_len):
    """The training split in sequences of ``seq_len`` frames, its frames checked against the
    model's channels (one-stage models; before anything is written)."""
    train = data.get_dataset(args.dataset, config["train_split"], args.data_root, **data_options(args, seq_len))
    frame = train[0][0]
    if tuple(frame.shape[1:]) != (config["model"]["nc"], 64, 64):
        raise UsageError(f"dataset frames are {tuple(frame.shape[1:])} but the model expects "
                         f"({config['model']['nc']}, 64, 64): pass --nc {frame.shape[1]}")
    if hasattr(train, "seed"):
        train.seed = config["seed"]
    return train


def train_one_stage(api, entry, train, args, config, run_dir, device, writer, rank=0, world_size=1,
                    groups=("z",), monitor=None):
    """Train a one-stage model (``api``: its model and guide) to ``config["train"]["steps"]``, from its
    newest checkpoint if any; the KL groups ``groups`` keep factor 1. Returns the training stats, or
    None when the run had already finished (its newest weights are then loaded)."""
    from .run import checkpoint_manager, without_losses

    checkpoints = checkpoint_manager(args, run_dir, entry.checkpoint)
    resume = checkpoints.load_newest(device) if checkpoints.exists() else None
    t = config["train"]
    if resume is not None and resume["step"] >= t["steps"]:
        api.model.load_state_dict(resume["model"])
        return None
    if monitor is not None:
        monitor.prepare(args, config)
    batches = ResumableBatches(train, t["batch_size"], seed=config["seed"], num_workers=args.num_workers,
                               rank=rank, world_size=world_size, pin_memory=device.type == "cuda")
    options = TrainOptions(steps=t["steps"], lr=t["lr"], clip_norm=t["clip_norm"],
                           max_bad_steps=config["safety"]["max_bad_steps"], lr_drop=config["safety"]["lr_drop"],
                           amp=args.amp, progress=not args.no_progress, schedule_steps=t.get("schedule_steps"))
    return without_losses(train_stage(
        api.model, api.guide, batches, options=options, schedule=ConstantFactors(t["lr_decay_frac"], groups=groups),
        device=device, checkpoints=checkpoints if rank == 0 else None, resume=resume,
        extra_state={"config": config["model"], "stage": entry.checkpoint}, writer=writer, tag=entry.checkpoint,
        on_step=None if monitor is None else lambda step, last: monitor(api, entry.checkpoint, step, last)))


def run_svg(args, config, run_dir, device, rank=0, world_size=1, monitor=None):
    train = check_svg_data(args, config)
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))
    entry = prediction_model(config["model_name"])
    svg = api_class(entry.name)(entry.config_cls.from_dict(config["model"]), device)
    metrics = {"dataset": args.dataset, "model": args.model, "preset": config["preset"],
               "preset_reason": config.get("preset_reason"), "device": str(device)}
    stats = train_one_stage(svg, entry, train, args, config, run_dir, device, writer, rank, world_size,
                            monitor=monitor)
    if stats is not None:
        metrics["train"] = stats
    if rank == 0:
        metrics["quick_prediction"] = quick_prediction(svg, args, config, run_dir)
        metrics["machine"] = args.machine
        write_text_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=1))
        writer.close()


@torch.no_grad()
def quick_prediction(svg, args, config, run_dir, n_sequences=None, n_samples=None):
    """Best-of-N PSNR/SSIM over the training horizon on a few val sequences, and futures.gif
    (the full protocol on the test split, with the evaluation horizon: ``experiments.evaluate``)."""
    svg.eval()
    n_past, n_future = config["model"]["n_past"], config["train"]["n_future"]
    val = data.get_dataset(args.dataset, "val", args.data_root, **data_options(args, n_past + n_future))
    n_sequences = min(n_sequences or args.eval_sequences, len(val), 64)
    n_samples = n_samples or min(config["eval"]["samples"], 5)
    x = torch.stack([val[i][0] for i in range(n_sequences)]).to(svg.device)
    best = running_best_of_n((svg.predict(x[:, :n_past], n_future)[:, n_past:] for _ in range(n_samples)),
                             x[:, n_past:], keep_rows=8)
    (psnr, psnr_ci), (ssim, ssim_ci) = (mean_with_interval(best[k].mean(-1)) for k in ("psnr", "ssim"))
    rows = min(8, n_sequences)
    save_gif(torch.cat([x[:rows], torch.cat([x[:rows, :n_past], best["best_ssim_frames"]], 1),
                        torch.cat([x[:rows, :n_past], best["first_frames"]], 1)], -1), run_dir / "futures.gif")
    out = {"split": "val", "sequences": n_sequences, "samples": n_samples, "n_past": n_past, "n_future": n_future,
           "psnr": float(psnr), "psnr_ci95": float(psnr_ci), "ssim": float(ssim), "ssim_ci95": float(ssim_ci),
           "date": time.strftime("%Y-%m-%d")}
    if config["train_split"] == "trainval":
        out["note"] = "--train-split trainval: these val sequences were trained on"
    return out
