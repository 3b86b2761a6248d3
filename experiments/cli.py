"""What every command-line entry point shares: one-line errors with exit code 2."""
import sys

from data import DataError
from vdsm.checkpoint import CheckpointError

__all__ = ["UsageError", "cli_main", "preset_config"]


class UsageError(ValueError):
    """Bad command-line input: reported in one line with exit code 2."""


def cli_main(parser, command, argv=None):
    """Parse ``argv`` and run ``command(args)``; known input errors print ``error: ...`` and return 2."""
    args = parser.parse_args(argv)
    try:
        command(args)
    except (UsageError, DataError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def preset_config(args, loader):
    """``(preset name, config dict)``: ``--preset`` (default paper on a GPU, cpu otherwise) of
    ``args.dataset`` through ``loader(dataset, preset)``; unknown names become UsageErrors."""
    import torch

    preset = args.preset or ("paper" if torch.cuda.is_available() else "cpu")
    try:
        return preset, loader(args.dataset, preset)
    except ValueError as err:
        raise UsageError(str(err)) from None
