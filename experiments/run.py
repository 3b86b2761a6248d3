"""Train a model and write a run folder: ``python -m experiments.run --dataset sprites [--model vdsm]``.

VDSM trains stage 1, then stage 2; the prediction models of ``experiments.registry`` (``--model
svg-lp`` / ``svg-fp`` / ``srvp``) train in one stage (``run_svg``), and so does DSA (``--model dsa``,
``run_dsa``; its run folder has VDSM's pictures). The
run folder holds config.json, checkpoints/, tensorboard/ and metrics.json, and for VDSM
reconstructions.png, samples.gif, identity_swap.png, action_transfer.png/.gif (SVG:
futures.gif). The end-of-run pictures and numbers use the val split; the test split is for
``experiments.evaluate``'s final report.

Every flag either changes what runs or is refused with a one-line error (exit 2) before
anything is written: a flag of another model, a data folder of another dataset, and with
``--resume`` any flag that contradicts the saved run. ``--resume DIR --steps N`` (or
``--stageN-steps N``) beyond the saved count extends the run: the annealing schedules and the
learning-rate decay keep their original length, so the added steps use their final values.
"""
import argparse
import copy
import dataclasses
import functools
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

import data
from guides.common import GuideError
from models.vdsm import VDSMConfig
from vdsm.annealing import Schedule
from vdsm.api import FITTED_FROM, VDSM, guide_factory, prior_path
from vdsm.batches import ResumableBatches
from vdsm.checkpoint import CheckpointManager, load_checkpoint, write_text_atomic
from vdsm.fitted_prior import DiagonalMixture
from vdsm.runtime import keep_freed_memory, machine_line, machine_summary
from vdsm.train import TrainOptions, train_stage
from vdsm.viz import save_gif, save_labelled_gif, save_labelled_grid, sequence_strip

from .cli import UsageError, choose_device, choose_preset, cli_main, first_line
from .configs import load_judged_preset, load_preset, load_svg_preset
from .registry import JUDGED_MODELS, PREDICTION_MODELS

log = logging.getLogger("experiments.run")
MODELS = ("vdsm", *PREDICTION_MODELS, *JUDGED_MODELS)
STAGES = ("stage1", "stage2")
# Flags that only steer this process (free to change on --resume), with their defaults.
RUNTIME_DEFAULTS = {"model": "vdsm", "num_workers": 1, "eval_sequences": 256, "checkpoint_every": 200,
                    "checkpoint_minutes": 10.0, "keep_last": 3}
# Flags recorded in config.json (a different value on --resume is refused), with their defaults.
RECORDED_DEFAULTS = {"seed": 0, "train_split": "train", "max_bad_steps": 5, "lr_drop": 0.5}


def _flag(dest):
    return "--" + dest.replace("_", "-")


