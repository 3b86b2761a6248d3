"""The runner's command line, built from the model specs: the flags every run takes, then each model's
own (its config fields, its training flags and its ``cli`` flags), and the checks that refuse a flag that
would not apply.

Every default is None in the parser: only flags given on the command line are set, so that flags of
another model, and flags that contradict a resumed run, can be told apart. The help shows the chosen
model's flags only (``--model X --help``), each with its default: the preset's value where the command
line names a dataset (``--dataset D --model X --help``), else the config's.
"""
import argparse
import dataclasses
from pathlib import Path

import data
import torch
from models import registry
from models.config import field_help
from vdsm.runfolder import RunFolderError, read_config_json

from .cli import DATA_ROOT_HELP, UsageError, choose_preset, flag_name, folder_datasets, folder_help
from .config import RECORDED_DEFAULTS, TRAIN_FLAGS, trained_as
from .configs import load_model_preset

__all__ = ["build_parser", "own_flags", "given_flags", "check_flags", "help_context"]

# flags that only steer this process (free to change on --resume), with their defaults
RUNTIME_DEFAULTS = {"model": "vdsm", "num_workers": 1, "eval_sequences": 256, "checkpoint_every": 200,
                    "checkpoint_minutes": 10.0, "keep_last": 3}
GENERAL_TRAIN_FLAGS = ("steps", "batch_size", "lr", "clip_norm")   # every spec's; the others are a model's own
TRAIN_HELP = {"steps": "training steps of each stage; with --resume: extend the run to N",
              "batch_size": "sequences per step", "lr": "Adam's learning rate",
              "seq_len": "frames per training sequence (VDSM's stage 1 pairs two of them)",
              "n_future": "frames predicted in training (a sequence is n_past + n_future frames)",
              "clip_norm": "bound on the gradient norm of the loss per frame (0: no clipping)",
              "identity_kl": "weight of the identity's KL term, in model and guide (a beta on the static latent)"}
USAGE = ("python -m experiments.run --dataset DATASET [--model MODEL] [flags]\n"
         "       python -m experiments.run --resume RUN [flags]")


def _shown(value):
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def _with_default(text, value):
    return f"{text} (default: {_shown(value)})"


class _Formatter(argparse.HelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=34, width=110)


def help_context(argv):
    """``(model, dataset, preset)`` of a command line, read before the parser (whose flags and help
    depend on them); None where the command line leaves one open."""
    pre = argparse.ArgumentParser(add_help=False)
    for name in ("--model", "--resume", "--dataset", "--preset"):
        pre.add_argument(name)
    known = pre.parse_known_args(argv)[0]
    return known.model or default_model(known.resume), known.dataset, known.preset


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


def build_parser(model=None, dataset=None, preset=None):
    """The parser of ``python -m experiments.run``: every model's flags (those of ``model``, an import
    path, too), the help of ``model``'s only, with the defaults of ``preset`` on ``dataset``."""
    model = model or RUNTIME_DEFAULTS["model"]
    p = argparse.ArgumentParser(prog="python -m experiments.run", usage=USAGE, formatter_class=_Formatter,
                                description="Train a model and write a run folder.",
                                epilog="--dataset D --model M --help shows the defaults of that preset; "
                                       "presets: experiments/configs/.")
    p.add_argument("--dataset", help=f"{', '.join(data.DATASETS)}; a new run needs it, --resume reads the run's")
    p.add_argument("--model", help=_with_default(f"{', '.join(registry.NAMES)}, or package.module:SPEC of your own",
                                                 "vdsm; --resume: the run's"))
    p.add_argument("--preset", help="cpu or paper (default: paper on a CUDA device, cpu otherwise)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--out", help="run folder (default: runs/<dataset>-<model>-<time>)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this folder, as its config.json says")
    p.add_argument("--seed", type=int, help=_with_default("seed of the weights, the data order and the sampling", 0))
    p.add_argument("--train-split", choices=["train", "trainval"],
                   help=_with_default("trainval: train on val too (the run's val numbers are then on trained "
                                      "sequences)", "train"))
    p.add_argument("--data-root", help=DATA_ROOT_HELP)
    p.add_argument("--num-workers", type=int, help=_with_default("DataLoader worker processes", 1))
    p.add_argument("--eval-sequences", type=int, help=_with_default("val sequences of the end-of-run numbers", 256))
    p.add_argument("--no-progress", action="store_true", default=None, help="no progress bar (default: a bar)")
    p.add_argument("--amp", action="store_true", default=None,
                   help="bf16 autocast of the networks; ELBO terms stay fp32 (default: fp32)")
    _data_flags(p, dataset)
    safety = p.add_argument_group("checkpoints and faults")
    safety.add_argument("--checkpoint-every", type=int, help=_with_default("steps between checkpoints", 200))
    safety.add_argument("--checkpoint-minutes", type=float, help=_with_default("minutes between checkpoints", 10))
    safety.add_argument("--keep-last", type=int, help=_with_default("periodic checkpoints kept per stage", 3))
    safety.add_argument("--max-bad-steps", type=int,
                        help=_with_default("non-finite steps in a row before a rollback to the last checkpoint", 5))
    safety.add_argument("--lr-drop", type=float, help=_with_default("learning-rate factor at each rollback", 0.5))
    _model_flags(p, model, dataset, preset)
    for action in p._actions:   # short placeholders: a flag and its help fit one line
        if action.option_strings and action.metavar is None and action.nargs is None and action.type is not None:
            action.metavar = {int: "N", float: "X"}.get(action.type, "S" if action.choices is None else None)
    return p


