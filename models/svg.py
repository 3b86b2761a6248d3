"""SVG-LP / SVG-FP (Denton & Fergus, ICML 2018) as a configuration of the state-space family.

How it maps onto the family (``models.family``): no static and no dynamics latent; one
per-frame latent site "z" [B, T-1, z_dim] for the frames after the first, with a learned
prior p(z_t | x_<t) from an LSTM over the previous frames' encodings (SVG-LP) or N(0, I) (SVG-FP);
a deterministic state g_t = predictor([enc(x_{t-1}), z_t]) (an LSTM); both in the model's one
``transition``, scored over the sequence at once (``TeacherForced``); emission "obs" = frames
1..T-1, Normal(dec(g_t, skips), 1/sqrt(2)).

With teacher forcing every LSTM input is known, so the prior, the posterior (in
``guides.svg``) and the predictor each run as one ``nn.LSTM`` call over the sequence; frames
are encoded once per step (the model and guide share one cached encoding). Prediction
(``predict``, the family's: the guide's posterior for the conditioning frames replayed into the
model run ``n_future`` frames further) steps the future frame by frame (sites "z_k", k = n_past + 1..).

Objective: the reference minimises sum_t MSE_mean + beta * sum_t KL / batch, the KL in closed
form. Training here uses ``TraceMeanField_ELBO`` (``SVGModel.elbo``), which also takes the KL
of the "z" site in closed form; with the pixel scale 1/sqrt(2) and the KL scaled by
beta * C * H * W, -ELBO = B * C * H * W * (that loss) + const: the same optimum and, for Adam,
the same updates (tested numerically with the estimator training runs).

Initialisation as the reference's ``init_weights``: every convolution and linear layer's weight
N(0, 0.02) and bias 0, every BatchNorm's weight N(1, 0.02) and bias 0 (LSTM cells keep
PyTorch's default).

Skips: as in the reference code, target frame t uses the encoder skips of frame t-1 while
t < n_past (or always, with ``last_frame_skip``) and afterwards keeps those of frame n_past-2.
"""
import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
from pyro import poutine
from pyro.infer import TraceMeanField_ELBO

from vdsm.handlers import register_module
from vdsm.nets import DCGANDecoder, DCGANEncoder, SequenceLSTM, VGGDecoder, VGGEncoder
from vdsm.precision import full_precision

from .config import DictConfig, PredictionEval, PredictionTrain, check_values
from .family import StateSpaceVideoModel, TeacherForced
from .spec import (
    PREDICTION,
    ModelSpec,
    PredictionFlags,
    Stage,
    VideoRun,
    constant_schedule,
)

__all__ = ["SVGConfig", "SVGNets", "SVGModel", "SVGRun", "SPEC", "reference_init", "prediction_frames"]


@dataclass
class SVGConfig(DictConfig):
    """SVG sizes (defaults: the reference's SM-MNIST config)."""

    nc: int = 1                    # channels of a frame
    arch: str = "dcgan"            # "dcgan" or "vgg"
    nf: int = 64                   # width of the first conv block (DCGAN and VGG; reference 64)
    g_dim: int = 128               # frame code of the encoder
    z_dim: int = 10                # per-frame latent z_t
    rnn_dim: int = 256            # every LSTM's width
    prior_rnn_layers: int = 1      # layers of the learned prior's LSTM
    posterior_rnn_layers: int = 1  # layers of the posterior's LSTM
    predictor_rnn_layers: int = 2  # layers of the frame predictor's LSTM
    learned_prior: bool = True     # SVG-LP; False = SVG-FP
    last_frame_skip: bool = False  # decoder skips from the last frame seen (else from the last conditioning frame)
    beta: float = 1e-4             # weight of the KL per pixel
    n_past: int = 5                # conditioning frames
    emission_scale: float = 1 / math.sqrt(2)   # scale of the Gaussian pixel likelihood (1/sqrt 2: the summed squared error)
    # BatchNorm between the frame predictor's output layer and its tanh (not in the SVG release: commented
    # out in its models/lstm.py)
    predictor_batchnorm: bool = False

    def check(self):
        check_values(self, archs=("dcgan", "vgg"), positive=("beta", "emission_scale"),
                     at_least_one=("nc", "nf", "g_dim", "z_dim", "rnn_dim", "prior_rnn_layers",
                                   "posterior_rnn_layers", "predictor_rnn_layers", "n_past"))


