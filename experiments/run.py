"""Train VDSM (stage 1, then stage 2), evaluate, and write a run folder.

    python -m experiments.run --dataset sprites [--preset cpu|paper] [--out DIR] ...

The run folder holds config.json, checkpoints/, tensorboard/, reconstructions.png,
samples.gif, identity_swap.png, action_transfer.png and metrics.json.
"""
import argparse
import dataclasses
import json
import logging
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

import data
from models.vdsm import VDSMConfig
from vdsm.annealing import Schedule
from vdsm.api import VDSM, guide_factory
from vdsm.batches import ResumableBatches
from vdsm.checkpoint import CheckpointManager, load_checkpoint
from vdsm.runtime import keep_freed_memory
from vdsm.train import TrainOptions, train_stage
from vdsm.viz import save_gif, save_grid, sequence_strip

from .cli import UsageError, cli_main, preset_config
from .configs import load_preset
from .run_svg import without_losses, add_svg_arguments, run_svg

log = logging.getLogger("experiments.run")
MODELS = ("vdsm", "svg-lp", "svg-fp")
DATA_OPTIONS = {"sprites": "sprites_layers", "sprites-dsa": "lpc_layers", "smmnist": "mnist", "mug": "mug"}


def build_parser():
    p = argparse.ArgumentParser(prog="python -m experiments.run", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", required=True, help=f"one of {', '.join(data.DATASETS)}")
    p.add_argument("--model", default="vdsm", help=f"one of {', '.join(MODELS)}")
    p.add_argument("--stage", default="both", choices=["1", "2", "both"], help="which training stage(s) to run")
    p.add_argument("--preset", default=None, help="cpu or paper (default: paper on a GPU, cpu otherwise)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when available)")
    p.add_argument("--steps", type=int, help="steps of each stage (overrides the preset)")
    p.add_argument("--stage1-steps", type=int)
    p.add_argument("--stage2-steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seq-len", type=int, help="frames per sequence (stage 1 pairs two of them)")
    p.add_argument("--out", default=None, help="run folder (default runs/<dataset>-<time>)")
    p.add_argument("--resume", default=None, help="continue the run in this folder")
    p.add_argument("--guide2", default=None, metavar="MODULE:FACTORY",
                   help="custom stage-2 guide: a factory taking the VDSM object (see guides/examples.py)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=1, help="DataLoader worker processes")
    p.add_argument("--data-root", default=None, help="downloads and caches (default $VDSM_DATA_ROOT or ./data_cache)")
    p.add_argument("--sprites-layers", default=None, help="folder of Sprites layer sheets")
    p.add_argument("--lpc-layers", default=None, help="folder of LPC layers for sprites-dsa")
    p.add_argument("--mnist", default=None, help="MNIST .npz or torchvision folder")
    p.add_argument("--mug", default=None, help="MUG .npz")
    p.add_argument("--kth", default=None, help="KTH frame folders")
    p.add_argument("--bair", default=None, help="BAIR frame folders")
    p.add_argument("--eval-sequences", type=int, default=256, help="test sequences used for metrics.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    safety = p.add_argument_group("checkpoints and fault handling")
    safety.add_argument("--checkpoint-every", type=int, default=200, help="steps between checkpoints")
    safety.add_argument("--checkpoint-minutes", type=float, default=10.0, help="minutes between checkpoints")
    safety.add_argument("--keep-last", type=int, default=3, help="periodic checkpoints kept per stage")
    safety.add_argument("--clip-norm", type=float, default=10.0, help="gradient norm clip")
    safety.add_argument("--max-bad-steps", type=int, default=5,
                        help="non-finite steps in a row before rolling back to the last checkpoint")
    safety.add_argument("--lr-drop", type=float, default=0.5, help="learning-rate factor at each rollback")
    safety.add_argument("--amp", action="store_true",
                        help="bf16 autocast of the networks (CUDA, or CPUs with AVX512-BF16/AMX); ELBO terms stay fp32")
    model = p.add_argument_group("model hyperparameters (override the preset)")
    for f in dataclasses.fields(VDSMConfig):
        kind = type(f.default)
        if kind is tuple:
            model.add_argument("--" + f.name.replace("_", "-"), type=int, nargs="+")
        elif kind is bool:
            model.add_argument("--" + f.name.replace("_", "-"), action=argparse.BooleanOptionalAction)
        else:
            model.add_argument("--" + f.name.replace("_", "-"), type=kind)
    add_svg_arguments(p, {f.name for f in dataclasses.fields(VDSMConfig)})
    sched = p.add_argument_group("annealing schedules (override the preset), per stage")
    for stage in ("stage1", "stage2"):
        for f in dataclasses.fields(Schedule):
            sched.add_argument(f"--{stage}-{f.name.replace('_', '-')}", type=float, dest=f"{stage}_{f.name}")
    return p


def resolve_config(args):
    """Preset plus command-line overrides, as plain data."""
    if args.model not in MODELS:
        raise UsageError(f"unknown model {args.model!r}: choose one of {', '.join(MODELS)}")
    if args.dataset not in data.DATASETS:
        raise UsageError(f"unknown dataset {args.dataset!r}: choose one of {', '.join(data.DATASETS)}")
    preset, config = preset_config(args, load_preset)
    config["preset"], config["dataset"], config["seed"] = preset, args.dataset, args.seed
    config["guide2"] = args.guide2
    if args.guide2:
        try:
            guide_factory(args.guide2)
        except ValueError as err:
            raise UsageError(str(err)) from None
    for f in dataclasses.fields(VDSMConfig):
        value = getattr(args, f.name)
        if value is not None:
            config["model"][f.name] = list(value) if isinstance(value, list) else value
    for stage in ("stage1", "stage2"):
        for key in ("steps", "batch_size", "lr", "seq_len"):
            value = getattr(args, f"{stage}_steps" if key == "steps" and getattr(args, f"{stage}_steps") else key)
            if value is not None:
                config[stage][key] = value
        for f in dataclasses.fields(Schedule):
            value = getattr(args, f"{stage}_{f.name}")
            if value is not None:
                config[stage]["schedule"][f.name] = value
        for key in ("steps", "batch_size", "seq_len"):
            if config[stage][key] < 1:
                raise UsageError(f"--{key.replace('_', '-')}={config[stage][key]} must be at least 1")
        if config[stage]["lr"] <= 0:
            raise UsageError(f"--lr={config[stage]['lr']} must be positive")
        schedule = Schedule(**config[stage]["schedule"])  # its defaults fill keys older presets lack
        if not 0 <= schedule.lr_decay_frac <= 1 or schedule.lr_end < 0:
            raise UsageError(f"--{stage}-lr-decay-frac={schedule.lr_decay_frac} must be in [0, 1] and "
                             f"--{stage}-lr-end={schedule.lr_end} at least 0")
    try:
        VDSMConfig.from_dict(config["model"]).check()
    except (ValueError, TypeError) as err:
        raise UsageError(f"bad model hyperparameter: {err}") from None
    config["model"] = complete_model_config(config["model"])
    return config


def complete_model_config(model):
    """Every VDSMConfig field, as plain data: a preset, config.json or checkpoint written before a
    field existed means that field's default."""
    return {f.name: _plain(model.get(f.name, f.default)) for f in dataclasses.fields(VDSMConfig)}


def dataset_options(args, config, stage):
    options = {"seq_len": config[stage]["seq_len"]}
    for key in ("pair_actions", "random_window"):
        if config[stage].get(key):
            options[key] = True
    key = DATA_OPTIONS.get(args.dataset)
    if key and getattr(args, key) is not None:
        options[key] = getattr(args, key)
    return options


def train_dataset(args, config, stage):
    ds = data.get_dataset(args.dataset, "train", args.data_root, **dataset_options(args, config, stage))
    check_frames(ds[0][0], config)
    if hasattr(ds, "seed"):
        ds.seed = args.seed
    return ds


def check_frames(x, config):
    nc = config["model"]["nc"]
    if x.shape[-3:] != (nc, 64, 64):
        raise UsageError(f"dataset frames are {tuple(x.shape[-3:])} but the model expects ({nc}, 64, 64): "
                         f"pass --nc {x.shape[-3]} or resize the data to 64x64")


def run_stage(vdsm, stage, args, config, run_dir, device, writer, rank=0, world_size=1, monitor=None):
    model, guide = (vdsm.model1, vdsm.guide1) if stage == "stage1" else (vdsm.model2, vdsm.guide2)
    checkpoints = CheckpointManager(run_dir / "checkpoints", stage, every_steps=args.checkpoint_every,
                                    every_minutes=args.checkpoint_minutes, keep_last=args.keep_last)
    resume = None
    if checkpoints.latest.is_file():
        resume = load_checkpoint(checkpoints.latest, device)
        trained = complete_model_config(resume["config"])
        if trained != config["model"]:
            differ = sorted(k for k in trained if config["model"][k] != trained[k])
            saved = ", ".join(f"{k}={trained[k]}" for k in differ)
            raise UsageError(f"checkpoint {checkpoints.latest} was trained with other {', '.join(differ)} "
                             f"(checkpoint: {saved}); resume with the run's own config.json")
        if resume["step"] >= config[stage]["steps"]:
            log.info("%s already finished (%d steps), skipped", stage, resume["step"])
            model.load_state_dict(resume["model"])
            guide.load_state_dict(resume["guide"])
            return resume.get("stats", {"steps": resume["step"], "resumed": "already finished"})
    if stage == "stage2":  # stage-1 networks are frozen: no gradients, not in the optimiser
        for net in (vdsm.model1.decoder, vdsm.guide1.encoder):
            net.requires_grad_(False)
        if vdsm.model1.identity_loc is not None:
            vdsm.model1.identity_loc.requires_grad_(False)
    batches = ResumableBatches(train_dataset(args, config, stage), config[stage]["batch_size"], seed=args.seed,
                               num_workers=args.num_workers, rank=rank, world_size=world_size,
                               pin_memory=device.type == "cuda")
    options = TrainOptions(steps=config[stage]["steps"], lr=config[stage]["lr"], clip_norm=args.clip_norm,
                           max_bad_steps=args.max_bad_steps, lr_drop=args.lr_drop, amp=args.amp,
                           progress=not args.no_progress)
    return train_stage(model, guide, batches, options=options, schedule=Schedule(**config[stage]["schedule"]),
                       device=device, checkpoints=checkpoints if rank == 0 else None, resume=resume,
                       extra_state={"config": config["model"], "stage": stage}, writer=writer, tag=stage,
                       on_step=None if monitor is None else lambda step, last: monitor(vdsm, stage, step, last))


@torch.no_grad()
def evaluate_and_draw(vdsm, args, config, run_dir, device):
    """Test-set reconstruction error and the run folder's pictures."""
    vdsm.eval()
    seq_len = config["stage2"]["seq_len"]
    test = data.get_dataset(args.dataset, "test", args.data_root, **dataset_options(args, config, "stage2"))
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(1234))
    n_eval = min(args.eval_sequences, len(test))
    bce = mse = frames = 0.0
    for chunk in order[:n_eval].split(32):
        x = torch.stack([test[int(i)][0] for i in chunk]).to(device)
        recon = vdsm.reconstruct(x).clamp(1e-6, 1 - 1e-6)
        bce += -(x * recon.log() + (1 - x) * (1 - recon).log()).sum().item()
        mse += ((x - recon) ** 2).sum().item()
        frames += x.shape[0] * x.shape[1]
    pixels = frames * x[0, 0].numel()
    metrics = {"test_sequences": n_eval, "recon_bce_per_frame": bce / frames, "recon_mse_per_pixel": mse / pixels}

    n = 8
    x = torch.stack([test[int(i)][0] for i in order[:n]]).to(device)
    save_grid(sequence_strip(x, vdsm.reconstruct(x)), run_dir / "reconstructions.png", nrow=seq_len)
    save_gif(vdsm.generate(16, seq_len), run_dir / "samples.gif")
    # identity swap grid: top row identity sources, left column pose sources, cell = mid frame
    k, mid = 6, seq_len // 2
    pose = x[:k]
    ident = torch.stack([test[int(i)][0] for i in order[n:n + k]]).to(device)
    cells = [torch.zeros_like(x[0, 0])] + [ident[j, mid] for j in range(k)]
    for i in range(k):
        swapped = vdsm.swap_identity(pose[i:i + 1].expand(k, *pose.shape[1:]), ident)
        cells += [pose[i, mid]] + [swapped[j, mid] for j in range(k)]
    save_grid(torch.stack(cells), run_dir / "identity_swap.png", nrow=k + 1)
    # action transfer: rows of (action source, identity source, transfer) sequences
    transfer = vdsm.transfer_action(pose, ident)
    save_grid(sequence_strip(pose, ident, transfer), run_dir / "action_transfer.png", nrow=seq_len)
    save_gif(torch.cat([pose, ident, transfer], -1), run_dir / "action_transfer.gif")
    return metrics


def resume_config(args):
    """The saved config of ``--resume DIR``; model flags given now must agree with it."""
    run_dir = Path(args.resume)
    if not (run_dir / "config.json").is_file():
        raise UsageError(f"--resume {run_dir}: no config.json there; pass a run folder of experiments.run")
    config = json.loads((run_dir / "config.json").read_text())
    if config["dataset"] != args.dataset:
        raise UsageError(f"--resume {run_dir}: that run trained on {config['dataset']!r}, not {args.dataset!r}")
    config["model"] = complete_model_config(config["model"])
    differ = [f.name for f in dataclasses.fields(VDSMConfig) if getattr(args, f.name) is not None
              and _plain(getattr(args, f.name)) != config["model"][f.name]]
    if differ:
        raise UsageError(f"--resume {run_dir}: the run was trained with other {', '.join(differ)}; "
                         f"drop those flags to continue it")
    return run_dir, config


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def init_distributed(args):
    """(rank, world_size, device) from torchrun's environment; a plain run is rank 0 of 1."""
    import os

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    wants_cuda = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if wants_cuda and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: no CUDA device here; use --device cpu")
    if world_size == 1:
        return 0, 1, torch.device(args.device or ("cuda" if wants_cuda else "cpu"))
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dist.init_process_group(backend="nccl" if wants_cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}") if wants_cuda else torch.device("cpu")
    if wants_cuda:
        torch.cuda.set_device(device)
    return dist.get_rank(), world_size, device


def check_safety_options(args):
    for name in ("checkpoint_every", "keep_last", "max_bad_steps", "num_workers", "eval_sequences"):
        minimum = 0 if name == "num_workers" else 1
        if getattr(args, name) < minimum:
            raise UsageError(f"--{name.replace('_', '-')}={getattr(args, name)} must be at least {minimum}")
    if not 0 < args.lr_drop < 1:
        raise UsageError(f"--lr-drop={args.lr_drop} must be between 0 and 1")
    if args.clip_norm <= 0 or args.checkpoint_minutes <= 0:
        raise UsageError("--clip-norm and --checkpoint-minutes must be positive")


def run(args, monitor=None):
    """Train (and draw) one run; ``monitor(vdsm, stage, step, last)``, if given, is called after
    every optimiser step (see ``experiments.time_to_quality``)."""
    check_safety_options(args)
    if args.model not in MODELS:
        raise UsageError(f"unknown model {args.model!r}: choose one of {', '.join(MODELS)}")
    if args.dataset not in data.DATASETS:
        raise UsageError(f"unknown dataset {args.dataset!r}: choose one of {', '.join(data.DATASETS)}")
    if args.model.startswith("svg"):
        if args.resume and not (Path(args.resume) / "config.json").is_file():
            raise UsageError(f"--resume {args.resume}: no config.json there; pass a run folder of experiments.run")
        rank, world_size, device = init_distributed(args)
        return run_svg(args, device, rank, world_size)
    if args.resume:
        run_dir, config = resume_config(args)
    else:
        run_dir, config = None, resolve_config(args)
    rank, world_size, device = init_distributed(args)
    stages = {"1": ["stage1"], "2": ["stage2"], "both": ["stage1", "stage2"]}[args.stage]
    train_dataset(args, config, stages[0])  # fail on bad data before anything is written
    if run_dir is None:
        run_dir = Path(args.out or f"runs/{args.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
        if rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.json").write_text(json.dumps(config, indent=1))
    if world_size > 1:
        torch.distributed.barrier()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.ERROR, format="%(message)s")
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))
    vdsm = VDSM(VDSMConfig.from_dict(config["model"]), Schedule(**config["stage2"]["schedule"]), device)
    if config.get("guide2"):
        vdsm.use_guide2(config["guide2"])
    metrics, started = {"dataset": args.dataset, "preset": config["preset"], "device": str(device),
                        "world_size": world_size}, time.time()
    if stages == ["stage2"]:  # stage 2 needs a trained stage 1 in the same folder
        state = load_checkpoint(run_dir / "checkpoints" / "stage1.pt", device)
        vdsm.model1.load_state_dict(state["model"])
        vdsm.guide1.load_state_dict(state["guide"])
    for stage in stages:
        metrics[stage] = without_losses(run_stage(vdsm, stage, args, config, run_dir, device, writer, rank,
                                                   world_size, monitor))
    vdsm.has_stage2 = "stage2" in stages
    if rank == 0:
        metrics["evaluation"] = evaluate_and_draw(vdsm, args, config, run_dir, device)
        metrics["wall_seconds"] = time.time() - started
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
        writer.close()
        log.info("run folder: %s", run_dir)
    if world_size > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return run_dir


def main(argv=None):
    keep_freed_memory()  # allocator setting for the whole process (see vdsm.runtime)
    return cli_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
