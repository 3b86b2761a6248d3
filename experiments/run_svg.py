"""Training SVG-LP / SVG-FP from the runner: ``python -m experiments.run --dataset smmnist --model svg-lp``.

The run folder receives config.json, checkpoints/svg.pt (+ best and periodic ones),
tensorboard/, futures.gif (ground truth | best of the samples | random samples) and a
quick prediction score in metrics.json (``python -m experiments.evaluate --run DIR`` runs
the full protocol).
"""
import dataclasses
import json
import logging
import time
from pathlib import Path

import torch

import data
from models.svg import SVGConfig
from vdsm.batches import ResumableBatches
from vdsm.checkpoint import CheckpointManager, load_checkpoint
from vdsm.metrics.prediction import best_of_n, mean_with_interval
from vdsm.svg_api import SVG, ConstantFactors
from vdsm.train import TrainOptions, train_stage
from vdsm.viz import save_gif

from .cli import UsageError, preset_config
from .configs import load_svg_preset

log = logging.getLogger("experiments.run")
DATA_OPTIONS = {"smmnist": "mnist", "mmnist": "mnist", "kth": "kth", "bair": "bair"}


def add_svg_arguments(parser, existing):
    """Flags for SVGConfig fields that the VDSM flags do not already cover."""
    group = parser.add_argument_group("SVG hyperparameters (--model svg-lp / svg-fp)")
    group.add_argument("--n-future", type=int, help="frames predicted during training")
    group.add_argument("--eval-samples", type=int, help="futures sampled per test sequence")
    for f in dataclasses.fields(SVGConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name in existing or f.name == "learned_prior":
            continue
        if f.type is bool or isinstance(f.default, bool):
            group.add_argument(flag, action="store_true", default=None)
        else:
            group.add_argument(flag, type=type(f.default))


def resolve_svg_config(args):
    preset, config = preset_config(args, load_svg_preset)
    config.update(preset=preset, dataset=args.dataset, seed=args.seed, model_name=args.model)
    config["model"]["learned_prior"] = args.model == "svg-lp"
    for f in dataclasses.fields(SVGConfig):
        value = getattr(args, f.name, None)
        if value is not None and f.name != "learned_prior":
            config["model"][f.name] = value
    for key, flag in (("steps", "steps"), ("batch_size", "batch_size"), ("lr", "lr"), ("n_future", "n_future")):
        if getattr(args, flag) is not None:
            config["train"][key] = getattr(args, flag)
    if args.eval_samples is not None:
        config["eval"]["samples"] = args.eval_samples
    try:
        SVGConfig.from_dict(config["model"]).check()
    except (ValueError, TypeError) as err:
        raise UsageError(f"bad SVG hyperparameter: {err}") from None
    for key in ("steps", "batch_size", "n_future"):
        if config["train"][key] < 1:
            raise UsageError(f"--{key.replace('_', '-')}={config['train'][key]} must be at least 1")
    return config


def _data_options(args, seq_len):
    options = {"seq_len": seq_len}
    key = DATA_OPTIONS.get(args.dataset)
    if key and getattr(args, key, None) is not None:
        options[key] = getattr(args, key)
    return options


def run_svg(args, device, rank=0, world_size=1):
    config = json.loads((Path(args.resume) / "config.json").read_text()) if args.resume else resolve_svg_config(args)
    train_len = config["model"]["n_past"] + config["train"]["n_future"]
    train = data.get_dataset(args.dataset, "train", args.data_root, **_data_options(args, train_len))
    frame = train[0][0]
    if tuple(frame.shape[1:]) != (config["model"]["nc"], 64, 64):
        raise UsageError(f"dataset frames are {tuple(frame.shape[1:])} but the model expects "
                         f"({config['model']['nc']}, 64, 64): pass --nc {frame.shape[1]}")
    if hasattr(train, "seed"):
        train.seed = args.seed
    run_dir = Path(args.resume or args.out or f"runs/{args.dataset}-{args.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    if rank == 0 and not args.resume:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config, indent=1))
    torch.manual_seed(args.seed)
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))
    svg = SVG(SVGConfig.from_dict(config["model"]), device)
    checkpoints = CheckpointManager(run_dir / "checkpoints", "svg", every_steps=args.checkpoint_every,
                                    every_minutes=args.checkpoint_minutes, keep_last=args.keep_last)
    resume = load_checkpoint(checkpoints.latest, device) if checkpoints.latest.is_file() else None
    metrics = {"dataset": args.dataset, "model": args.model, "preset": config["preset"], "device": str(device)}
    if resume is None or resume["step"] < config["train"]["steps"]:
        batches = ResumableBatches(train, config["train"]["batch_size"], seed=args.seed, num_workers=args.num_workers,
                                   rank=rank, world_size=world_size, pin_memory=device.type == "cuda")
        options = TrainOptions(steps=config["train"]["steps"], lr=config["train"]["lr"], clip_norm=args.clip_norm,
                               max_bad_steps=args.max_bad_steps, lr_drop=args.lr_drop, amp=args.amp,
                               progress=not args.no_progress)
        metrics["train"] = without_losses(train_stage(svg.model, svg.guide, batches, options=options, schedule=ConstantFactors(),
                                       device=device, checkpoints=checkpoints if rank == 0 else None, resume=resume,
                                       extra_state={"config": config["model"], "stage": "svg"}, writer=writer,
                                       tag="svg"))
    else:
        svg.model.load_state_dict(resume["model"])
    if rank == 0:
        metrics["quick_prediction"] = quick_prediction(svg, args, config, run_dir)
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
        writer.close()
        log.info("run folder: %s", run_dir)
    return run_dir


@torch.no_grad()
def quick_prediction(svg, args, config, run_dir, n_sequences=None, n_samples=None):
    """Best-of-N PSNR/SSIM over the training horizon on a few test sequences, and futures.gif
    (the full protocol, with the evaluation horizon: ``experiments.evaluate``)."""
    n_past, n_future = config["model"]["n_past"], config["train"]["n_future"]
    test = data.get_dataset(args.dataset, "test", args.data_root, **_data_options(args, n_past + n_future))
    n_sequences = min(n_sequences or args.eval_sequences, len(test), 64)
    n_samples = n_samples or min(config["eval"]["samples"], 5)
    x = torch.stack([test[i][0] for i in range(n_sequences)]).to(svg.device)
    samples = torch.stack([svg.predict(x[:, :n_past], n_future) for _ in range(n_samples)])
    best = best_of_n(samples[:, :, n_past:], x[:, n_past:])
    (psnr, psnr_ci), (ssim, ssim_ci) = (mean_with_interval(best[k].mean(-1)) for k in ("psnr", "ssim"))
    rows = torch.arange(min(8, n_sequences))
    chosen = samples[best["best_ssim_sample"][rows], rows]
    save_gif(torch.cat([x[rows], chosen, samples[0, rows]], -1), run_dir / "futures.gif")
    return {"test_sequences": n_sequences, "samples": n_samples, "n_past": n_past, "n_future": n_future,
            "psnr": float(psnr), "psnr_ci95": float(psnr_ci), "ssim": float(ssim), "ssim_ci95": float(ssim_ci)}


def without_losses(stats):
    """Statistics for metrics.json: the per-step losses are in TensorBoard already."""
    return {k: v for k, v in stats.items() if k != "losses"}