def _data_flags(p, dataset):
    """The raw-data folder flags and the dataset options: those of ``dataset`` shown, when given."""
    folders = p.add_argument_group("raw data")
    for dest in sorted(set(data.FOLDER_OPTIONS.values())):
        shown = dataset is None or dataset in folder_datasets(dest)
        folders.add_argument(flag_name(dest), dest=dest, metavar="PATH", help=folder_help(dest) if shown else argparse.SUPPRESS)
    for name, options in data.DATASET_OPTIONS.items():
        group = p.add_argument_group(f"--dataset {name} (recorded in config.json)" if name == dataset else None)
        for dest, (kind, default, text) in options.items():
            text = text if name == dataset else argparse.SUPPRESS
            if kind is bool:
                group.add_argument(flag_name(dest), dest=dest, action="store_true", default=None, help=text)
            else:
                group.add_argument(flag_name(dest), dest=dest, type=kind, help=text)
    if dataset is None and data.DATASET_OPTIONS:
        p.epilog += " " + " ".join(f"--dataset {name} --help: its options." for name in data.DATASET_OPTIONS)


def _model_flags(p, model, dataset, preset):
    """Every model's flags (each name once); the help of ``model``'s, with their defaults."""
    try:
        chosen = registry.get(model)
    except ValueError:
        chosen = None   # refused by check_flags with its one-line error
    training = p.add_argument_group("training (default: the preset's)" if chosen is None else
                                    f"training of --model {model}")
    added, groups, seen = {}, {}, set()
    named = sorted(specs_for(model), key=lambda item: item[1] is not chosen)   # the chosen model's flags first
    for name, spec in named:
        if id(spec) in groups:
            continue
        mine = spec is chosen
        title = f"--model {model} (defaults: {'the preset' if dataset else 'the config; --dataset D --help: the preset'})"
        group = groups[id(spec)] = p.add_argument_group(title if mine else None)
        if spec.cli is not None:
            spec.cli.add_flags(_Once(group, seen, shown=mine))
        for f in dataclasses.fields(spec.config_cls):
            if f.name in spec.fixed.get(model if mine else name, {}):
                continue
            if f.name in added:  # one flag per name: the same type everywhere
                assert type(added[f.name].default) is type(f.default), f.name
                continue
            added[f.name] = f
            _model_flag(group, f, field_help(spec.config_cls, f.name) if mine else argparse.SUPPRESS)
    for key in TRAIN_FLAGS:
        kind = TRAIN_FLAGS[key]
        shown = chosen is None or key in chosen.train_flags
        training.add_argument(flag_name(key), type=kind, help=TRAIN_HELP[key] if shown else argparse.SUPPRESS)
    if chosen is not None:
        _show_defaults(p, chosen, model, _preset_of(chosen, model, dataset, preset))