def build_parser():
    # Every default is None here: only flags given on the command line are set, so that flags of
    # another model, and flags that contradict a resumed run, can be told apart (see run()).
    p = argparse.ArgumentParser(prog="python -m experiments.run", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Defaults are in each flag's help; presets: experiments/configs/.")
    p.add_argument("--dataset", required=True, help=f"one of {', '.join(data.DATASETS)}")
    p.add_argument("--model", help=f"one of {', '.join(MODELS)} (default vdsm)")
    p.add_argument("--preset", help="cpu or paper (default: paper on a CUDA device, cpu otherwise)")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when available)")
    p.add_argument("--steps", type=int, help="training steps (VDSM: of each stage); with --resume: extend to N")
    p.add_argument("--batch-size", type=int, help="sequences per step (default: the preset's)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default: the preset's)")
    p.add_argument("--train-split", choices=["train", "trainval"],
                   help="train: the training data minus val (default); trainval: all of it (the run's val "
                        "numbers are then on trained sequences)")
    p.add_argument("--out", help="run folder (default runs/<dataset>[-<model>]-<time>)")
    p.add_argument("--resume", help="continue the run in this folder")
    p.add_argument("--seed", type=int, help="seed of the weights, the data order and the sampling (default 0)")
    p.add_argument("--num-workers", type=int, help="DataLoader worker processes (default 1)")
    p.add_argument("--data-root", help="downloads and caches (default $VDSM_DATA_ROOT or ./data_cache)")
    folders = p.add_argument_group("raw data (each for its dataset only)")
    for dest in sorted(set(data.FOLDER_OPTIONS.values())):
        names = [name for name, option in data.FOLDER_OPTIONS.items() if option == dest]
        folders.add_argument(_flag(dest), dest=dest, help=f"folder or file of the raw data of {' / '.join(names)}")
    p.add_argument("--eval-sequences", type=int, help="val sequences used for metrics.json (default 256)")
    p.add_argument("--no-progress", action="store_true", default=None, help="no progress bar")
    safety = p.add_argument_group("checkpoints and fault handling")
    safety.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 200)")
    safety.add_argument("--checkpoint-minutes", type=float, help="minutes between checkpoints (default 10)")
    safety.add_argument("--keep-last", type=int, help="periodic checkpoints kept per stage (default 3)")
    safety.add_argument("--clip-norm", type=float,
                        help="bound on the norm of the gradient of the loss per frame (0: no clipping; "
                             "default: the preset's, 0 unless it says otherwise)")
    safety.add_argument("--max-bad-steps", type=int,
                        help="non-finite steps in a row before rolling back to the last checkpoint (default 5)")
    safety.add_argument("--lr-drop", type=float, help="learning-rate factor at each rollback (default 0.5)")
    safety.add_argument("--amp", action="store_true", default=None,
                        help="bf16 autocast of the networks on CUDA or a CPU (a layer with no bf16 kernel on this "
                             "machine runs in fp32); ELBO terms stay fp32")
    vdsm = p.add_argument_group("VDSM only (--model vdsm)")
    vdsm.add_argument("--stage", choices=["1", "2", "both"], help="which training stage(s) to run (default both)")
    vdsm.add_argument("--stage1-steps", type=int)
    vdsm.add_argument("--stage2-steps", type=int)
    vdsm.add_argument("--seq-len", type=int, help="frames per sequence (stage 1 pairs two of them)")
    vdsm.add_argument("--guide2", metavar="MODULE:FACTORY",
                      help="custom stage-2 guide: a factory taking the VDSM object (see guides/examples.py)")
    for f in dataclasses.fields(VDSMConfig):
        _model_flag(vdsm, f)
    for stage in STAGES:
        for f in dataclasses.fields(Schedule):
            vdsm.add_argument(f"--{stage}-{f.name.replace('_', '-')}", type=float, dest=f"{stage}_{f.name}")
    pred = p.add_argument_group(f"prediction models only (--model {' / '.join(PREDICTION_MODELS)}); "
                                "each model's own sizes")
    pred.add_argument("--n-future", type=int, help="frames predicted during training (SRVP: trains on n_past + "
                                                   "n-future frames)")
    pred.add_argument("--eval-samples", type=int, help="futures sampled per sequence for metrics.json")
    added = {f.name: f for f in dataclasses.fields(VDSMConfig)}
    judged = p.add_argument_group(f"judged one-stage models only (--model {' / '.join(JUDGED_MODELS)}); also "
                                  "--seq-len")
    for group, entries in ((pred, PREDICTION_MODELS), (judged, JUDGED_MODELS)):
        for entry in entries.values():
            for f in dataclasses.fields(entry.config_cls):
                if f.name in entry.fixed:
                    continue
                if f.name in added:  # one flag per name: the same type everywhere
                    assert type(added[f.name].default) is type(f.default), f.name
                    continue
                added[f.name] = f
                _model_flag(group, f)
    return p


def _model_flag(group, field):
    kind = type(field.default)
    if kind is tuple:
        group.add_argument(_flag(field.name), type=int, nargs="+")
    elif kind is bool:
        group.add_argument(_flag(field.name), action=argparse.BooleanOptionalAction)
    else:
        group.add_argument(_flag(field.name), type=kind)