def reference_init(module):
    """SVG's ``init_weights``, applied to every submodule (see the module docstring)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


# Encoder and decoder run on whole time steps, about this many frames per call: large calls
# run slower per frame on CPU (a 1500-frame DCGAN call took 1.6x longer per frame than 100-frame
# ones: the working set leaves the cache), and BatchNorm needs more than one frame per call.
# At SVG's batch of 100 this is one call per time step, as in the reference.
FRAMES_PER_CALL = 64


class SVGNets(nn.Module):
    """The networks of SVG, shared by model and guide; ``encode`` is cached per input tensor."""

    def __init__(self, c: SVGConfig):
        super().__init__()
        self.config = c
        if c.arch == "dcgan":
            self.encoder, self.decoder = DCGANEncoder(c.nc, c.g_dim, c.nf), DCGANDecoder(c.nc, c.g_dim, c.nf)
        else:
            self.encoder, self.decoder = VGGEncoder(c.nc, c.g_dim, c.nf), VGGDecoder(c.nc, c.g_dim, c.nf)
        self.posterior = SequenceLSTM(c.g_dim, c.z_dim, c.rnn_dim, c.posterior_rnn_layers, "gaussian")
        self.prior = SequenceLSTM(c.g_dim, c.z_dim, c.rnn_dim, c.prior_rnn_layers, "gaussian") \
            if c.learned_prior else None
        self.predictor = SequenceLSTM(c.g_dim + c.z_dim, c.g_dim, c.rnn_dim, c.predictor_rnn_layers,
                                      "deterministic", batchnorm=c.predictor_batchnorm)
        self.apply(reference_init)
        self._cache = (None, None)

    def encode(self, x):
        """x [B, T, C, H, W] -> h [B, T, g_dim] and skips: for each time step, the encoder's
        per-level outputs [B, ...]. Reused when guide and model ask for the same tensor within
        one ELBO evaluation (the model's emission, the last user, calls ``forget``)."""
        if self._cache[0] is x and torch.is_grad_enabled() == self._cache[1][2]:
            return self._cache[1][:2]
        b, hs, skips = x.shape[0], [], []
        for steps in self._calls(b, x.shape[1]):
            h, levels = self.encoder(x[:, steps.start:steps.stop].transpose(0, 1).flatten(0, 1))  # time-major
            hs.append(h.reshape(len(steps), b, -1))
            skips += [[level[j * b:(j + 1) * b] for level in levels] for j in range(len(steps))]
        out = (torch.cat(hs).transpose(0, 1), skips, torch.is_grad_enabled())
        self._cache = (x, out)
        return out[:2]

    @staticmethod
    def _calls(b, t):
        """Whole time steps per encoder/decoder call, about FRAMES_PER_CALL frames each."""
        per = max(1, -(-FRAMES_PER_CALL // b))
        return [range(k, min(k + per, t)) for k in range(0, t, per)]

    def forget(self):
        self._cache = (None, None)

    def skip_sources(self, t):
        """Index of the frame whose skips decode target frames 1..t-1 (reference behaviour)."""
        n_past, last = self.config.n_past, self.config.last_frame_skip
        return [k - 1 if (last or k < n_past) else max(n_past - 2, 0) for k in range(1, t)]

    def decode(self, g, skips, sources):
        """g [B, T', g_dim]; skips as from ``encode``; ``sources[k]``: the time step whose skips
        decode g[:, k] -> frames [B, T', C, H, W]. The skip half of each decoder convolution is
        computed once per source frame (all future frames share one)."""
        terms = {s: self.decoder.skip_terms(skips[s]) for s in sorted(set(sources))}
        b, frames = g.shape[0], []
        for steps in self._calls(b, g.shape[1]):
            chunk_terms = [torch.cat(level) if len(steps) > 1 else level[0]
                           for level in zip(*(terms[sources[k]] for k in steps))]
            out = self.decoder(g[:, steps.start:steps.stop].transpose(0, 1).flatten(0, 1), terms=chunk_terms)
            frames.append(out.reshape(len(steps), b, *out.shape[1:]))
        return torch.cat(frames).transpose(0, 1)


class SVGModel(StateSpaceVideoModel):
    """p(z | x) p(x_1: | z, x_0:) of SVG-LP/FP; sites "z" and "obs" (see the module docstring).

    Example::

        nets = SVGNets(SVGConfig())
        model, guide = SVGModel(nets), SVGGuide(nets)    # guides.svg.SVGGuide
        loss = TraceMeanField_ELBO().differentiable_loss(model, guide, x, factors={"z": 1.0})
    """

    elbo = TraceMeanField_ELBO  # the estimator training uses: the KL of "z" in closed form, as the reference
    frame_prior = TeacherForced()

    def __init__(self, nets: SVGNets):
        super().__init__()
        self.nets, c = nets, nets.config
        self.z_dim = c.z_dim
        self.kl_scale = None  # set from the frame size on first use: beta * C * H * W

    def num_latent_frames(self, t):
        return t - 1

    def observed(self, x):
        return x[:, 1:]

    def initial_state(self, b, d, ref, x=None):
        h, _ = self.nets.encode(x)
        return {"codes": h[:, :-1], "prior": None, "predictor": None}

    def transition(self, state, t):
        """z_t ~ N(the prior LSTM over the code of x_{t-1}) (SVG-LP; N(0, I) for SVG-FP), then g_t =
        predictor([code of x_{t-1}, z_t]). The state: the codes of the frames before those of ``t``
        (the observed ones in training, the previous prediction's in the future) and both LSTMs'
        states; the out g_t, which ``emit`` decodes."""
        h = state["codes"]
        (loc, scale), prior_state = self.prior_params(h, state["prior"])
        z = self.frame_site(t, loc, scale)
        g, predictor_state = self.nets.predictor(torch.cat([h, z], -1), state["predictor"])
        return {"codes": None, "prior": prior_state, "predictor": predictor_state}, g

    def forward(self, x=None, *, factors, n_future=0, **kwargs):
        if x is None:
            raise ValueError("SVG generates conditioned on past frames: use predict(x_past, n_future)")
        self.kl_scale = self.nets.config.beta * x[0, 0].numel()
        if not n_future:
            return super().forward(x, factors=factors, **kwargs)
        register_module(type(self).__name__, self)
        with pyro.plate("sequences", x.shape[0], dim=-1):
            with poutine.scale(scale=factors["z"] * self.kl_scale):
                mean = self.future_frames(x, n_future)
            return pyro.sample("obs", self.frames_distribution(mean))

    def emit(self, g, s, factors, x=None):
        _, skips = self.nets.encode(x)
        self.nets.forget()  # the next evaluation (even on the same tensor) encodes afresh
        return self.frames_distribution(self.nets.decode(g, skips, self.nets.skip_sources(x.shape[1])))

    def frames_distribution(self, mean):
        """The likelihood of frames [B, T, C, H, W] around the decoded ``mean`` (in fp32)."""
        return dist.Normal(full_precision(mean), self.nets.config.emission_scale).to_event(4)

    def future_frames(self, x_past, n_future):
        """The model with ``n_future`` frames after ``x_past`` (``predict``): the transition over the
        conditioning frames at once as in training (site "z", where the guide's draw is replayed), then
        stepped for each future frame k (1-based; site "z_k" [B, 1, z_dim] from the prior), each
        prediction decoded and encoded for the next step, as the prior and the predictor read the
        previous frame. Returns the future frames' means [B, n_future, C, H, W]. Skips: those of frame
        k-1 with ``last_frame_skip`` (predictions included), else of the frame before the last
        conditioning one, as the reference."""
        nets, c = self.nets, self.nets.config
        n_past = x_past.shape[1]
        h, skips = nets.encode(x_past)
        nets.forget()
        state = {"codes": h[:, :-1], "prior": None, "predictor": None}
        if n_past > 1:  # SVG conditions on the first frame: no latent before the second
            state, _ = self.transition(state, slice(2, n_past + 1))
        state["codes"], skip_prev, frames = h[:, -1:], skips[-1], []
        fixed_terms = None if c.last_frame_skip else nets.decoder.skip_terms(skips[max(n_past - 2, 0)])
        for k in pyro.markov(range(n_past + 1, n_past + n_future + 1)):
            state, g = self.transition(state, k)
            terms = fixed_terms or nets.decoder.skip_terms(skip_prev)
            frames.append(nets.decoder(g[:, 0], terms=terms)[:, None])
            if k < n_past + n_future:
                state["codes"], (skip_prev,) = nets.encode(frames[-1])
                nets.forget()
        return torch.cat(frames, 1)

    def prior_params(self, h, state=None):
        """((loc, scale), next state) of the prior of the latents after the frames coded ``h`` [B, T,
        g_dim]: the learned prior LSTM from ``state`` (SVG-LP) or N(0, I) of z_dim (SVG-FP)."""
        if self.nets.prior is not None:
            return self.nets.prior(h, state)
        return (h.new_zeros(*h.shape[:-1], self.z_dim), h.new_ones(*h.shape[:-1], self.z_dim)), None


class SVGRun(VideoRun):
    """SVG-LP/FP model and guide sharing one ``nets`` on one device. ``predict(x_past, n_future)``
    samples futures.

    Example::

        svg = SVGRun.load("runs/smmnist-svg-lp-...")      # or models.registry.load_run(...)
        futures = svg.predict(x[:, :5], n_future=20)    # [B, 25, 1, 64, 64]
    """

    nets_cls, model_cls, guide_path = SVGNets, SVGModel, "guides.svg:SVGGuide"


def prediction_frames(config):
    """Frames per training sequence of a prediction model: n_past conditioning frames + n_future."""
    return config["model"]["n_past"] + config["train"]["n_future"]


#: SVG-LP/FP's declaration, read by the runner (``models.spec.ModelSpec``).
SPEC = ModelSpec(
    names=("svg-lp", "svg-fp"), config_cls=SVGConfig, presets="svg", run_cls=SVGRun,
    stages=(Stage("svg", "train", pair=lambda run: (run.model, run.guide), schedule=constant_schedule(("z",)),
                  frames=prediction_frames, config_cls=PredictionTrain),),
    evaluations=frozenset({PREDICTION}), fixed={"svg-lp": {"learned_prior": True}, "svg-fp": {"learned_prior": False}},
    train_flags=("steps", "batch_size", "lr", "n_future", "clip_norm"), cli=PredictionFlags(),
    more_sections={"eval": PredictionEval})
SVGRun.spec = SPEC
