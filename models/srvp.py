"""SRVP (Franceschi et al., ICML 2020: stochastic latent residual video prediction) as a Pyro model.

Generative process for a batch of sequences x[b, 1..T] (docs/papers.md, "SRVP"):

    w = content(h(x_k) for nt_inf frames k)     deterministic, no KL (``pyro.module``, as the reference)
    y_1 ~ N(0, I)                               site "y_1" [B, ny]
    z_t ~ N(prior(y_{t-1}))                     sites "z_2".."z_T" [B, z_dim], t = 2..T
    y_t = y_{t-1} + sum of n_euler_steps steps dt * f([y, z_t])   (dt = 1 / n_euler_steps)
    x_t ~ Normal(decoder([w, y_t], skips), emission_scale)          site "obs" [B, T, C, H, W]
    the l2_res penalty on every Euler increment, sum of ||dt * f||_2: site "l2_res" (``pyro.factor``)

One batch plate ("sequences", dim -1); the sample sites are y_1, z_2..z_T and obs whatever the
batch size. The encoder runs once over all frames and the decoder once over all frames; only the
prior and the residual MLP step through time (y_t needs z_t, which the guide draws).

Training uses ``TraceMeanField_ELBO`` (``SRVPModel.elbo``): the KL of y_1 and of every z_t against
the prior at the y_{t-1} of the drawn z's in closed form, as the reference; -ELBO = B x (the
reference's loss per sequence: NLL + KL(y_1) + beta_z sum_t KL(z_t) + l2_res sum ||dt f||), tested
against a written-out frame-by-frame version. The content frames and the skip frame are a random
choice per sequence in training and the last conditioning frames at test (``predict``).

Departures from the release, by design: conv layers keep a bias (before BatchNorm it cancels out;
the last layer's bias is an extra parameter), and linear layers other than the residual MLP keep
PyTorch's initialisation (as the release). The first encoder block has no BatchNorm and the residual
MLP's biases start at 0, as the release (``encoder_first_batchnorm``, ``residual_zero_bias`` turn
either off). The VGG encoder is SVG's (its first block has BatchNorm whatever
``encoder_first_batchnorm``).
"""
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import TraceMeanField_ELBO

from vdsm.nets import LSTM, DCGANDecoder, DCGANEncoder, VGGDecoder, VGGEncoder
from vdsm.precision import full_precision

from .config import DictConfig, PredictionEval, PredictionTrain, check_values
from .family import StateSpaceVideoModel, Stepped
from .spec import PREDICTION, ModelSpec, PredictionFlags, Stage, VideoRun, constant_schedule
from .svg import prediction_frames

__all__ = ["SRVPConfig", "SRVPNets", "SRVPModel", "SRVPRun", "SPEC", "srvp_init"]


@dataclass
class SRVPConfig(DictConfig):
    """SRVP sizes (defaults: the reference's stochastic SM-MNIST config)."""

    nc: int = 1                  # channels of a frame
    arch: str = "dcgan"          # "dcgan" or "vgg"
    nf: int = 64                 # width of the first conv block (reference 64)
    nh: int = 128                # frame code
    ny: int = 20                 # residual state y
    z_dim: int = 20              # per-frame latent z
    content_dim: int = 256       # w
    nt_inf: int = 5              # frames that infer w and y_1
    n_past: int = 5              # nt_cond: conditioning frames at test
    n_euler_steps: int = 1       # Euler steps of the residual dynamics per frame
    res_gain: float = 1.41       # orthogonal-init gain of the residual MLP
    skipco: bool = False         # decoder skips from one frame (vgg configs)
    emission_scale: float = 1.0  # scale of the Gaussian pixel likelihood
    beta_z: float = 2.0          # weight of the KL of every z_t
    l2_res: float = 1.0          # weight of the squared norm of the residual updates
    rnn_dim: int = 256          # the posterior LSTM
    y_hidden: int = 256          # q(y_1) MLP width
    mlp_hidden: int = 512        # prior and residual MLP width
    encoder_first_batchnorm: bool = False  # BatchNorm in the DCGAN encoder's first block (the release: none)
    residual_zero_bias: bool = True        # the residual MLP's biases start at 0 (as the release)

    def check(self):
        check_values(self, archs=("dcgan", "vgg"), positive=("res_gain", "emission_scale", "beta_z"),
                     at_least_one=("nc", "nf", "nh", "ny", "z_dim", "content_dim", "nt_inf", "n_past", "n_euler_steps",
                                   "rnn_dim", "y_hidden", "mlp_hidden"))
        if self.l2_res < 0:
            raise ValueError(f"l2_res={self.l2_res} must be at least 0")
        if self.nt_inf > self.n_past:
            raise ValueError(f"nt_inf={self.nt_inf} must be at most n_past={self.n_past}: at test y_1 and w are "
                             f"inferred from the conditioning frames")