def own_flags(model):
    """The model-specific flags (dests) that apply to ``model``."""
    if model == "vdsm":
        schedule = {f"{stage}_{f.name}" for stage in STAGES for f in dataclasses.fields(Schedule)}
        fields = {f.name for f in dataclasses.fields(VDSMConfig)}
        return {"stage", "stage1_steps", "stage2_steps", "seq_len", "guide2"} | fields | schedule
    if model in JUDGED_MODELS:
        return {"seq_len"} | JUDGED_MODELS[model].flags()
    return {"n_future", "eval_samples"} | PREDICTION_MODELS[model].flags()


def given_flags(args):
    """The flags given on the command line (dests whose value is not None)."""
    return {k for k, v in vars(args).items() if v is not None and k != "dataset"}


def check_flags(args, given):
    """One-line UsageErrors for flags that would not apply; then fills the defaults of the others."""
    model = args.model or "vdsm"
    if model not in MODELS:
        raise UsageError(f"unknown model {model!r}: choose one of {', '.join(MODELS)}")
    if args.dataset not in data.DATASETS:
        raise UsageError(f"unknown dataset {args.dataset!r}: choose one of {', '.join(data.DATASETS)}")
    foreign = sorted(given & (set().union(*map(own_flags, MODELS)) - own_flags(model)))
    if foreign:
        owners = [m for m in MODELS if foreign[0] in own_flags(m)]
        verb = "applies" if len(foreign) == 1 else "apply"
        raise UsageError(f"{', '.join(map(_flag, foreign))} only {verb} to --model {' / '.join(owners)}, "
                         f"not --model {model}: drop them")
    own = data.FOLDER_OPTIONS.get(args.dataset)
    wrong = sorted(d for d in set(data.FOLDER_OPTIONS.values()) & given if d != own)
    if wrong:
        hint = f"its data folder flag is {_flag(own)}" if own else "it is generated and needs no data folder"
        verb = "does" if len(wrong) == 1 else "do"
        raise UsageError(f"{', '.join(map(_flag, wrong))} {verb} not apply to --dataset {args.dataset} ({hint}): "
                         f"drop them")
    if args.resume and args.out and Path(args.out).resolve() != Path(args.resume).resolve():
        raise UsageError(f"--out {args.out} and --resume {args.resume} name different folders: give only --resume")
    for k, v in {**RUNTIME_DEFAULTS, **RECORDED_DEFAULTS}.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.no_progress, args.amp = bool(args.no_progress), bool(args.amp)
    for name in ("checkpoint_every", "keep_last", "max_bad_steps", "num_workers", "eval_sequences"):
        minimum = 0 if name == "num_workers" else 1
        if getattr(args, name) < minimum:
            raise UsageError(f"{_flag(name)}={getattr(args, name)} must be at least {minimum}")
    if not 0 < args.lr_drop < 1:
        raise UsageError(f"--lr-drop={args.lr_drop} must be between 0 and 1")
    if args.checkpoint_minutes <= 0:
        raise UsageError(f"--checkpoint-minutes={args.checkpoint_minutes} must be positive")
    if args.clip_norm is not None and args.clip_norm < 0:
        raise UsageError(f"--clip-norm={args.clip_norm} must be at least 0 (0: no clipping)")


# ---------------------------------------------------------------- configs


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def complete_model_config(model):
    """Every VDSMConfig field, as plain data: a preset, config.json or checkpoint written before a
    field existed means that field's default."""
    return {f.name: _plain(model.get(f.name, f.default)) for f in dataclasses.fields(VDSMConfig)}


def _legacy_clip(batch_size, frames):
    """Runs written before per-frame clipping clipped the summed loss's gradient at norm 10: the same
    bound per frame (one process)."""
    return 10.0 / (batch_size * frames)


