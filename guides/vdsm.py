"""Guides for VDSM stage 1 and stage 2 (sites as documented in ``models.vdsm``)."""
import pyro
import torch
import torch.nn as nn
import torch.nn.functional as F
from pyro import poutine

from guides.common import identity_site
from vdsm.handlers import register_module
from vdsm.nets import LSTM, BlurPoolEncoder, Combiner
from vdsm.precision import Normal

__all__ = ["VDSMStage1Guide", "VDSMStage2Guide"]


class VDSMStage1Guide(nn.Module):
    """q(identity | x) q(z | x): the BlurPool encoder, frames independent; identity = mean over frames."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.encoder = BlurPoolEncoder(config.nc, config.z_dim, config.n_experts, config.encoder_widths,
                                       config.encoder_features, config.identity_scale_max)

    def forward(self, x, *, factors, **unused):
        register_module(type(self).__name__, self)  # for a plain pyro.infer.SVI too
        z_loc, z_scale, id_loc, id_scale = self.encoder.encode_sequences(x)
        with pyro.plate("sequences", x.shape[0], dim=-1):
            identity_site(id_loc, id_scale, factors)
            with poutine.scale(scale=factors["z"]):
                pyro.sample("z", Normal(z_loc, z_scale).to_event(2))


class VDSMStage2Guide(nn.Module):
    """q(identity | x) q(d | x) prod_t q(z_t | z_{t-1}, h_t, d).

    The (frozen) frame encoder gives pose means; a bidirectional LSTM over them gives d.
    d sets the initial state (h_0, c_0) of a unidirectional LSTM run over T steps; the DMM
    combiner then samples z_t step by step from (z_{t-1}, h_t, d). With
    ``config.guide_release_lstm`` this LSTM is the release's (``VDSM_Seq.guide``): each step's
    output is the next step's input (the first input learned), h_0 and c_0 are linear in d, it has
    no dropout, and q(d)'s mean passes a LeakyReLU of slope 0.01. Without it every step reads one
    learned input (one ``nn.LSTM`` call), (h_0, c_0) =
    tanh(linear(d)), the LSTM has ``rnn_dropout`` and the slope is 0.2.

    With ``config.guide_pose_input`` = p > 0 the combiner also sees frame t's encoder pose
    mean and a flag saying whether it is shown. In training it is shown for a random share p
    of the sequences (the rest still go through d alone, so d keeps describing the motion);
    in evaluation it is always shown (unless ``show_poses_in_eval`` is False, as in
    ``models.vdsm.VDSMRun.reference_guide_inputs``). In the reference guide (p = 0) every pose comes
    from d, and poses that d does not separate are drawn as their neighbours' (docs/journal.md, "Why stage 2 drops an action").
    With ``config.guide_pose_residual`` a shown pose is also added to the combiner's mean, so the
    combiner only learns a correction to the encoder's pose. Without it, the combiner did not
    learn to pass every pose through: with the poses shown, Sprites' slash-left was still
    reconstructed as spellcast-left (6% right; 100% with the residual: docs/journal.md, the same section).
    """

    show_poses_in_eval = True

    def __init__(self, config):
        super().__init__()
        c = self.config = config
        self.encoder = BlurPoolEncoder(c.nc, c.z_dim, c.n_experts, c.encoder_widths, c.encoder_features,
                                       c.identity_scale_max)
        dropout = c.rnn_dropout if c.rnn_layers > 1 else 0.0
        self.birnn = LSTM(c.z_dim, c.rnn_dim, c.rnn_layers, batch_first=True, bidirectional=True,
                             dropout=dropout)
        self.d_loc = nn.Linear(2 * c.rnn_layers * c.rnn_dim, c.dynamics_dim)
        self.d_scale = nn.Linear(2 * c.rnn_layers * c.rnn_dim, c.dynamics_dim)
        self.d_to_state = nn.Linear(c.dynamics_dim, 2 * c.rnn_layers * c.rnn_dim)
        self.rnn = LSTM(c.rnn_dim, c.rnn_dim, c.rnn_layers, batch_first=True,
                        dropout=0.0 if c.guide_release_lstm else dropout)
        self.rnn_input = nn.Parameter(torch.zeros(c.rnn_dim))
        self.z_q_0 = nn.Parameter(torch.zeros(c.z_dim))
        pose_input = c.z_dim + 1 if c.guide_pose_input > 0 else 0  # pose mean and its shown flag
        self.combiner = Combiner(c.z_dim, c.rnn_dim, c.dynamics_dim + pose_input)

    def dynamics_params(self, z_means):
        _, (h_n, _) = self.birnn(z_means)
        h = h_n.transpose(0, 1).flatten(1)                        # [B, layers * 2 * rnn_dim]
        slope = 0.01 if self.config.guide_release_lstm else 0.2
        return F.leaky_relu(self.d_loc(h), slope), F.softplus(self.d_scale(h)) + 1e-4

    def frame_states(self, d, t):
        """[B, T, rnn_dim]: the LSTM's outputs over T steps, started from d (see the class docstring)."""
        c, b = self.config, d.shape[0]
        state = self.d_to_state(d)                                # h_0 then c_0: two linear maps of d in one
        if not c.guide_release_lstm:
            state = torch.tanh(state)
        h0, c0 = state.reshape(b, 2, c.rnn_layers, c.rnn_dim).permute(1, 2, 0, 3)
        state = (h0.contiguous(), c0.contiguous())
        if not c.guide_release_lstm:
            return self.rnn(self.rnn_input.expand(b, t, c.rnn_dim), state)[0]
        step_input, outputs = self.rnn_input.expand(b, 1, c.rnn_dim), []
        for _ in range(t):  # the release feeds each output back: T calls of one step
            step_input, state = self.rnn(step_input, state)
            outputs.append(step_input)
        return torch.cat(outputs, 1)

    def combiner_context(self, d, z_means):
        """[B, T, ...]: what the combiner sees besides z_{t-1} and h_t (d, and the shown poses)."""
        b, t = z_means.shape[:2]
        context = d.unsqueeze(1).expand(b, t, d.shape[-1])
        p = self.config.guide_pose_input
        if p == 0:
            return context
        if self.training:  # one draw per sequence: shown for all its frames or for none
            shown = (torch.rand(b, 1, 1, device=d.device) < p).to(z_means.dtype)
        else:
            shown = z_means.new_full((b, 1, 1), float(self.show_poses_in_eval))
        return torch.cat([context, shown * z_means, shown.expand(b, t, 1)], -1)

    def step(self, z_prev, h_t, context_t):
        """(loc, scale) of q(z_t | z_{t-1}, h_t, context_t) for one frame of ``combiner_context``."""
        loc, scale = self.combiner(z_prev, h_t, context_t)
        if self.config.guide_pose_residual:  # the shown pose (zero when not shown) sits after d in the context
            n = self.config.dynamics_dim
            loc = loc + context_t[..., n:n + self.config.z_dim]
        return loc, scale

    def forward(self, x, *, factors, **unused):
        register_module(type(self).__name__, self)  # for a plain pyro.infer.SVI too
        c = self.config
        b, t = x.shape[:2]
        z_means, _, id_loc, id_scale = self.encoder.encode_sequences(x)
        d_loc, d_scale = self.dynamics_params(z_means)
        with pyro.plate("sequences", b, dim=-1):
            with poutine.scale(scale=factors["identity"]):
                pyro.sample("identity", Normal(id_loc, id_scale).to_event(1))
            with poutine.scale(scale=factors["dynamics"]):
                d = pyro.sample("dynamics", Normal(d_loc, d_scale).to_event(1))
            h_seq = self.frame_states(d, t)
            context = self.combiner_context(d, z_means)
            z_prev = self.z_q_0.expand(b, c.z_dim)
            with poutine.scale(scale=factors["z"]):
                for k in pyro.markov(range(1, t + 1)):
                    loc, scale = self.step(z_prev, h_seq[:, k - 1], context[:, k - 1])
                    z_prev = pyro.sample(f"z_{k}", Normal(loc, scale).to_event(1))
