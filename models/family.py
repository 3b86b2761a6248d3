"""The hierarchical state-space family of video models, as one Pyro model with hooks.

Generative process for a batch of sequences x[b, t]::

    s ~ p(s)                        static latent, site "identity" (hook ``static_prior``)
    d ~ p(d)                        dynamics latent, site "dynamics" (hook ``dynamics_prior``)
    z ~ p(z_1:T | d, x)             per-frame latents: the hook ``frame_prior``, an object that
                                    registers the sites and returns what ``emit`` reads:
      IndependentNormal()             one site "z" [B, T', z_dim], N(0, I)                (VDSM stage 1)
      Stepped()                       sites "z_1".."z_T": the model's one transition hook,
                                      ``state, out_t = transition(state, t)``, stepped through
                                      time from ``initial_state`` (VDSM stage 2, DSA, SRVP)
      TeacherForced()                 one site "z": ``transition(state, slice(1, T' + 1))`` once,
                                      when every input of the prior is known (SVG-LP/FP, whose
                                      prediction steps the same hook frame by frame)
    x ~ p(x | z, s, x_<t)           site "obs" (hook ``emit``; ``observed(x)`` picks the frames
                                    that are scored, e.g. all but the first for SVG)
    + factors                       terms beyond the ELBO for an observed x (hook
                                    ``objective_terms``: C-DSVAE's contrastive and MI terms)

One batch plate ("sequences", dim -1) holds every site; time and pixels are event
dimensions, so the number of sites never depends on the batch size. Each latent group's
KL is annealed with ``poutine.scale`` by ``factors[group]`` (the guide applies the same
factor). A configuration (VDSM stage 1 or 2, SVG, SRVP, DSA) fills in the hooks; a new per-frame
prior is a new ``transition``, not a branch here.
"""
import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
from pyro import poutine

from vdsm.handlers import register_module
from vdsm.precision import Normal, full_precision

__all__ = ["StateSpaceVideoModel", "emission_distribution", "FramePrior", "IndependentNormal", "Stepped",
           "TeacherForced"]

def emission_distribution(kind, logits, scale=0.1):
    """Pixel likelihood over frames [B, T, C, H, W] (4 event dims), always in fp32.

    "bernoulli" (the reference; pixels in [0, 1] are treated as soft targets, hence no
    support check), "normal" or "laplace" around ``sigmoid(logits)`` with a fixed ``scale``.
    """
    logits = full_precision(logits)  # under bf16 autocast the likelihood is still summed in fp32
    if kind == "bernoulli":
        return dist.Bernoulli(logits=logits, validate_args=False).to_event(4)
    mean = torch.sigmoid(logits)
    if kind == "normal":
        return dist.Normal(mean, scale).to_event(4)
    if kind == "laplace":
        return dist.Laplace(mean, scale).to_event(4)
    raise ValueError(f"unknown emission {kind!r}: use bernoulli, normal or laplace")


class FramePrior:
    """How a configuration draws its per-frame latents: ``sample(model, b, t, d, ref, x)`` registers
    the sites (inside the batch plate and the "z" KL scale) and returns what ``model.emit`` reads."""

    def sample(self, model, b, t, d, ref, x=None):
        raise NotImplementedError


class IndependentNormal(FramePrior):
    """One site "z" [B, T', z_dim] ~ N(0, I): no transition (VDSM stage 1)."""

    def sample(self, model, b, t, d, ref, x=None):
        return pyro.sample("z", dist.Normal(ref.new_zeros(b, t, model.z_dim), 1.0).to_event(2))


class Stepped(FramePrior):
    """The transition stepped through time, sites "z_1".."z_T" (``pyro.markov``): ``state =
    model.initial_state(b, d, ref, x)``, then ``state, out_t = model.transition(state, t)`` for
    t = 1..T', each call sampling its frame's site through ``model.frame_site``. Returns the outs
    stacked on dim 1 (a tuple of outs element-wise): what ``emit`` reads."""

    def sample(self, model, b, t, d, ref, x=None):
        state, outs = model.initial_state(b, d, ref, x), []
        for k in pyro.markov(range(1, t + 1)):
            state, out = model.transition(state, k)
            outs.append(out)
        if isinstance(outs[0], tuple):
            return tuple(torch.stack(parts, 1) for parts in zip(*outs))
        return torch.stack(outs, 1)


class TeacherForced(FramePrior):
    """Every input of the prior is known (SVG's prior reads the observed frames): one call
    ``model.transition(model.initial_state(b, d, ref, x), slice(1, T' + 1))`` scores the whole
    sequence at once; its site is "z" [B, T', z_dim]. Returns the call's out."""

    def sample(self, model, b, t, d, ref, x=None):
        return model.transition(model.initial_state(b, d, ref, x), slice(1, t + 1))[1]