def complete_vdsm_config(config):
    """A VDSM config.json of any age with every key this version reads (older runs: their behaviour)."""
    config = copy.deepcopy(config)
    config["model"] = complete_model_config(config["model"])
    config.setdefault("model_name", "vdsm")
    config.setdefault("seed", 0)
    config.setdefault("train_split", "trainval")  # before the val split, "train" was all training data
    config.setdefault("guide2", None)
    config.setdefault("safety", {"max_bad_steps": 5, "lr_drop": 0.5})
    for stage in STAGES:
        s = config[stage]
        frames = s["seq_len"] * (2 if s.get("pair_actions") else 1)
        s.setdefault("clip_norm", _legacy_clip(s["batch_size"], frames))
        s["schedule"] = dataclasses.asdict(Schedule(**s["schedule"]))
    return config


def vdsm_config(args, base):
    """``base`` (a preset or a saved config) with the command line's overrides, checked."""
    config = copy.deepcopy(base)
    config.update(model_name="vdsm", seed=args.seed, train_split=args.train_split,
                  guide2=args.guide2 if args.guide2 is not None else base.get("guide2"),
                  safety={"max_bad_steps": args.max_bad_steps, "lr_drop": args.lr_drop})
    if args.guide2:
        try:
            guide_factory(args.guide2)
        except ValueError as err:
            raise UsageError(str(err)) from None
    for f in dataclasses.fields(VDSMConfig):
        if getattr(args, f.name) is not None:
            config["model"][f.name] = _plain(getattr(args, f.name))
    for stage in STAGES:
        s = config[stage]
        for key in ("steps", "batch_size", "lr", "seq_len", "clip_norm"):
            flag = f"{stage}_steps" if key == "steps" and getattr(args, f"{stage}_steps") is not None else key
            if getattr(args, flag) is not None:
                s[key] = getattr(args, flag)
        s.setdefault("clip_norm", 0.0)
        for f in dataclasses.fields(Schedule):
            value = getattr(args, f"{stage}_{f.name}")
            if value is not None:
                s["schedule"][f.name] = value
        for key in ("steps", "batch_size", "seq_len"):
            if s[key] < 1:
                raise UsageError(f"{_flag(key)}={s[key]} ({stage}) must be at least 1")
        if s["lr"] <= 0:
            raise UsageError(f"--lr={s['lr']} ({stage}) must be positive")
        try:
            s["schedule"] = dataclasses.asdict(Schedule(**s["schedule"]).check())
        except (ValueError, TypeError) as err:
            raise UsageError(f"bad {stage} schedule: {err} (--{stage}-... flags)") from None
    try:
        VDSMConfig.from_dict(config["model"]).check()
    except (ValueError, TypeError) as err:
        raise UsageError(f"bad model hyperparameter: {err}") from None
    config["model"] = complete_model_config(config["model"])
    return config


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resume_changes(saved, wanted, steps_paths, run_dir):
    """Check that ``wanted`` (the saved config with the command line's overrides) differs from ``saved``
    only by longer stages; returns ``{steps path: (old, new)}`` of the extended ones."""
    old, new = _flatten(saved), _flatten(wanted)
    differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in steps_paths)
    if differ:
        detail = ", ".join(f"{k} (run: {old.get(k)}, asked: {new.get(k)})" for k in differ[:4])
        raise UsageError(f"--resume {run_dir}: the run was trained with other {detail}; drop those flags to "
                         f"continue it, or start a new run")
    extended = {}
    for path in steps_paths:
        if new[path] < old[path]:
            raise UsageError(f"--resume {run_dir}: {path} would shrink from {old[path]} to {new[path]}; "
                             f"resume without it, or extend with a larger value")
        if new[path] > old[path]:
            extended[path] = (old[path], new[path])
    return extended


def apply_extension(config, extended):
    """Record the longer stages; each keeps its schedule length (``schedule_steps``)."""
    for path, (old, new) in extended.items():
        section = config[path.split(".")[0]]
        section.setdefault("schedule_steps", old)
        config.setdefault("extended", []).append({"section": path.split(".")[0], "from": old, "to": new,
                                                  "date": time.strftime("%Y-%m-%d %H:%M")})
    return config


