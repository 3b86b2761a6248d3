"""What every command-line entry point shares: one-line errors with exit code 2, signals that stop
with a checkpoint (exit 130 / 143), device and preset choice, a run folder's config read and checked."""
import errno
import math
import sys

import data
from data import DataError
from guides.common import GuideError
from vdsm.checkpoint import CheckpointError
from vdsm.stopping import Interrupted, signals_handled

__all__ = ["UsageError", "cli_main", "add_place_flags", "DATA_ROOT_HELP", "folder_datasets", "folder_help",
           "choose_device", "choose_preset", "first_line", "refuse_other_data_folders", "given_data_folder",
           "recorded_data_options", "run_data_options", "read_run_config"]


class UsageError(ValueError):
    """Bad command-line input: reported in one line with exit code 2."""


def first_line(err):
    """The message of ``err`` without what Pyro appends to errors raised inside a trace (its shapes)."""
    return (str(err).splitlines() or [""])[0]


def cli_main(parser, command, argv=None):
    """Parse ``argv`` and run ``command(args)``; known input errors (and a full disk) print ``error: ...``
    and return 2; SIGINT / SIGTERM print where training stopped and return 130 / 143."""
    args = parser.parse_args(argv)
    try:
        with signals_handled():
            check_numbers(args)
            command(args)
    except (UsageError, DataError, CheckpointError, GuideError) as err:
        print(f"error: {first_line(err)}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(stop.message(), file=sys.stderr)
        return stop.exit_code
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"error: no space left on the disk of {err.filename or 'the output folder'}: free some space or write "
              f"to another disk; files already written are complete", file=sys.stderr)
        return 2
    return 0


def check_numbers(args):
    """UsageError for a NaN or infinite number on the command line (argparse's float() takes them) and
    for a seed NumPy refuses."""
    for name, value in sorted(vars(args).items()):
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{flag_name(name)}={value} must be a finite number")
    seed = getattr(args, "seed", None)
    if isinstance(seed, int) and not 0 <= seed < 2 ** 32:
        raise UsageError(f"--seed={seed} must be between 0 and {2 ** 32 - 1} (NumPy's seeds)")


def read_run_config(run_dir, flag="--run"):
    """``(spec, config)`` of the run folder ``run_dir``: its config.json read (one-line errors for a missing,
    damaged or hand-edited file), the model it names, every key completed and type-checked."""
    from models.registry import spec_of_config
    from vdsm.runfolder import read_config_json

    config = read_config_json(run_dir, flag, need_dataset=True)
    try:
        spec = spec_of_config(config)
    except ValueError as err:
        raise UsageError(f"{flag} {run_dir}: {err}") from None
    return spec, spec.complete(config, where=f"{run_dir}/config.json")


def refuse_other_data_folders(args, dataset):
    """UsageError when ``args`` sets the raw-data folder flag of another dataset than ``dataset``;
    returns this dataset's folder option ({} when not given)."""
    from data import FOLDER_OPTIONS

    own = FOLDER_OPTIONS.get(dataset)
    wrong = [d for d in set(FOLDER_OPTIONS.values()) if d != own and getattr(args, d, None) is not None]
    if wrong:
        raise UsageError(f"{', '.join(map(flag_name, sorted(wrong)))} do not apply to this "
                         f"{dataset} run: drop them")
    return {own: getattr(args, own)} if own and getattr(args, own, None) else {}


def run_data_root(args, config):
    """The data root (downloads, caches, the judges) of a command on a run: ``--data-root`` when given, else
    the one the run was trained with (config.json's "data_root", recorded when its command gave one), else
    None (the default root)."""
    return args.data_root if args.data_root is not None else config.get("data_root")


def given_data_folder(args, dataset):
    """``{option: folder}`` of ``dataset``'s raw-data folder flag when this command line gives it, else {}."""
    from data import FOLDER_OPTIONS

    folder = FOLDER_OPTIONS.get(dataset)
    return {folder: getattr(args, folder)} if folder and getattr(args, folder, None) is not None else {}


