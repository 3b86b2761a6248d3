"""DBSE (Berman et al., ICML 2024: sequential disentanglement by extracting the static information from
a single sequence element) as a member of the state-space family.

The generative model is the Sprites releases' (``models.cdsvae``'s): a static latent s ~ N(0, I) (site
"identity"), per-frame latents z_1..z_T with a two-layer LSTM prior teacher-forced from z_0 = 0 (sites
"z_1".."z_T") and frames x_t ~ p(x_t | z_t, s) from one decoder of [z_t, s]. What DBSE changes is the
posterior (``guides.dbse``), which reads the frame features g_t of the DCGAN encoder (tanh):

    q(s | x)      from the first frame alone: tanh(Linear(g_dim -> rnn_dim)(g_1)), then mean and
                  log-variance heads (rnn_dim -> f_dim)
    q(z_t | x)    from the differences g_t - g_1 (features, not pixels) through a two-layer bidirectional
                  LSTM of z_dim per direction, then mean and log-variance heads (2 z_dim -> z_dim)

so the static latent cannot see the motion and the dynamics cannot see what every frame shares.

The objective is the release's (``video/sprites/run_sprites.py``: 5 x SSE of the sequence + 1 x SSE of
frame 1 decoded again from [z_1, s] + KL_s + KL_z, summed, divided by B): a Normal likelihood of scale
sqrt(1/10) per pixel (-log N = 5 x squared error + a constant), every KL in closed form
(``TraceMeanField_ELBO``), and the frame-1 term as a ``pyro.factor`` site, "first_frame", through the
family's ``objective_terms``, so that SVI optimises one loss whatever guide is paired with the model. The
second decode of frame 1 is a separate decoder call, as in the release: in training, BatchNorm
normalises it over the batch's first frames only, which is what makes it differ from frame 1 of the
sequence's decode.

Where the release departs from the paper, and the library from the release:

- The paper's dynamics read g_t - g_1, which is 0 at t = 1; the release puts fresh N(0, I) noise there
  instead, in training and in evaluation alike. The library feeds the zero difference
  (``first_difference="zero"``); ``first_difference="noise"`` is the release's.
- The release initialises Conv2d and Linear weights N(0, 0.01) with zero biases (``init_std``, its default
  here); transposed convolutions and LSTMs keep PyTorch's initialisation.
- The release trains on all 9000 training sequences; the library's train split holds out 100 characters
  as val (8100 sequences).
"""
from dataclasses import dataclass

import pyro
import torch
import torch.nn as nn

from vdsm.nets import LSTM, normal_init

from .cdsvae import CDSVAENets, _gaussian
from .config import check_values
from .dsa import DSAModel, DSARun, FrameCodec, StaticAndFramesSizes
from .spec import JUDGE, ModelSpec, Stage, constant_schedule

__all__ = ["DBSEConfig", "DBSENets", "DBSEModel", "DBSERun", "SPEC", "FIRST_DIFFERENCES"]

#: What the dynamics posterior reads at frame 1: the paper's zero difference, or the release's fresh noise.
FIRST_DIFFERENCES = ("zero", "noise")


@dataclass
class DBSEConfig(StaticAndFramesSizes):
    """DBSE sizes and weights (defaults: the release's Sprites run, ``sprites_hyperparameters.py``)."""

    f_dim: int = 256               # static latent ("identity")
    z_dim: int = 256               # per-frame latent (also the width of each direction of the dynamics LSTM)
    g_dim: int = 256               # frame features of the encoder
    rnn_dim: int = 64              # width of the static head's hidden layer and of the prior's LSTM cells
    emission: str = "normal"       # pixel likelihood: bernoulli, normal or laplace
    emission_scale: float = 0.31622776601683794   # sqrt(1/10): -log N is 5 x the squared error, the release's weight
    weight_first_frame: float = 1.0    # weight of the squared error of frame 1 decoded again from [z_1, s]
    first_difference: str = "zero"     # the dynamics' input at frame 1: zero (the paper) or noise (the release)
    init_std: float = 0.01         # conv and linear weights N(0, init_std), as the release (0: PyTorch's initialisation)

    def check(self):
        check_values(self, positive=("emission_scale",), at_least_one=("nc", "f_dim", "z_dim", "g_dim", "nf", "rnn_dim"))
        if self.emission not in ("bernoulli", "normal", "laplace"):
            raise ValueError(f"emission={self.emission!r}: use bernoulli, normal or laplace")
        if self.first_difference not in FIRST_DIFFERENCES:
            raise ValueError(f"first_difference={self.first_difference!r}: use {' or '.join(FIRST_DIFFERENCES)}")
        for name in ("weight_first_frame", "init_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 0")