def _preset_of(spec, model, dataset, preset):
    """The config of ``preset`` (default: as a run on this machine picks it) for ``dataset``, or None."""
    if dataset is None:
        return None
    try:
        name, _ = choose_preset(preset, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        return load_model_preset(spec, dataset, name, model)
    except ValueError:
        return None


def _show_defaults(p, spec, model, preset):
    """Append each shown flag's default to its help: the preset's value, else the config's default."""
    config_defaults = {f.name: f.default for f in dataclasses.fields(spec.config_cls)}
    defaults = {**config_defaults, **(preset or {}).get("model", {})}
    if preset is not None:
        for key in spec.train_flags:
            values = {s.section: preset[s.section][key] for s in spec.stages}
            same = len(set(map(str, values.values()))) == 1
            defaults[key] = next(iter(values.values())) if same else ", ".join(f"{k} {v}" for k, v in values.items())
    if spec.cli is not None and hasattr(spec.cli, "defaults"):
        defaults.update(spec.cli.defaults(preset))
    for action in p._actions:
        if action.help not in (None, argparse.SUPPRESS) and action.dest in defaults and "(default" not in action.help:
            action.help = _with_default(action.help, defaults[action.dest])
        elif action.dest in TRAIN_FLAGS and action.help not in (None, argparse.SUPPRESS):
            action.help += " (default: the preset's)"


class _Once:
    """A parser group that adds each flag once (specs may share a ``cli``: the prediction models'),
    with its help hidden unless ``shown``."""

    def __init__(self, group, seen, shown=True):
        self.group, self.seen, self.shown = group, seen, shown

    def add_argument(self, *names, **kwargs):
        if not self.seen.intersection(names):
            self.seen.update(names)
            self.group.add_argument(*names, **(kwargs if self.shown else {**kwargs, "help": argparse.SUPPRESS}))


def _model_flag(group, field, text):
    kind = type(field.default)
    if kind is tuple:
        group.add_argument(flag_name(field.name), type=int, nargs="+", metavar="N", help=text)
    elif kind is bool:
        group.add_argument(flag_name(field.name), action=argparse.BooleanOptionalAction, help=text)
    else:
        group.add_argument(flag_name(field.name), type=kind, help=text)


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
    if args.dataset is None:
        if not args.resume:
            raise UsageError(f"--dataset is required for a new run: one of {', '.join(data.DATASETS)}")
        args.dataset = read_config_json(args.resume, "--resume", need_dataset=True)["dataset"]
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
        raise UsageError(f"{', '.join(map(flag_name, foreign))} only {verb} to --model {' / '.join(owners)}, "
                         f"not --model {args.model}: drop them")
    own = data.FOLDER_OPTIONS.get(args.dataset)
    wrong = sorted(d for d in set(data.FOLDER_OPTIONS.values()) & given if d != own)
    if wrong:
        hint = f"its data folder flag is {flag_name(own)}" if own else "it is generated and needs no data folder"
        verb = "does" if len(wrong) == 1 else "do"
        raise UsageError(f"{', '.join(map(flag_name, wrong))} {verb} not apply to --dataset {args.dataset} ({hint}): "
                         f"drop them")
    dataset_options = {dest for options in data.DATASET_OPTIONS.values() for dest in options}
    foreign = sorted(given & (dataset_options - set(data.DATASET_OPTIONS.get(args.dataset, {}))))
    if foreign:
        owners = [name for name, options in data.DATASET_OPTIONS.items() if foreign[0] in options]
        raise UsageError(f"{', '.join(map(flag_name, foreign))} only apply to --dataset {' / '.join(owners)}, not "
                         f"--dataset {args.dataset}: drop them")
    mine = sorted(given & set(data.DATASET_OPTIONS.get(args.dataset, {})))
    if args.resume and mine:
        raise UsageError(f"{', '.join(map(flag_name, mine))}: a resumed run reads its data options from its config.json; "
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
            raise UsageError(f"{flag_name(name)}={getattr(args, name)} must be at least {minimum}")
    if not 0 <= args.seed < 2 ** 32:
        raise UsageError(f"--seed={args.seed} must be between 0 and {2 ** 32 - 1} (NumPy's seeds)")
    if not 0 < args.lr_drop < 1:
        raise UsageError(f"--lr-drop={args.lr_drop} must be between 0 and 1")
    if args.checkpoint_minutes <= 0:
        raise UsageError(f"--checkpoint-minutes={args.checkpoint_minutes} must be positive")
    if args.clip_norm is not None and args.clip_norm < 0:
        raise UsageError(f"--clip-norm={args.clip_norm} must be at least 0 (0: no clipping)")
    assert set(TRAIN_FLAGS) >= set(spec.train_flags), f"{args.model}: train_flags beyond {sorted(TRAIN_FLAGS)}"