class StateSpaceVideoModel(nn.Module):
    """Base class: owns the plate and the order of sample sites; subclasses fill the hooks.

    Hooks: ``static_prior(batch, x_like)`` and ``dynamics_prior(batch, x_like)`` return a
    distribution (event dim 1) or None; ``frame_prior`` is a :class:`FramePrior`; the per-frame prior
    is one hook, ``transition(state, t) -> (next state, out_t)``, which samples frame t's latent through
    ``frame_site(t, loc, scale)`` (site "z_t" for a frame, "z" for a slice of frames) from the
    state, ``initial_state(b, d, x_like, x)`` being the state before the first frame;
    ``num_latent_frames(t)`` is T' (default T); ``emit(z, s, factors, x)`` returns the distribution of
    ``observed(x)``, z being the outs stacked over time; ``objective_terms(x, s, z, factors)`` adds
    ``pyro.factor`` sites to an observed sequence's objective (default: none).

    As in ``pyro.contrib.epidemiology``, the same ``transition`` samples step by step (training,
    generation, prediction's future) and, where every input is known, scores a whole sequence at once
    (``TeacherForced``).

    ``forward(x, *, factors, batch_size=None, seq_len=None, n_future=0)``: with ``x=None`` the model
    samples (give ``batch_size`` and ``seq_len``); with ``n_future`` > 0 the latents run ``n_future``
    frames past ``x`` and "obs" is the unobserved distribution of frames whose last ``n_future`` are
    the future (``predict``). The model's parameters are registered with
    Pyro under its class name (``vdsm.handlers.register_module``), so ``pyro.infer.SVI`` with a
    ``pyro.optim`` optimiser trains it as ``vdsm.train.train_stage`` does.
    """

    z_dim = None
    frame_prior = IndependentNormal()
    kl_scale = 1.0  # a constant factor on the per-frame KL (SVG's beta * C * H * W)

    def static_prior(self, batch, ref):
        return None

    def dynamics_prior(self, batch, ref):
        return None

    def initial_state(self, b, d, ref, x=None):
        """The state before the first frame: by default what a first transition may read."""
        return {"batch": b, "dynamics": d, "ref": ref, "frames": x}

    def transition(self, state, t):
        """(next state, what ``emit`` reads of frame t): samples frame t's latent (``frame_site``)
        from the prior given ``state``; ``t`` is the frame's 1-based index, or a slice of them."""
        raise NotImplementedError

    def frame_site(self, t, loc, scale):
        """Sample frame t's latent from N(loc, scale), batch dim 0 (the plate), the rest event dims:
        site "z_t" for one frame, "z" for a slice of frames scored at once."""
        return pyro.sample(f"z_{t}" if isinstance(t, int) else "z", Normal(loc, scale).to_event(loc.dim() - 1))

    def num_latent_frames(self, t):
        return t

    def observed(self, x):
        return x

    def emit(self, z, s, factors, x=None):
        raise NotImplementedError

    def objective_terms(self, x, s, z, factors):
        """Terms of the objective beyond the ELBO, as ``pyro.factor`` sites in the batch plate (one
        value per sequence), added when ``x`` is observed (C-DSVAE: its contrastive and MI terms); by
        default none. Reads the frames, the static latent and the outs stacked over time."""

    def forward(self, x=None, *, factors, batch_size=None, seq_len=None, n_future=0):
        register_module(type(self).__name__, self)  # its networks are Pyro params: a plain pyro.infer.SVI trains them
        ref = x if x is not None else next(self.parameters())
        b, t = (x.shape[0], x.shape[1] + n_future) if x is not None else (batch_size, seq_len)
        with pyro.plate("sequences", b, dim=-1):
            s = d = None
            prior = self.static_prior(b, ref)
            if prior is not None:
                with poutine.scale(scale=factors["identity"]):
                    s = pyro.sample("identity", prior)
            prior = self.dynamics_prior(b, ref)
            if prior is not None:
                with poutine.scale(scale=factors["dynamics"]):
                    d = pyro.sample("dynamics", prior)
            with poutine.scale(scale=factors["z"] * self.kl_scale):
                z = self.frame_prior.sample(self, b, self.num_latent_frames(t), d, ref, x)
            obs = None if x is None or n_future else self.observed(x)
            frames = pyro.sample("obs", self.emit(z, s, factors, x), obs=obs)
            if obs is not None:
                self.objective_terms(x, s, z, factors)
            return frames

    @torch.no_grad()
    def predict(self, x_past, n_future, guide):
        """Frames [B, n_past + n_future, C, H, W]: ``x_past``, then one draw of the future, through Pyro's
        handlers: the guide's draw of the latents given ``x_past`` is replayed into the model run with
        ``n_future`` more frames, whose latents the model draws from its own prior; the future frames
        are the "obs" site's mean. SRVP's ``emit`` handles ``n_future``; SVG's ``forward`` steps the future
        itself, as its prior reads the previous prediction."""
        factors = {"identity": 1.0, "dynamics": 1.0, "z": 1.0}
        past = poutine.trace(guide).get_trace(x_past, factors=factors)
        trace = poutine.trace(poutine.replay(self, trace=past)).get_trace(x_past, factors=factors, n_future=n_future)
        return torch.cat([x_past, trace.nodes["obs"]["fn"].mean[:, -n_future:]], 1)