def resume_config(args, run_dir, complete, resolve):
    """The saved config of ``--resume DIR`` (completed), the command line's overrides applied, checked."""
    if not (run_dir / "config.json").is_file():
        raise UsageError(f"--resume {run_dir}: no config.json there; pass a run folder of experiments.run")
    saved = json.loads((run_dir / "config.json").read_text())
    if saved["dataset"] != args.dataset:
        raise UsageError(f"--resume {run_dir}: that run trained on {saved['dataset']!r}, not {args.dataset!r}")
    if saved.get("model_name", "vdsm") != args.model:
        raise UsageError(f"--resume {run_dir}: that run is --model {saved.get('model_name', 'vdsm')}, "
                         f"not {args.model}")
    if args.preset and args.preset != saved["preset"]:
        raise UsageError(f"--resume {run_dir}: that run used --preset {saved['preset']}, not {args.preset}")
    saved = complete(saved)
    for key, default in RECORDED_DEFAULTS.items():  # recorded flags not given now keep the run's values
        if args.given.isdisjoint({key}):
            value = saved.get(key, saved.get("safety", {}).get(key, default))
            setattr(args, key, value)
    return saved, resolve(args, saved)


def new_config(args, device, loader, resolve):
    try:
        preset, reason = choose_preset(args.preset, device)
        base = loader(args.dataset, preset)
    except ValueError as err:
        raise UsageError(str(err)) from None
    base = {"preset": preset, "preset_reason": reason, "dataset": args.dataset, **base}
    return resolve(args, base)


# ---------------------------------------------------------------- VDSM


def dataset_options(args, config, stage):
    options = {"seq_len": config[stage]["seq_len"]}
    for key in ("pair_actions", "random_window"):
        if config[stage].get(key):
            options[key] = True
    key = data.FOLDER_OPTIONS.get(args.dataset)
    if key and getattr(args, key) is not None:
        options[key] = getattr(args, key)
    return options


def train_dataset(args, config, stage):
    ds = data.get_dataset(args.dataset, config["train_split"], args.data_root, **dataset_options(args, config, stage))
    check_frames(ds[0][0], config)
    if hasattr(ds, "seed"):
        ds.seed = config["seed"]
    return ds


def check_frames(x, config):
    nc = config["model"]["nc"]
    if x.shape[-3:] != (nc, 64, 64):
        raise UsageError(f"dataset frames are {tuple(x.shape[-3:])} but the model expects ({nc}, 64, 64): "
                         f"pass --nc {x.shape[-3]} or resize the data to 64x64")


def train_options(args, config, section):
    s = config[section]
    return TrainOptions(steps=s["steps"], lr=s["lr"], clip_norm=s["clip_norm"],
                        max_bad_steps=config["safety"]["max_bad_steps"], lr_drop=config["safety"]["lr_drop"],
                        amp=args.amp, progress=not args.no_progress, schedule_steps=s.get("schedule_steps"))


def checkpoint_manager(args, run_dir, name):
    return CheckpointManager(run_dir / "checkpoints", name, every_steps=args.checkpoint_every,
                             every_minutes=args.checkpoint_minutes, keep_last=args.keep_last)


