"""Example custom guides for VDSM stage 2, usable with the runner via ``--guide2 MODULE:FACTORY``.

A guide factory takes the :class:`models.vdsm.VDSMRun` being trained and returns a guide
module whose ``forward(x, *, factors)`` samples the model's latent sites ("identity",
"dynamics", "z_1".."z_T"). These two show the two ways to bring your own inference:

* :class:`MeanFieldStage2Guide` - a hand-written guide: every z_t independent given
  the frame (no recurrence, so it runs without a loop over networks), d from pooled
  pose features.
* :func:`autonormal_identity` - a Pyro autoguide for some sites (``AutoNormal`` for
  "identity") combined with the custom guide for the rest.
  ``AutoNormal`` learns one free posterior per batch slot (it is not amortised), so
  this is a demonstration of the mechanics rather than a good model of identity: it cannot
  infer the identity of new sequences, and asked about a batch of another size than it was
  fitted at (evaluation, swaps) it raises a one-line :class:`guides.common.GuideError`.

:class:`PyroParamStage1Guide` is a third kind: a guide written only with ``pyro.param`` sites
(no ``nn.Module`` parameters), which ``vdsm.train.train_stage`` trains and restores like any other.
"""
import pyro
import torch
import torch.nn as nn
import torch.nn.functional as F
from pyro import poutine
from pyro.infer.autoguide import AutoNormal

from vdsm.precision import Normal

from .common import GuideError

__all__ = ["MeanFieldStage2Guide", "AutoNormalIdentityGuide", "PyroParamStage1Guide", "mean_field",
           "autonormal_identity"]


class MeanFieldStage2Guide(nn.Module):
    """q(identity | x) q(d | x) prod_t q(z_t | x_t), reusing a (frozen) stage-1 frame encoder."""

    def __init__(self, config, encoder, infer_identity=True):
        super().__init__()
        self.config, self.encoder, self.infer_identity = config, encoder, infer_identity
        self.d_head = nn.Linear(2 * config.z_dim, 2 * config.dynamics_dim)
        self.z_refine = nn.Linear(config.z_dim, 2 * config.z_dim)

    def forward(self, x, *, factors, plate=None, **unused):
        """``plate``: an already created "sequences" plate to reuse (when combined with an autoguide)."""
        z_means, _, id_loc, id_scale = self.encoder.encode_sequences(x)
        pooled = torch.cat([z_means.mean(1), z_means[:, -1] - z_means[:, 0]], -1)
        d_loc, d_scale = self.d_head(pooled).chunk(2, -1)
        z_loc, z_scale = self.z_refine(z_means).chunk(2, -1)
        with plate or pyro.plate("sequences", x.shape[0], dim=-1):
            if self.infer_identity:
                with poutine.scale(scale=factors["identity"]):
                    pyro.sample("identity", Normal(id_loc, id_scale).to_event(1))
            with poutine.scale(scale=factors["dynamics"]):
                pyro.sample("dynamics", Normal(d_loc, F.softplus(d_scale) + 1e-4).to_event(1))
            with poutine.scale(scale=factors["z"]):
                for t in range(x.shape[1]):  # separate sites to match the model; values need no recurrence
                    pyro.sample(f"z_{t + 1}", Normal(z_loc[:, t] + z_means[:, t],
                                                     F.softplus(z_scale[:, t]) + 1e-4).to_event(1))


def mean_field(vdsm):
    """Factory for ``--guide2 guides.examples:mean_field``."""
    return MeanFieldStage2Guide(vdsm.config, vdsm.guide1.encoder)


class AutoNormalIdentityGuide(nn.Module):
    """Pyro's ``AutoNormal`` for the "identity" site, :class:`MeanFieldStage2Guide` for the rest.

    The autoguide runs inside the same ``poutine.scale`` as the model's identity site, so
    the annealed KL stays a proper (scaled) ELBO term.
    """

    def __init__(self, vdsm):
        super().__init__()
        self.identity_guide = AutoNormal(poutine.block(vdsm.model2, expose=["identity"]))
        self.rest = MeanFieldStage2Guide(vdsm.config, vdsm.guide1.encoder, infer_identity=False)
        self.batch_size = None  # set by the first call: AutoNormal's parameters have one row per batch slot

    def forward(self, x, *, factors, **unused):
        if self.batch_size is None:
            self.batch_size = x.shape[0]
        elif x.shape[0] != self.batch_size:
            raise GuideError(f"guides.examples:autonormal_identity keeps one identity posterior per batch slot "
                             f"(AutoNormal is not amortised): fitted at batch size {self.batch_size}, it cannot "
                             f"infer the identities of a batch of {x.shape[0]} other sequences; use an amortised "
                             f"guide such as guides.examples:mean_field")
        with poutine.scale(scale=factors["identity"]):
            self.identity_guide(x, factors=factors)
        # one "sequences" plate per trace: reuse the one the autoguide just created
        self.rest(x, factors=factors, plate=self.identity_guide.plates["sequences"])


def autonormal_identity(vdsm):
    """Factory for ``--guide2 guides.examples:autonormal_identity``."""
    return AutoNormalIdentityGuide(vdsm)


class PyroParamStage1Guide(nn.Module):
    """A stage-1 guide written the Pyro way: its only parameters are ``pyro.param`` sites.

    q(identity) = N(m, diag(s)) and q(z_t) = N(m_t, diag(s_t)) shared by every sequence (not
    amortised: one global posterior, the simplest guide ``pyro.param`` can express). The
    parameters live in Pyro's param store, not in ``state_dict``; ``train_stage`` trains them and
    its checkpoints restore them.
    """

    def __init__(self, config, seq_len):
        super().__init__()
        self.config, self.seq_len = config, seq_len

    def forward(self, x, *, factors, **unused):
        from torch.distributions import constraints

        c, (b, t) = self.config, x.shape[:2]
        id_loc = pyro.param("identity_loc", lambda: x.new_zeros(c.n_experts))
        id_scale = pyro.param("identity_scale", lambda: x.new_full((c.n_experts,), 0.1), constraint=constraints.positive)
        z_loc = pyro.param("z_loc", lambda: x.new_zeros(self.seq_len, c.z_dim))
        z_scale = pyro.param("z_scale", lambda: x.new_ones(self.seq_len, c.z_dim), constraint=constraints.positive)
        with pyro.plate("sequences", b, dim=-1):
            with poutine.scale(scale=factors["identity"]):
                pyro.sample("identity", Normal(id_loc, id_scale).expand([b, c.n_experts]).to_event(1))
            with poutine.scale(scale=factors["z"]):
                pyro.sample("z", Normal(z_loc[:t], z_scale[:t]).expand([b, t, c.z_dim]).to_event(2))
