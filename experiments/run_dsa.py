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

from vdsm.checkpoint import write_text_atomic

from .registry import JUDGED_MODELS, api_class
from .run_svg import one_stage_config, train_one_stage, training_data

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
    return one_stage_config(args, base, JUDGED_MODELS[args.model], ("steps", "batch_size", "lr", "seq_len", "clip_norm"),
                            ("steps", "batch_size", "seq_len"))


def check_dsa_data(args, config):
    """The training split, checked against the model (before anything is written)."""
    return training_data(args, config, config["train"]["seq_len"])


def run_dsa(args, config, run_dir, device, rank=0, world_size=1):
    from .run import evaluate_and_draw

    train = check_dsa_data(args, config)
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))
    entry = JUDGED_MODELS[config["model_name"]]
    api = api_class(entry.name)(entry.config_cls.from_dict(config["model"]), device)
    metrics, started = {"dataset": args.dataset, "model": args.model, "preset": config["preset"],
                        "preset_reason": config.get("preset_reason"), "device": str(device),
                        "world_size": world_size}, time.time()
    stats = train_one_stage(api, entry, train, args, config, run_dir, device, writer, rank, world_size,
                            groups=("identity", "z"))
    if stats is not None:
        metrics["train"] = stats
    if rank == 0:
        metrics["evaluation"] = evaluate_and_draw(api, args, config, run_dir, device, section="train")
        metrics["wall_seconds"], metrics["machine"] = time.time() - started, args.machine
        write_text_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=1))
        writer.close()