def mlp(n_in, n_hidden, n_out, layers):
    """``layers`` linear layers with a ReLU between consecutive ones (the release's MLP)."""
    sizes = [n_in] + [n_hidden] * (layers - 1) + [n_out]
    mods = []
    for k in range(layers):
        if k:
            mods.append(nn.ReLU(inplace=True))
        mods.append(nn.Linear(sizes[k], sizes[k + 1]))
    return nn.Sequential(*mods)


def gaussian(params):
    """The release's Gaussian head: mean = first half, std = softplus(second half) + 1e-8."""
    loc, raw = params.chunk(2, -1)
    return loc, F.softplus(raw) + 1e-8


def srvp_init(module):
    """Conv weights N(0, 0.02), BatchNorm weights N(1, 0.02) (biases 0), as the release."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class SRVPNets(nn.Module):
    """The networks of SRVP, shared by model and guide; ``encode`` is cached per input tensor."""

    def __init__(self, c: SRVPConfig):
        super().__init__()
        self.config = c
        enc, dec = (DCGANEncoder, DCGANDecoder) if c.arch == "dcgan" else (VGGEncoder, VGGDecoder)
        self.encoder = enc(c.nc, c.nh, c.nf, first_batchnorm=c.encoder_first_batchnorm) if c.arch == "dcgan" \
            else enc(c.nc, c.nh, c.nf)
        self.decoder = dec(c.nc, c.content_dim + c.ny, c.nf, skip=c.skipco)
        self.content_in = nn.Sequential(nn.Linear(c.nh, c.content_dim), nn.ReLU(inplace=True))
        self.content_out = nn.Sequential(nn.Linear(c.content_dim, c.content_dim), nn.Tanh())
        self.y_inf = mlp(c.nt_inf * c.nh, c.y_hidden, 2 * c.ny, 3)
        self.z_lstm = LSTM(c.nh, c.rnn_dim, 1, batch_first=True)
        self.z_out = nn.Linear(c.rnn_dim, 2 * c.z_dim)
        self.prior = mlp(c.ny, c.mlp_hidden, 2 * c.z_dim, 4)
        self.residual = mlp(c.ny + c.z_dim, c.mlp_hidden, c.ny, 4)
        self.apply(srvp_init)
        for layer in self.residual:
            if isinstance(layer, nn.Linear):
                nn.init.orthogonal_(layer.weight, gain=c.res_gain)
                if c.residual_zero_bias:
                    nn.init.zeros_(layer.bias)
        self._cache = (None, None)

    def encode(self, x):
        """x [B, T, C, H, W] -> codes [B, T, nh] and skips (per level [B, T, ...]); one encoder call
        over all frames, reused by the model when the guide encoded the same tensor."""
        if self._cache[0] is x and torch.is_grad_enabled() == self._cache[1][2]:
            return self._cache[1][:2]
        b, t = x.shape[:2]
        h, levels = self.encoder(x.flatten(0, 1))
        out = (h.reshape(b, t, -1), [level.reshape(b, t, *level.shape[1:]) for level in levels],
               torch.is_grad_enabled())
        self._cache = (x, out)
        return out[:2]

    def forget(self):
        self._cache = (None, None)

    def training_frames(self, b, t, device):
        """Training's random choice per sequence: nt_inf distinct content frames [B, nt_inf] among
        all T, and the skip frame [B]."""
        content = torch.rand(b, t, device=device).argsort(-1)[:, :self.config.nt_inf]
        return content, torch.randint(t, (b,), device=device)

    def content(self, h, frames):
        """w [B, content_dim] from the codes h [B, T, nh] of ``frames`` [B, nt_inf] (indices per sequence)."""
        picked = h.gather(1, frames[..., None].expand(-1, -1, h.shape[-1]))
        return self.content_out(self.content_in(picked).sum(1))

    def q_y1(self, h):
        return gaussian(self.y_inf(h[:, :self.config.nt_inf].flatten(1)))

    def q_z(self, h):
        """Filtering posterior parameters of z_2..z_T from the codes of x_1..x_T: [B, T-1, z_dim] each."""
        out, _ = self.z_lstm(h)
        return gaussian(self.z_out(out[:, 1:]))

    def p_z(self, y):
        return gaussian(self.prior(y))

    def step(self, y, z):
        """One frame of residual dynamics: (y_t, sum over Euler sub-steps of ||dt * f||_2 [B])."""
        dt, penalty = 1.0 / self.config.n_euler_steps, 0.0
        for _ in range(self.config.n_euler_steps):  # the same z for every sub-step
            # in fp32 under --amp: y accumulates these increments over the whole sequence
            dy = dt * full_precision(self.residual(torch.cat([y, z], -1)))
            y, penalty = y + dy, penalty + dy.norm(dim=-1)
        return y, penalty

    def decode(self, w, ys, skips, frame):
        """Frames [B, T, C, H, W] from w [B, content_dim] and ys [B, T, ny], in one decoder call; with
        skipco, every frame of a sequence uses the encoder skips of its frame ``frame`` [B]."""
        b, t = ys.shape[:2]
        g = torch.cat([w[:, None].expand(-1, t, -1), ys], -1).flatten(0, 1)
        terms = None
        if self.config.skipco:
            chosen = [level[torch.arange(b, device=level.device), frame] for level in skips]
            terms = [term.repeat_interleave(t, 0) for term in self.decoder.skip_terms(chosen)]
        frames = self.decoder(g, terms=terms)
        return frames.reshape(b, t, *frames.shape[1:])


class PenalisedResidualSteps(Stepped):
    """SRVP's frame prior: its transition stepped through time (``Stepped``), whose outs are the
    states y_1..y_T and the penalties of each frame's Euler increments; the summed penalties enter as
    ``pyro.factor("l2_res", -model.penalty_scale * sum)``. Returns the states [B, T, y_dim]."""

    def sample(self, model, b, t, d, ref, x=None):
        ys, penalties = super().sample(model, b, t, d, ref, x)
        if model.penalty_scale > 0 and t > 1:
            pyro.factor("l2_res", -model.penalty_scale * full_precision(penalties[:, 1:].sum(1)))
        return ys


class SRVPModel(StateSpaceVideoModel):
    """p(y_1) prod_t p(z_t | y_{t-1}) p(x | w, y) of SRVP: the family with no static or dynamics
    latent, a deterministic state y carried through time by its ``transition`` (see the module docstring).

    Example::

        nets = SRVPNets(SRVPConfig())
        model, guide = SRVPModel(nets), SRVPGuide(nets)          # guides.srvp.SRVPGuide
        loss = TraceMeanField_ELBO().differentiable_loss(model, guide, x, factors={"z": 1.0})
    """

    elbo = TraceMeanField_ELBO  # the estimator training uses: every KL in closed form, as the reference
    frame_prior = PenalisedResidualSteps()

    def __init__(self, nets: SRVPNets):
        super().__init__()
        self.nets, c = nets, nets.config
        self.y_dim, self.z_kl_scale, self.penalty_scale = c.ny, c.beta_z, c.l2_res

    def transition(self, state, t):
        """y_1 ~ N(0, I) (site "y_1"); for t > 1 z_t ~ N(prior(y_{t-1})) (its KL times beta_z) and
        y_t = y_{t-1} + the Euler steps of the residual MLP. The state is y_{t-1}; the out (y_t, the
        penalty of its increments [B])."""
        if t == 1:
            y = pyro.sample("y_1", dist.Normal(state["ref"].new_zeros(state["batch"], self.y_dim), 1.0).to_event(1))
            return y, (y, y.new_zeros(y.shape[0]))
        loc, scale = self.nets.p_z(state)
        with poutine.scale(scale=self.z_kl_scale):
            z = self.frame_site(t, loc, scale)
        y, penalty = self.nets.step(state, z)
        return y, (y, penalty)

    def forward(self, x=None, *, factors, **kwargs):
        if x is None:
            raise ValueError("SRVP generates conditioned on past frames: use predict(x_past, n_future)")
        return super().forward(x, factors=factors, **kwargs)

    def emit(self, ys, s, factors, x=None):
        nets, c = self.nets, self.nets.config
        h, skips = nets.encode(x)
        nets.forget()  # the next evaluation (even on the same tensor) encodes afresh
        (b, n_past), n_future = x.shape[:2], ys.shape[1] - x.shape[1]
        if n_future:  # prediction (``predict``): the future frames, w and the skips from the last conditioning frames
            content_frames = torch.arange(n_past - c.nt_inf, n_past, device=x.device).expand(b, -1)
            skip_frame, ys = torch.full((b,), n_past - 1, device=x.device), ys[:, n_past:]
        else:  # training: content frames and skip frame drawn per sequence from the whole sequence
            content_frames, skip_frame = nets.training_frames(b, n_past, x.device)
        mean = nets.decode(nets.content(h, content_frames), ys, skips, skip_frame)
        return dist.Normal(full_precision(mean), c.emission_scale).to_event(4)


class SRVPRun(VideoRun):
    """SRVP model and guide sharing one ``nets`` on one device. ``predict(x_past, n_future)`` samples
    futures.

    Example::

        srvp = SRVPRun.load("runs/smmnist-srvp-...")      # or models.registry.load_run(...)
        futures = srvp.predict(x[:, :5], n_future=20)    # [B, 25, 1, 64, 64]
    """

    nets_cls, model_cls, guide_path = SRVPNets, SRVPModel, "guides.srvp:SRVPGuide"


#: SRVP's declaration, read by the runner (``models.spec.ModelSpec``).
SPEC = ModelSpec(
    names=("srvp",), config_cls=SRVPConfig, presets="srvp", run_cls=SRVPRun,
    stages=(Stage("srvp", "train", pair=lambda run: (run.model, run.guide), schedule=constant_schedule(("z",)),
                  frames=prediction_frames, config_cls=PredictionTrain),),
    evaluations=frozenset({PREDICTION}), train_flags=("steps", "batch_size", "lr", "n_future", "clip_norm"),
    cli=PredictionFlags(), more_sections={"eval": PredictionEval})
SRVPRun.spec = SPEC