def recorded_data_options(config, data_folder, **options):
    """The dataset options of a run's command: those config.json records ("data_options": the dataset's
    own options, the split a run fixed, the data folder it used), ``data_folder`` (the command line's
    folder flag, ``given_data_folder``) in place of the recorded one, then ``options`` (frames per
    sequence, ...)."""
    return {**config.get("data_options", {}), **data_folder, **options}


def run_data_options(args, config, **options):
    """``recorded_data_options`` with the data folder flag of ``args``."""
    return recorded_data_options(config, given_data_folder(args, config["dataset"]), **options)


#: the help line of every command's --data-root
DATA_ROOT_HELP = (
    "downloads, caches and the judges (default: $VDSM_DATA_ROOT or ./data_cache; a run trained with "
    "--data-root records it for its later commands)")


def folder_datasets(dest):
    """The datasets whose raw-data folder flag is ``dest`` (a value of ``data.FOLDER_OPTIONS``)."""
    return [name for name, option in data.FOLDER_OPTIONS.items() if option == dest]


def flag_name(dest):
    """The command-line spelling of an argparse dest: ``sprites_layers`` -> ``--sprites-layers``."""
    return "--" + dest.replace("_", "-")


def folder_help(dest):
    return f"the raw data of {' / '.join(folder_datasets(dest))} (default: under the data root)"


def add_place_flags(p, device=True, folders=None):
    """``--device`` (when ``device``), ``--data-root`` and the raw-data folder flags (``folders``: their
    dests; default: every dataset's), each with its help line."""
    if device:
        p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--data-root", default=None, help=DATA_ROOT_HELP)
    for dest in folders or sorted(set(data.FOLDER_OPTIONS.values())):
        p.add_argument(flag_name(dest), dest=dest, default=None, metavar="PATH", help=folder_help(dest))


def choose_device(name=None):
    """``torch.device`` of ``--device`` (default: cuda when available); UsageError when CUDA is asked
    for and absent."""
    import torch

    name = name or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UsageError(f"--device {name}: {first_line(err)}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: no CUDA device here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    elif device.type != "cpu":   # mps, meta, xla...: never tested with these models, and meta holds no data
        raise UsageError(f"--device {name}: the library trains on cpu and cuda only; use --device cpu")
    return device


def choose_preset(preset, device, what="preset", small="cpu"):
    """``(name, reason)``: ``preset`` when given, else "paper" on a CUDA device and ``small`` otherwise."""
    if preset:
        return preset, f"--{what} {preset}"
    if device.type == "cuda":
        return "paper", f"default on a CUDA device: the published {what} (--{what} {small} for the small one)"
    return small, f"default without a GPU: the {what} sized for a CPU (--{what} paper for the published one)"


def unfinished_stages(run_dir, spec, config, allowed, offer=True):
    """``{stage tag: [step, planned steps]}`` of the stages whose newest checkpoint is short of their
    steps (None when every trained stage finished); UsageError naming ``--resume`` unless ``allowed``
    (``--unfinished``: the caller scores the run as it is and records this beside its numbers)."""
    from pathlib import Path

    from vdsm.checkpoint import CheckpointManager

    short = {}
    for stage in spec.stages:
        manager = CheckpointManager(Path(run_dir) / "checkpoints", stage.tag)
        if manager.exists() and stage.section in config:
            step = int(manager.load_newest()["step"])
            if step < config[stage.section]["steps"]:
                short[stage.tag] = [step, config[stage.section]["steps"]]
    if short and not allowed:
        detail = ", ".join(f"{tag} at step {step} of {steps}" for tag, (step, steps) in short.items())
        raise UsageError(f"--run {run_dir}: its training has not finished ({detail}): continue it with python -m "
                         f"experiments.run --resume {run_dir}"
                         + (", or pass --unfinished to score it as it is" if offer else " first"))
    return short or None