def run_stage(vdsm, stage, args, config, run_dir, device, writer, rank=0, world_size=1, monitor=None):
    """Train (or resume) one stage; returns (its statistics, whether it trained in this call)."""
    model, guide = (vdsm.model1, vdsm.guide1) if stage == "stage1" else (vdsm.model2, vdsm.guide2)
    checkpoints = checkpoint_manager(args, run_dir, stage)
    resume = None
    if checkpoints.exists():
        resume = checkpoints.load_newest(device)
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
            return resume.get("stats", {"steps": resume["step"], "resumed": "already finished"}), False
    if stage == "stage2":  # stage-1 networks are frozen: no gradients, not in the optimiser
        for net in (vdsm.model1.decoder, vdsm.guide1.encoder):
            net.requires_grad_(False)
        if vdsm.model1.identity_loc is not None:
            vdsm.model1.identity_loc.requires_grad_(False)
    batches = ResumableBatches(train_dataset(args, config, stage), config[stage]["batch_size"], seed=config["seed"],
                               num_workers=args.num_workers, rank=rank, world_size=world_size,
                               pin_memory=device.type == "cuda")
    stats = train_stage(model, guide, batches, options=train_options(args, config, stage),
                        schedule=Schedule(**config[stage]["schedule"]), device=device,
                        checkpoints=checkpoints if rank == 0 else None, resume=resume,
                        extra_state={"config": config["model"], "stage": stage}, writer=writer, tag=stage,
                        on_step=None if monitor is None else lambda step, last: monitor(vdsm, stage, step, last))
    return stats, True


@torch.no_grad()
def evaluate_and_draw(vdsm, args, config, run_dir, device, section="stage2"):
    """Val-set reconstruction error and the run folder's pictures (val sequences); ``vdsm`` is any
    ``LatentVideoAPI`` (VDSM, DSA), ``section`` the config section with its sequence length."""
    vdsm.eval()
    seq_len = config[section]["seq_len"]
    val = data.get_dataset(args.dataset, "val", args.data_root, **dataset_options(args, config, section))
    order = torch.randperm(len(val), generator=torch.Generator().manual_seed(1234))
    n_eval = min(args.eval_sequences, len(val))
    metrics = {"split": "val", "sequences": n_eval}
    if config["train_split"] == "trainval":
        metrics["note"] = "--train-split trainval: these val sequences were trained on"
    save_gif(vdsm.generate(16, seq_len), run_dir / "samples.gif")
    try:
        bce = mse = frames = 0.0
        for chunk in order[:n_eval].split(32):
            x = torch.stack([val[int(i)][0] for i in chunk]).to(device)
            recon = vdsm.reconstruct(x).clamp(1e-6, 1 - 1e-6)
            bce += -(x * recon.log() + (1 - x) * (1 - recon).log()).sum().item()
            mse += ((x - recon) ** 2).sum().item()
            frames += x.shape[0] * x.shape[1]
        metrics.update(recon_bce_per_frame=bce / frames, recon_mse_per_pixel=mse / (frames * x[0, 0].numel()))
        draw_pictures(vdsm, val, order, run_dir, seq_len, device)
    except GuideError as err:  # e.g. a non-amortised custom guide: it cannot infer new sequences' latents
        metrics["skipped"] = f"reconstructions, swaps and transfers: {first_line(err)}"
        log.warning("warning: %s", metrics["skipped"])
    return metrics


def draw_pictures(vdsm, dataset, order, run_dir, seq_len, device):
    n, k, mid = 8, 6, seq_len // 2
    x = torch.stack([dataset[int(i)][0] for i in order[:n]]).to(device)
    save_labelled_grid(sequence_strip(x, vdsm.reconstruct(x)), run_dir / "reconstructions.png", nrow=seq_len,
                       row_labels=["real", "reconstruction"],
                       title=f"val sequences and their reconstructions, frames 1-{seq_len} left to right")
    # identity swap grid: top row identity sources, left column pose sources, cell = mid frame
    pose = x[:k]
    ident = torch.stack([dataset[int(i)][0] for i in order[n:n + k]]).to(device)
    cells = [torch.zeros_like(x[0, 0])] + [ident[j, mid] for j in range(k)]
    for i in range(k):
        swapped = vdsm.swap_identity(pose[i:i + 1].expand(k, *pose.shape[1:]), ident)
        cells += [pose[i, mid]] + [swapped[j, mid] for j in range(k)]
    save_labelled_grid(torch.stack(cells), run_dir / "identity_swap.png", nrow=k + 1,
                       row_labels=["identities"] + [f"poses of {i + 1}" for i in range(k)],
                       column_labels=["poses"] + [f"identity {j + 1}" for j in range(k)],
                       title=f"identity swap: poses of the row, identity of the column (frame {mid + 1})")
    # action transfer: rows of (action source, identity source, transfer) sequences
    transfer = vdsm.transfer_action(pose, ident)
    save_labelled_grid(sequence_strip(pose, ident, transfer), run_dir / "action_transfer.png", nrow=seq_len,
                       row_labels=["action from", "identity from", "transfer"],
                       title="action transfer: dynamics and first pose of the first row, identity of the second")
    save_labelled_gif([pose, ident, transfer], run_dir / "action_transfer.gif",
                      ["action", "identity", "transfer"])


