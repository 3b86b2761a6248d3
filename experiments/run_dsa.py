"""Training DSA (Li & Mandt 2018; ``--model dsa``) from the runner:
``python -m experiments.run --dataset sprites --model dsa``.

One stage of SVI on the plain ELBO (no annealing, every KL in closed form). The run folder receives
config.json, checkpoints/dsa.pt (+ best and periodic ones), tensorboard/, and the same val-split
pictures and numbers as a VDSM run (reconstructions.png, samples.gif, identity_swap.png,
action_transfer.png/.gif, metrics.json); ``python -m experiments.evaluate --run DIR`` runs the
judge protocols on the test split, as for VDSM.
"""
import copy
import dataclasses
import json
import time

import data
from vdsm.batches import ResumableBatches
from vdsm.checkpoint import write_text_atomic
from vdsm.svg_api import ConstantFactors
from vdsm.train import TrainOptions, train_stage

from .cli import UsageError
from .registry import JUDGED_MODELS, api_class

__all__ = ["dsa_config", "complete_dsa_config", "check_dsa_data", "run_dsa"]


def complete_dsa_config(config):
    """A DSA config.json with every key this version reads."""
    config = copy.deepcopy(config)
    config["model"] = dataclasses.asdict(JUDGED_MODELS[config["model_name"]].config_cls.from_dict(config["model"]))
    config.setdefault("seed", 0)
    config.setdefault("train_split", "train")
    config.setdefault("safety", {"max_bad_steps": 5, "lr_drop": 0.5})
    config["train"].setdefault("clip_norm", 0.0)
    config["train"].setdefault("lr_decay_frac", 0.0)
    return config


def dsa_config(args, base):
    """``base`` (a preset or a saved config) with the command line's overrides, checked."""
    config = copy.deepcopy(base)
    config.update(model_name=args.model, seed=args.seed, train_split=args.train_split,
                  safety={"max_bad_steps": args.max_bad_steps, "lr_drop": args.lr_drop})
    entry = JUDGED_MODELS[args.model]
    for name in entry.flags():
        value = getattr(args, name, None)
        if value is not None:
            config["model"][name] = value
    for key in ("steps", "batch_size", "lr", "seq_len", "clip_norm"):
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
    for key in ("steps", "batch_size", "seq_len"):
        if config["train"][key] < 1:
            raise UsageError(f"--{key.replace('_', '-')}={config['train'][key]} must be at least 1")
    if config["train"]["lr"] <= 0:
        raise UsageError(f"--lr={config['train']['lr']} must be positive")
    return config


def _options(args, config):
    options = {"seq_len": config["train"]["seq_len"]}
    key = data.FOLDER_OPTIONS.get(args.dataset)
    if key and getattr(args, key, None) is not None:
        options[key] = getattr(args, key)
    return options


def check_dsa_data(args, config):
    """The training split, checked against the model (before anything is written)."""
    train = data.get_dataset(args.dataset, config["train_split"], args.data_root, **_options(args, config))
    frame = train[0][0]
    if tuple(frame.shape[1:]) != (config["model"]["nc"], 64, 64):
        raise UsageError(f"dataset frames are {tuple(frame.shape[1:])} but the model expects "
                         f"({config['model']['nc']}, 64, 64): pass --nc {frame.shape[1]}")
    if hasattr(train, "seed"):
        train.seed = config["seed"]
    return train


def run_dsa(args, config, run_dir, device, rank=0, world_size=1):
    from .run import checkpoint_manager, evaluate_and_draw, without_losses

    train = check_dsa_data(args, config)
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))
    entry = JUDGED_MODELS[config["model_name"]]
    api = api_class(entry.name)(entry.config_cls.from_dict(config["model"]), device)
    checkpoints = checkpoint_manager(args, run_dir, entry.checkpoint)
    resume = checkpoints.load_newest(device) if checkpoints.exists() else None
    metrics, started = {"dataset": args.dataset, "model": args.model, "preset": config["preset"],
                        "preset_reason": config.get("preset_reason"), "device": str(device),
                        "world_size": world_size}, time.time()
    t = config["train"]
    if resume is None or resume["step"] < t["steps"]:
        batches = ResumableBatches(train, t["batch_size"], seed=config["seed"], num_workers=args.num_workers,
                                   rank=rank, world_size=world_size, pin_memory=device.type == "cuda")
        options = TrainOptions(steps=t["steps"], lr=t["lr"], clip_norm=t["clip_norm"],
                               max_bad_steps=config["safety"]["max_bad_steps"], lr_drop=config["safety"]["lr_drop"],
                               amp=args.amp, progress=not args.no_progress, schedule_steps=t.get("schedule_steps"))
        metrics["train"] = without_losses(train_stage(
            api.model, api.guide, batches, options=options,
            schedule=ConstantFactors(t["lr_decay_frac"], groups=("identity", "z")), device=device,
            checkpoints=checkpoints if rank == 0 else None, resume=resume,
            extra_state={"config": config["model"], "stage": entry.checkpoint}, writer=writer, tag=entry.checkpoint))
    else:
        api.model.load_state_dict(resume["model"])
    if rank == 0:
        metrics["evaluation"] = evaluate_and_draw(api, args, config, run_dir, device, section="train")
        metrics["wall_seconds"] = time.time() - started
        write_text_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=1))
        writer.close()
