"""The SRVP posterior: q(y_1 | x_1..x_nt_inf) from the first frames' codes, and the filtering
q(z_t | x_1..x_t) from an LSTM over the frame codes (one call over the sequence)."""
import pyro
import torch.nn as nn
from pyro import poutine

from vdsm.handlers import register_module
from vdsm.precision import Normal

__all__ = ["SRVPGuide"]


class SRVPGuide(nn.Module):
    """Guide of :class:`models.srvp.SRVPModel`; shares its :class:`models.srvp.SRVPNets`. Sites
    "y_1" and "z_2".."z_T", each scaled as the model scales it (``factors["z"]``, beta_z on z)."""

    def __init__(self, nets):
        super().__init__()
        self.nets = nets

    def forward(self, x, *, factors, **unused):
        register_module(type(self).__name__, self)  # for a plain pyro.infer.SVI too
        nets = self.nets
        h, _ = nets.encode(x)
        y_loc, y_scale = nets.q_y1(h)
        z_loc, z_scale = nets.q_z(h)
        with pyro.plate("sequences", x.shape[0], dim=-1), poutine.scale(scale=factors["z"]):
            pyro.sample("y_1", Normal(y_loc, y_scale).to_event(1))
            for k in pyro.markov(range(2, x.shape[1] + 1)):
                with poutine.scale(scale=nets.config.beta_z):
                    pyro.sample(f"z_{k}", Normal(z_loc[:, k - 2], z_scale[:, k - 2]).to_event(1))
