"""Shared test helpers: the flags of a tiny VDSM run (seconds on a CPU), a noise-free guide."""
import torch.nn as nn

from vdsm.handlers import use_means


class MeanGuide(nn.Module):
    """``guide`` with every latent at its mean: the loss is a deterministic function of the batch."""

    def __init__(self, guide):
        super().__init__()
        self.guide = guide

    def forward(self, x, **kwargs):
        with use_means():
            return self.guide(x, **kwargs)


def tiny_run_flags(steps=2, batch_size=2, prior_components=0):
    """Flags of a tiny VDSM run; ``steps=None`` leaves the step counts to the caller.

    ``prior_components`` 0: no fitted priors (their EM needs a posterior pass over every training
    sequence, the slowest part of a tiny run); the shared ``vdsm_run`` fixture fits them, with 4.
    """
    return ["--z-dim", "4", "--n-experts", "3", "--encoder-widths", "4", "4", "4", "4", "--encoder-features", "8",
            "--decoder-widths", "8", "8", "4", "4", "--dynamics-dim", "3", "--trans-dim", "4", "--rnn-dim", "8",
            "--rnn-layers", "1", "--batch-size", str(batch_size), *(["--steps", str(steps)] if steps else []),
            "--eval-sequences", "4", "--num-workers", "0", "--no-progress",
            "--identity-prior-components", str(prior_components), "--dynamics-prior-components", str(prior_components)]


# the shared tiny run (conftest's ``vdsm_run``): a --resume of it must restate these
SHARED_RUN_FLAGS = tiny_run_flags(prior_components=4)
# a tiny SVG-LP run (conftest's ``svg_run``)
SVG_TINY = ["--nf", "4", "--g-dim", "8", "--z-dim", "2", "--rnn-dim", "8", "--batch-size", "2", "--steps", "2",
            "--n-future", "3", "--eval-samples", "2", "--eval-sequences", "3", "--num-workers", "0", "--no-progress"]


def copy_run(run, folder):
    """A copy of a run folder, for a test that writes into it (the shared run stays as trained)."""
    import shutil

    shutil.copytree(run, folder)
    return folder


def run_main(module, argv):
    """``python -m experiments.<module> ARGV`` in this process: (exit code, stdout, stderr) as the
    shell sees them (argparse's exits included), without a new interpreter's seconds of imports.
    The real shell path runs once per command elsewhere (``vdsm_run``, the bad-input test)."""
    import contextlib
    import importlib
    import io

    main = importlib.import_module(f"experiments.{module}").main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return code, out.getvalue(), err.getvalue()