def run_vdsm(args, config, run_dir, device, rank, world_size, monitor):
    stages = {"1": ["stage1"], "2": ["stage2"], "both": ["stage1", "stage2"]}[args.stage or "both"]
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))
    vdsm = VDSM(VDSMConfig.from_dict(config["model"]), Schedule(**config["stage2"]["schedule"]), device)
    if config.get("guide2"):
        vdsm.use_guide2(config["guide2"])
    metrics, started = {"dataset": args.dataset, "model": "vdsm", "preset": config["preset"],
                        "preset_reason": config.get("preset_reason"), "device": str(device),
                        "world_size": world_size}, time.time()
    if stages == ["stage2"]:  # stage 2 needs a trained stage 1 in the same folder
        state = checkpoint_manager(args, run_dir, "stage1").load_newest(device)
        vdsm.model1.load_state_dict(state["model"])
        vdsm.guide1.load_state_dict(state["guide"])
    trained = set()
    for stage in stages:
        stats, trained_now = run_stage(vdsm, stage, args, config, run_dir, device, writer, rank, world_size, monitor)
        metrics[stage] = without_losses(stats)
        if trained_now:
            trained.add(stage)
    vdsm.has_stage2 = "stage2" in stages
    fitted = {"identity": vdsm.config.identity_prior_components}
    if vdsm.has_stage2:
        fitted["dynamics"] = vdsm.config.dynamics_prior_components
    fitted = {latent: n for latent, n in fitted.items() if n > 0}
    # A prior is fitted again only when the stage its posterior comes from trained in this call (or it
    # was never fitted): a resume that trained nothing keeps the run's mixtures instead of repeating
    # the pass over every training sequence, which would give the same ones.
    kept = {latent for latent in fitted if FITTED_FROM[latent] not in trained and prior_path(run_dir, latent).is_file()}
    for latent in kept:
        saved = load_checkpoint(prior_path(run_dir, latent), "cpu")
        vdsm.set_fitted_prior(latent, DiagonalMixture.from_state_dict(saved["mixture"]))
        metrics[f"{latent}_prior"] = json.loads(saved["summary"])
    refit = {latent: n for latent, n in fitted.items() if latent not in kept}
    if rank == 0 and refit:
        from .fit_prior import fit_and_save

        summaries = fit_and_save(vdsm, run_dir, args.dataset, config["train_split"],
                                 dataset_options(args, config, "stage2"), refit, args.data_root, config["seed"])
        metrics.update({f"{latent}_prior": summary for latent, summary in summaries.items()})
    if rank == 0:
        metrics["evaluation"] = evaluate_and_draw(vdsm, args, config, run_dir, device)
        metrics["wall_seconds"], metrics["machine"] = time.time() - started, args.machine
        write_text_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=1))
        writer.close()


def without_losses(stats):
    """Statistics for metrics.json: the per-step losses and gradient norms are in TensorBoard already."""
    return {k: v for k, v in stats.items() if k not in ("losses", "grad_norms_per_frame")}


# ---------------------------------------------------------------- both


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


