"""A run's config, generic over model specs: a preset (new run) or the saved config.json (``--resume``),
the command line's overrides applied and checked, and the extensions of a resumed run.

Every check raises a one-line ``UsageError`` before anything is written.
"""
import copy
import time
from pathlib import Path

import data
from vdsm import __version__
from vdsm.checkpoint import CheckpointManager
from vdsm.runfolder import read_config_json

from .cli import UsageError, choose_preset, flag_name
from .configs import load_model_preset

__all__ = ["TRAIN_FLAGS", "RECORDED_DEFAULTS", "trained_as", "resolve", "new_config", "resume_config", "resume_changes",
           "apply_extension", "prepare"]

#: training flags a spec may take (``ModelSpec.train_flags``): each sets that key of every stage section
TRAIN_FLAGS = {"steps": int, "batch_size": int, "lr": float, "seq_len": int, "n_future": int, "clip_norm": float,
               "identity_kl": float}
COUNTS = ("steps", "batch_size", "seq_len", "n_future")
#: flags recorded in config.json (a different value on --resume is refused), with their defaults
RECORDED_DEFAULTS = {"seed": 0, "train_split": "train", "max_bad_steps": 5, "lr_drop": 0.5}


def trained_as(saved):
    """The ``--model`` a saved config.json was trained as (an import path for a model outside the registry)."""
    return saved.get("model_spec") or saved.get("model_name")


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def resolve(args, base, spec):
    """``base`` (a preset or a saved config) with the command line's overrides, checked."""
    config = copy.deepcopy(base)
    config.update(model_name=spec.name if args.external else args.model, seed=args.seed, train_split=args.train_split,
                  safety={"max_bad_steps": args.max_bad_steps, "lr_drop": args.lr_drop})
    if args.external:  # found again by its import path when the run is resumed or loaded
        config["model_spec"] = args.model
    config["model"].update(spec.fixed.get(args.model, {}))
    for name in spec.model_flags(args.model):
        if getattr(args, name, None) is not None:
            config["model"][name] = _plain(getattr(args, name))
    several = len(spec.stages) > 1
    for stage in spec.stages:
        section = config[stage.section]
        for key in spec.train_flags:
            if getattr(args, key, None) is not None:
                section[key] = getattr(args, key)
    if spec.cli is not None:
        try:
            config = spec.cli.resolve(args, config)
        except (ValueError, TypeError) as err:
            raise UsageError(str(err)) from None
    for stage in spec.stages:
        section, where = config[stage.section], f" ({stage.section})" if several else ""
        for key in COUNTS:
            if key in section and section[key] < 1:
                raise UsageError(f"{flag_name(key)}={section[key]}{where} must be at least 1")
        if section["lr"] <= 0:
            raise UsageError(f"--lr={section['lr']}{where} must be positive")
        if section.get("identity_kl", 0) < 0:
            raise UsageError(f"--identity-kl={section['identity_kl']}{where} must be at least 0")
    try:
        spec.config_cls.from_dict(config["model"]).check()
    except (ValueError, TypeError) as err:
        raise UsageError(f"bad {spec.name} hyperparameter: {err}") from None
    config["model"] = spec.complete_model(config["model"])
    return config


def new_config(args, device, spec):
    try:
        preset, reason = choose_preset(args.preset, device)
        base = load_model_preset(spec, args.dataset, preset, args.model)
    except ValueError as err:
        raise UsageError(str(err)) from None
    options = data_options_of(args)
    sized = copy.deepcopy(base)
    sized["model"].update(data.model_fields(args.dataset, options))   # e.g. the channels of the user's videos
    config = resolve(args, {"vdsm_version": __version__, "preset": preset, "preset_reason": reason,
                            "dataset": args.dataset, **sized}, spec)
    if options:
        config["data_options"] = options
    if args.data_root is not None:   # the run's later commands find its caches and judge there
        config["data_root"] = str(Path(args.data_root).expanduser().resolve())
    # the preset's departures list describes the preset: what the command line changed in it is listed too
    old, new = _flatten(base), _flatten(config)
    changed = {k: {"preset": old[k], "run": new[k]} for k in sorted(old) if k in new and old[k] != new[k]}
    if changed:
        config["changed_from_preset"] = changed
    return config


def data_options_of(args):
    """What a new run records as its data options: the dataset's own options (given or default) and
    the data folder it was given (absolute)."""
    options = {dest: getattr(args, dest) if getattr(args, dest, None) is not None else default
               for dest, (_, default, _) in data.DATASET_OPTIONS.get(args.dataset, {}).items()}
    folder = data.FOLDER_OPTIONS.get(args.dataset)
    if folder and getattr(args, folder, None) is not None:
        options[folder] = str(Path(getattr(args, folder)).expanduser().resolve())
    return options


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
        if section["schedule_steps"] is None:   # a second extension keeps the first length
            section["schedule_steps"] = old
        config.setdefault("extended", []).append({"section": path.split(".")[0], "from": old, "to": new,
                                                  "date": time.strftime("%Y-%m-%d %H:%M")})
    return config


def resume_config(args, run_dir, spec):
    """The saved config of ``--resume DIR`` (completed), the command line's overrides applied, checked."""
    saved = read_config_json(run_dir, "--resume", need_dataset=True)
    if saved.get("dataset") != args.dataset:
        raise UsageError(f"--resume {run_dir}: that run trained on {saved['dataset']!r}, not {args.dataset!r}")
    if trained_as(saved) != args.model:
        raise UsageError(f"--resume {run_dir}: that run is --model {trained_as(saved)}, not {args.model}")
    if args.preset and args.preset != saved.get("preset"):
        raise UsageError(f"--resume {run_dir}: that run used --preset {saved.get('preset')}, not {args.preset}")
    saved = spec.complete(saved, where=f"{run_dir}/config.json")
    for key, default in RECORDED_DEFAULTS.items():  # recorded flags not given now keep the run's values
        if key not in args.given:
            setattr(args, key, saved.get(key, saved.get("safety", {}).get(key, default)))
    return saved, resolve(args, saved, spec)


def prepare(args, device):
    """(run folder or None, config, extended stages) for this command line, checked; writes nothing."""
    spec = args.spec
    if not args.resume:
        return None, new_config(args, device, spec), {}
    run_dir = Path(args.resume)
    saved, wanted = resume_config(args, run_dir, spec)
    extended = resume_changes(saved, wanted, [f"{stage.section}.steps" for stage in spec.stages], run_dir)
    for i, stage in enumerate(spec.stages):   # a later stage trained on this one: only the last may grow
        later = [s for s in spec.stages[i + 1:] if CheckpointManager(run_dir / "checkpoints", s.tag).exists()]
        if f"{stage.section}.steps" in extended and later:
            raise UsageError(f"--resume {run_dir}: {later[0].title} was trained on this {stage.title}; extend "
                             f"{later[-1].title} only (--{later[-1].tag}-steps) or start a new run")
    return run_dir, apply_extension(wanted, extended), extended
