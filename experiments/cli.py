"""What every command-line entry point shares: one-line errors with exit code 2, device and preset choice."""
import sys

from data import DataError
from guides.common import GuideError
from vdsm.checkpoint import CheckpointError

__all__ = ["UsageError", "cli_main", "choose_device", "choose_preset", "first_line", "refuse_other_data_folders"]


class UsageError(ValueError):
    """Bad command-line input: reported in one line with exit code 2."""


def first_line(err):
    """The message of ``err`` without what Pyro appends to errors raised inside a trace (its shapes)."""
    return (str(err).splitlines() or [""])[0]


def cli_main(parser, command, argv=None):
    """Parse ``argv`` and run ``command(args)``; known input errors print ``error: ...`` and return 2."""
    args = parser.parse_args(argv)
    try:
        command(args)
    except (UsageError, DataError, CheckpointError, GuideError) as err:
        print(f"error: {first_line(err)}", file=sys.stderr)
        return 2
    return 0


def refuse_other_data_folders(args, dataset):
    """UsageError when ``args`` sets the raw-data folder flag of another dataset than ``dataset``;
    returns this dataset's folder option ({} when not given)."""
    from data import FOLDER_OPTIONS

    own = FOLDER_OPTIONS.get(dataset)
    wrong = [d for d in set(FOLDER_OPTIONS.values()) if d != own and getattr(args, d, None) is not None]
    if wrong:
        raise UsageError(f"{', '.join('--' + d.replace('_', '-') for d in sorted(wrong))} do not apply to this "
                         f"{dataset} run: drop them")
    return {own: getattr(args, own)} if own and getattr(args, own, None) else {}


def choose_device(name=None):
    """``torch.device`` of ``--device`` (default: cuda when available); UsageError when CUDA is asked
    for and absent."""
    import torch

    name = name or ("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA device here; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise UsageError(f"--device {name}: {err}") from None


def choose_preset(preset, device, what="preset", small="cpu"):
    """``(name, reason)``: ``preset`` when given, else "paper" on a CUDA device and ``small`` otherwise."""
    if preset:
        return preset, f"--{what} {preset}"
    if device.type == "cuda":
        return "paper", f"default on a CUDA device: the published {what} (--{what} {small} for the small one)"
    return small, f"default without a GPU: the {what} sized for a CPU (--{what} paper for the published one)"
