"""The runner's command line, built from the model specs: the flags every run takes, then each model's
own (its config fields and its ``cli`` flags), and the checks that refuse a flag that would not apply.

Every default is None in the parser: only flags given on the command line are set, so that flags of
another model, and flags that contradict a resumed run, can be told apart.
"""
import argparse
import dataclasses
from pathlib import Path

import data
from models import registry
from vdsm.runfolder import RunFolderError, read_config_json

from .cli import UsageError
from .config import RECORDED_DEFAULTS, TRAIN_FLAGS, trained_as

__all__ = ["build_parser", "own_flags", "given_flags", "check_flags", "model_of_argv"]

# flags that only steer this process (free to change on --resume), with their defaults
RUNTIME_DEFAULTS = {"model": "vdsm", "num_workers": 1, "eval_sequences": 256, "checkpoint_every": 200,
                    "checkpoint_minutes": 10.0, "keep_last": 3}
GENERAL_TRAIN_FLAGS = ("steps", "batch_size", "lr", "clip_norm")   # every spec's; the others are a model's own


def _flag(dest):
    return "--" + dest.replace("_", "-")


def model_of_argv(argv):
    """The ``--model`` of a command line (before the parser, whose flags depend on it)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model")
    pre.add_argument("--resume")
    known = pre.parse_known_args(argv)[0]
    return known.model or default_model(known.resume)


def default_model(resume):
    """The model of a command line without ``--model``: the one ``--resume DIR`` was trained as (so
    that a resumed run needs no ``--model``), else the first model."""
    if resume:
        try:
            saved = read_config_json(resume, "--resume")
        except RunFolderError:
            return RUNTIME_DEFAULTS["model"]   # the runner refuses the folder later, with its one-line error
        return trained_as(saved)
    return RUNTIME_DEFAULTS["model"]


def specs_for(model=None):
    """(name, spec) of every registered model name, and of ``model`` when it is an import path."""
    named = list(registry.NAMES.items())
    if model and model not in registry.NAMES and ":" in model:
        try:
            named.append((model, registry.get(model)))
        except ValueError:
            pass   # refused by check_flags with its one-line error
    return named


def build_parser(model=None):
    """The parser of ``python -m experiments.run`` (with the flags of ``model``, an import path, too)."""
    p = argparse.ArgumentParser(prog="python -m experiments.run", description="Train a model and write a run folder.",
                                epilog="Defaults are in each flag's help; presets: experiments/configs/.")
    p.add_argument("--dataset", required=True, help=f"one of {', '.join(data.DATASETS)}")
    p.add_argument("--model", help=f"one of {', '.join(registry.NAMES)}, or package.module:SPEC for a model "
                                   "defined outside the library (default vdsm)")
    p.add_argument("--preset", help="cpu or paper (default: paper on a CUDA device, cpu otherwise)")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when available)")
    p.add_argument("--steps", type=int, help="training steps (of each stage); with --resume: extend to N")
    p.add_argument("--batch-size", type=int, help="sequences per step (default: the preset's)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default: the preset's)")
    p.add_argument("--seq-len", type=int, help="frames per training sequence (models trained on whole sequences: "
                                               "VDSM, whose stage 1 pairs two of them, and DSA)")
    p.add_argument("--n-future", type=int, help="frames predicted during training (prediction models; SRVP trains "
                                                "on n_past + n-future frames)")
    p.add_argument("--train-split", choices=["train", "trainval"],
                   help="train: the training data minus val (default); trainval: all of it (the run's val "
                        "numbers are then on trained sequences)")
    p.add_argument("--out", help="run folder (default runs/<dataset>-<model>-<time>)")
    p.add_argument("--resume", help="continue the run in this folder")
    p.add_argument("--seed", type=int, help="seed of the weights, the data order and the sampling (default 0)")
    p.add_argument("--num-workers", type=int, help="DataLoader worker processes (default 1)")
    p.add_argument("--data-root", help="downloads and caches (default $VDSM_DATA_ROOT or ./data_cache)")
    folders = p.add_argument_group("raw data (each for its dataset only)")
    for dest in sorted(set(data.FOLDER_OPTIONS.values())):
        names = [name for name, option in data.FOLDER_OPTIONS.items() if option == dest]
        folders.add_argument(_flag(dest), dest=dest, help=f"folder or file of the raw data of {' / '.join(names)}")
    for dataset, options in data.DATASET_OPTIONS.items():
        group = p.add_argument_group(f"--dataset {dataset} only (recorded in config.json; later commands read them)")
        for dest, (kind, default, help) in options.items():
            if kind is bool:
                group.add_argument(_flag(dest), dest=dest, action="store_true", default=None, help=help)
            else:
                group.add_argument(_flag(dest), dest=dest, type=kind, help=help)
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
    added, groups, seen = {}, {}, set()
    for name, spec in specs_for(model):
        group = groups.get(id(spec))
        if group is None:
            group = groups[id(spec)] = p.add_argument_group(f"--model {' / '.join(spec.names)} only")
            if spec.cli is not None:
                spec.cli.add_flags(_Once(group, seen))
        for f in dataclasses.fields(spec.config_cls):
            if f.name in spec.fixed.get(name, {}):
                continue
            if f.name in added:  # one flag per name: the same type everywhere
                assert type(added[f.name].default) is type(f.default), f.name
                continue
            added[f.name] = f
            _model_flag(group, f)
    return p


class _Once:
    """A parser group that adds each flag once: specs may share a ``cli`` (the prediction models')."""

    def __init__(self, group, seen):
        self.group, self.seen = group, seen

    def add_argument(self, *names, **kwargs):
        if not self.seen.intersection(names):
            self.seen.update(names)
            self.group.add_argument(*names, **kwargs)


def _model_flag(group, field):
    kind = type(field.default)
    if kind is tuple:
        group.add_argument(_flag(field.name), type=int, nargs="+")
    elif kind is bool:
        group.add_argument(_flag(field.name), action=argparse.BooleanOptionalAction)
    else:
        group.add_argument(_flag(field.name), type=kind)


def own_flags(name, spec):
    """The model-specific flags (dests) that apply to ``--model name``."""
    cli = spec.cli.add_flags(argparse.ArgumentParser(add_help=False)) if spec.cli is not None else set()
    own_train = set(spec.train_flags) - set(GENERAL_TRAIN_FLAGS)
    return spec.model_flags(name) | own_train | cli


def given_flags(args):
    """The flags given on the command line (dests whose value is not None)."""
    return {k for k, v in vars(args).items() if v is not None and k != "dataset"}


def check_flags(args, given):
    """One-line UsageErrors for flags that would not apply; then fills the defaults of the others and
    sets ``args.spec`` (and ``args.external``: the model is an import path)."""
    args.model = args.model or default_model(args.resume)
    try:
        spec = registry.get(args.model)
    except ValueError as err:
        raise UsageError(str(err)) from None
    args.spec, args.external = spec, args.model not in registry.NAMES
    if args.dataset not in data.DATASETS:
        raise UsageError(f"unknown dataset {args.dataset!r}: choose one of {', '.join(data.DATASETS)}")
    named = specs_for(args.model)
    owned = {name: own_flags(name, s) for name, s in named}
    mine = owned[args.model]
    foreign = sorted(given & (set().union(*owned.values()) - mine) - set(GENERAL_TRAIN_FLAGS))
    if foreign:
        owners = [name for name in owned if foreign[0] in owned[name]]
        verb = "applies" if len(foreign) == 1 else "apply"
        raise UsageError(f"{', '.join(map(_flag, foreign))} only {verb} to --model {' / '.join(owners)}, "
                         f"not --model {args.model}: drop them")
    own = data.FOLDER_OPTIONS.get(args.dataset)
    wrong = sorted(d for d in set(data.FOLDER_OPTIONS.values()) & given if d != own)
    if wrong:
        hint = f"its data folder flag is {_flag(own)}" if own else "it is generated and needs no data folder"
        verb = "does" if len(wrong) == 1 else "do"
        raise UsageError(f"{', '.join(map(_flag, wrong))} {verb} not apply to --dataset {args.dataset} ({hint}): "
                         f"drop them")
    dataset_options = {dest for options in data.DATASET_OPTIONS.values() for dest in options}
    foreign = sorted(given & (dataset_options - set(data.DATASET_OPTIONS.get(args.dataset, {}))))
    if foreign:
        owners = [name for name, options in data.DATASET_OPTIONS.items() if foreign[0] in options]
        raise UsageError(f"{', '.join(map(_flag, foreign))} only apply to --dataset {' / '.join(owners)}, not "
                         f"--dataset {args.dataset}: drop them")
    mine = sorted(given & set(data.DATASET_OPTIONS.get(args.dataset, {})))
    if args.resume and mine:
        raise UsageError(f"{', '.join(map(_flag, mine))}: a resumed run reads its data options from its config.json; "
                         f"drop them (or start a new run)")
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
    if not 0 <= args.seed < 2 ** 32:
        raise UsageError(f"--seed={args.seed} must be between 0 and {2 ** 32 - 1} (NumPy's seeds)")
    if not 0 < args.lr_drop < 1:
        raise UsageError(f"--lr-drop={args.lr_drop} must be between 0 and 1")
    if args.checkpoint_minutes <= 0:
        raise UsageError(f"--checkpoint-minutes={args.checkpoint_minutes} must be positive")
    if args.clip_norm is not None and args.clip_norm < 0:
        raise UsageError(f"--clip-norm={args.clip_norm} must be at least 0 (0: no clipping)")
    assert set(TRAIN_FLAGS) >= set(spec.train_flags), f"{args.model}: train_flags beyond {sorted(TRAIN_FLAGS)}"
