"""Shared test helpers: the flags of a tiny VDSM run (seconds on a CPU), a noise-free guide, the bf16
autocast check."""
import pyro
import torch
import torch.nn as nn
from pyro import poutine
from pyro.infer import Trace_ELBO

from vdsm.api import use_means


class MeanGuide(nn.Module):
    """``guide`` with every latent at its mean: the loss is a deterministic function of the batch."""

    def __init__(self, guide):
        super().__init__()
        self.guide = guide

    def forward(self, x, **kwargs):
        with use_means():
            return self.guide(x, **kwargs)


def tiny_run_flags(steps=2, batch_size=2):
    """Flags of a tiny VDSM run; ``steps=None`` leaves the step counts to the caller."""
    return ["--z-dim", "4", "--n-experts", "3", "--encoder-widths", "4", "4", "4", "4", "--encoder-features", "8",
            "--decoder-widths", "8", "8", "4", "4", "--dynamics-dim", "3", "--trans-dim", "4", "--rnn-dim", "8",
            "--rnn-layers", "1", "--batch-size", str(batch_size), *(["--steps", str(steps)] if steps else []),
            "--eval-sequences", "4", "--num-workers", "0", "--no-progress",
            # no fitted priors (EM over every training sequence): tests/test_fitted_prior.py runs them small
            "--identity-prior-components", "0", "--dynamics-prior-components", "0"]


def check_elbo_under_bf16_autocast(model, guide, x, factors, params):
    """--amp runs the networks in bf16: every site's log-prob and the ELBO must still be fp32, the
    ELBO within 2% of the fp32 one (same random numbers), and its gradients finite."""
    losses = []
    for amp in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            pyro.set_rng_seed(0)
            guide_trace = poutine.trace(guide).get_trace(x, factors=factors)
            trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, factors=factors)
            for t in (trace, guide_trace):
                t.compute_log_prob()
                for name, site in t.nodes.items():
                    if site["type"] == "sample" and name != "sequences":
                        assert site["log_prob"].dtype == torch.float32, name
            pyro.set_rng_seed(0)
            losses.append(Trace_ELBO().differentiable_loss(model, guide, x, factors=factors))
    assert losses[1].dtype == torch.float32
    assert abs(losses[1].item() - losses[0].item()) < 0.02 * abs(losses[0].item())
    losses[1].backward()
    assert all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)