class DBSENets(FrameCodec):
    """Every network of DBSE, shared by model and guide."""

    prior_step = CDSVAENets.prior_step   # the same two-layer LSTM prior, over the same attribute names

    def __init__(self, c: DBSEConfig):
        super().__init__(c)
        self.prior_cells = nn.ModuleList([nn.LSTMCell(c.z_dim, c.rnn_dim), nn.LSTMCell(c.rnn_dim, c.rnn_dim)])
        self.prior_out = nn.Linear(c.rnn_dim, 2 * c.z_dim)
        self.static_features = nn.Sequential(nn.Linear(c.g_dim, c.rnn_dim), nn.Tanh())
        self.static_out = nn.Linear(c.rnn_dim, 2 * c.f_dim)
        self.dynamics_rnn = LSTM(c.g_dim, c.z_dim, num_layers=2, batch_first=True, bidirectional=True)
        self.dynamics_out = nn.Linear(2 * c.z_dim, 2 * c.z_dim)
        normal_init(self, c.init_std)

    def posterior(self, x):
        """Frames [B, T, C, 64, 64] -> (s loc, s scale) [B, f_dim] and (z loc, z scale) [B, T, z_dim]."""
        b, t = x.shape[:2]
        g, _ = self.encoder(x.reshape(b * t, *x.shape[2:]))
        g = g.reshape(b, t, -1)
        s_loc, s_scale = _gaussian(self.static_out(self.static_features(g[:, 0])))
        differences = g - g[:, :1]
        if self.config.first_difference == "noise":   # the release's input at frame 1, even in evaluation
            differences = torch.cat([torch.randn_like(differences[:, :1]), differences[:, 1:]], 1)
        z_loc, z_scale = _gaussian(self.dynamics_out(self.dynamics_rnn(differences)[0]))
        return s_loc, s_scale, z_loc, z_scale


class DBSEModel(DSAModel):
    """p(s) prod_t p(z_t | z_<t) p(x_t | z_t, s) and the release's second decode of frame 1; sites
    "identity" [B, f_dim], "z_1".."z_T" [B, z_dim], "obs" [B, T, C, 64, 64], factor "first_frame" [B]."""

    def objective_terms(self, x, s, z, factors):
        weight = self.nets.config.weight_first_frame
        if weight:
            again = torch.sigmoid(self.nets.decode_logits(z[:, :1], s)[:, 0].float())   # its own decoder call
            pyro.factor("first_frame", -weight * (again - x[:, 0].float()).pow(2).flatten(1).sum(-1))


class DBSERun(DSARun):
    """A trained (or freshly built) DBSE; as DSA's run, its dynamics are z_1..z_T, so ``transfer_action``
    equals ``swap_identity``.

    Example::

        run = DBSERun.load("runs/sprites-dbse-...")        # or models.registry.load_run(...)
        moved = run.transfer_action(action_x, identity_x)
    """

    nets_cls, model_cls, guide_path = DBSENets, DBSEModel, "guides.dbse:DBSEGuide"


#: DBSE's declaration, read by the runner (``models.spec.ModelSpec``).
SPEC = ModelSpec(
    names=("dbse",), config_cls=DBSEConfig, presets="dbse", run_cls=DBSERun,
    stages=(Stage("dbse", "train", pair=lambda run: (run.model, run.guide),
                  schedule=constant_schedule(("identity", "z")), frames=lambda config: config["train"]["seq_len"]),),
    evaluations=frozenset({JUDGE}), train_flags=("steps", "batch_size", "lr", "seq_len", "clip_norm", "identity_kl"))
DBSERun.spec = SPEC