def prepare(args, device):
    """(run folder or None, config, extended stages) for this command line, checked; writes nothing."""
    from .run_dsa import complete_dsa_config, dsa_config
    from .run_svg import complete_svg_config, svg_config

    vdsm = args.model == "vdsm"
    if vdsm:
        complete, resolve, loader = complete_vdsm_config, vdsm_config, load_preset
    elif args.model in JUDGED_MODELS:
        complete, resolve = complete_dsa_config, dsa_config
        loader = functools.partial(load_judged_preset, model=args.model)
    else:
        complete, resolve = complete_svg_config, svg_config
        loader = functools.partial(load_svg_preset, model=args.model)
    if not args.resume:
        return None, new_config(args, device, loader, resolve), {}
    run_dir = Path(args.resume)
    saved, wanted = resume_config(args, run_dir, complete, resolve)
    steps = [f"{stage}.steps" for stage in STAGES] if vdsm else ["train.steps"]
    extended = resume_changes(saved, wanted, steps, run_dir)
    if vdsm and "stage1.steps" in extended and CheckpointManager(run_dir / "checkpoints", "stage2").exists():
        raise UsageError(f"--resume {run_dir}: stage 2 was trained on this stage 1; extend stage 2 only "
                         f"(--stage2-steps) or start a new run")
    return run_dir, apply_extension(wanted, extended), extended


def run(args, monitor=None):
    """Train (and draw) one run; ``monitor(model, stage, step, last)``, if given, is called after
    every optimiser step (VDSM: ``experiments.time_to_quality``; prediction models:
    ``experiments.prediction_quality``, whose monitor also has ``prepare(args, config)``)."""
    args.given = given_flags(args)
    check_flags(args, args.given)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    logging.basicConfig(level=logging.INFO if rank0 else logging.ERROR, format="%(message)s")
    device = choose_device(args.device)
    if monitor is not None and (args.model == "vdsm") == hasattr(monitor, "prepare"):
        raise UsageError(f"this quality monitor does not score {args.model} runs")
    run_dir, config, extended = prepare(args, device)
    if monitor is not None and config["train_split"] == "trainval":
        raise UsageError("the quality monitor scores val sequences, which --train-split trainval trains on")
    if args.model == "vdsm":
        stage = {"2": "stage2"}.get(args.stage, "stage1")
        train_dataset(args, config, stage)  # fail on bad data before anything is written
    elif args.model in JUDGED_MODELS:
        from .run_dsa import check_dsa_data

        check_dsa_data(args, config)
    else:
        from .run_svg import check_svg_data

        check_svg_data(args, config)
    rank, world_size, device = init_distributed(device)
    if run_dir is None:
        default = f"runs/{args.dataset}{'' if args.model == 'vdsm' else '-' + args.model}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = Path(args.out or default)
    if rank == 0 and (not args.resume or extended):
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.json", json.dumps(config, indent=1))
    if rank == 0:
        what = f"resuming {run_dir}" if args.resume else f"run folder {run_dir}"
        print(f"{what}: {args.model} on {args.dataset}, preset {config['preset']} ({config.get('preset_reason', 'saved run')})"
              + "".join(f"; {k} extended {a} -> {b} steps" for k, (a, b) in extended.items()), flush=True)
        # every time this run reports is only meaningful beside the machine it was measured on
        args.machine = machine_summary(device, amp=args.amp)
        print(machine_line(args.machine), flush=True)
    if world_size > 1:
        torch.distributed.barrier()
    pyro.clear_param_store()  # guides written with pyro.param start from their own initial values
    torch.manual_seed(config["seed"])
    np.random.seed(config["seed"])
    random.seed(config["seed"])
    if args.model == "vdsm":
        run_vdsm(args, config, run_dir, device, rank, world_size, monitor)
    elif args.model in JUDGED_MODELS:
        from .run_dsa import run_dsa

        run_dsa(args, config, run_dir, device, rank, world_size)
    else:
        from .run_svg import run_svg

        run_svg(args, config, run_dir, device, rank, world_size, monitor)
    if rank == 0:
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
