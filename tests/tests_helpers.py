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


def frames(b, t):
    """Random frames [b, t, 3, 64, 64], the same for the same shape."""
    import torch

    return torch.rand(b, t, 3, 64, 64, generator=torch.Generator().manual_seed(b * 10 + t))


def train_resume_evaluate_damage(model, flags, tmp_path, data_dirs, judge_root):
    """A Sprites model with the judge protocols through the commands: 2 steps (``flags``: its tiny sizes),
    a resume to 4 without --model, evaluate, and damage of its decoder; returns the run folder's
    config.json, the resumed stage's statistics and the judge protocol's results."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    run = tmp_path / model
    common = ["--sprites-layers", data_dirs.sprites, "--data-root", judge_root]
    code, _, err = run_main("run", ["--dataset", "sprites", "--model", model, *common, "--out", run, "--steps", "2",
                                    *flags])
    assert code == 0, err
    for picture in ("reconstructions.png", "identity_swap.png", "action_transfer.png", "samples.gif"):
        assert (run / picture).stat().st_size > 0, picture
    code, _, err = run_main("run", ["--dataset", "sprites", *common, "--resume", run, "--steps", "4",
                                    "--num-workers", "0", "--no-progress"])
    assert code == 0, err
    stats = json.loads((run / "metrics.json").read_text())["train"]
    assert stats["steps"] == 4 and stats["resumed_at_step"] == 2, stats
    code, _, err = run_main("evaluate", ["--run", run, "--judge-steps", "3", "--batch-size", "6", "--repeats", "1",
                                         *common])
    assert code == 0, err
    protocol = json.loads((run / "metrics.json").read_text())["judge_protocol"]
    assert protocol["model"] == model and set(protocol["fix_dynamics"]["prior_identity"]) == {"body", "bottom", "top",
                                                                                             "hair"}
    damage = subprocess.run([sys.executable, "-m", "experiments.damage", "--run", str(run), "--judge-steps", "3",
                             "--iterations", "1", "--hits", "5", "--repeats", "1", "--sequences", "4", "--which",
                             "decoder", "--data-root", str(judge_root), "--sprites-layers", str(data_dirs.sprites),
                             "--out", str(tmp_path / "damage"), "--no-progress"],
                            cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    assert damage.returncode == 0, damage.stderr
    assert "| decoder |" in (tmp_path / "damage" / "fragility.md").read_text()
    return json.loads((run / "config.json").read_text()), stats, protocol



def release_kls(nets, x, z):
    """KL_f and KL_z summed over the batch, written as the Sprites releases (C-DSVAE, SPYL, DBSE) compute
    them: closed form from the means and log-variances of ``nets.posterior(x)``, the two-layer LSTM prior
    teacher-forced on the posterior's draws z [B, T, z_dim] from z_0 = 0."""
    import torch

    f_mean, f_scale, z_mean, z_scale = nets.posterior(x)
    f_logvar, z_logvar = 2 * f_scale.log(), 2 * z_scale.log()
    kld_f = -0.5 * torch.sum(1 + f_logvar - f_mean ** 2 - f_logvar.exp())
    b, t = z.shape[:2]
    p_mean, p_logvar, z_prev, state = [], [], torch.zeros(b, z.shape[-1]), None
    for k in range(t):   # sample_motion_prior_train: the prior teacher-forced on the posterior's draws
        loc, scale, state = nets.prior_step(z_prev, state)
        p_mean.append(loc)
        p_logvar.append(2 * scale.log())
        z_prev = z[:, k]
    p_mean, p_logvar = torch.stack(p_mean, 1), torch.stack(p_logvar, 1)
    kld_z = 0.5 * torch.sum(p_logvar - z_logvar + (z_logvar.exp() + (z_mean - p_mean) ** 2) / p_logvar.exp() - 1)
    return kld_f, kld_z
