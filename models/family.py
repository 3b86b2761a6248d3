"""The hierarchical state-space family of video models, as one Pyro model with hooks.

Generative process for a batch of sequences x[b, t]:

    s ~ p(s)                        static latent, site "identity" (hook ``static_prior``)
    d ~ p(d)                        dynamics latent, site "dynamics" (hook ``dynamics_prior``)
    z ~ p(z_1:T | d, x)             per-frame latents: the hook ``frame_prior``, an object that
                                    registers the sites and returns what ``emit`` reads:
      IndependentNormal()             one site "z" [B, T', z_dim], N(0, I)           (VDSM stage 1, SVG-FP)
      LearnedFromFrames()             one site "z", N(model.learned_prior(x)): every input is
                                      known, so it is scored over the sequence at once   (SVG-LP)
      MarkovTransition()              sites "z_1".."z_T", z_t ~ N(model.transition(z_{t-1}, d)) (VDSM stage 2)
      RecurrentPrior()                sites "z_1".."z_T", z_t ~ N(model.prior_step(z_{t-1}, h_{t-1})):
                                      an LSTM over the earlier latents (DSA)
      ResidualState()                 a deterministic state y carried through time: site "y_1",
                                      sites "z_2".."z_T" ~ N(model.state_prior(y_{t-1})),
                                      y_t = model.step(y_{t-1}, z_t) (SRVP); returns y_1..y_T
    x ~ p(x | z, s, x_<t)           site "obs" (hook ``emit``; ``observed(x)`` picks the frames
                                    that are scored, e.g. all but the first for SVG)

One batch plate ("sequences", dim -1) holds every site; time and pixels are event
dimensions, so the number of sites never depends on the batch size. Each latent group's
KL is annealed with ``poutine.scale`` by ``factors[group]`` (the guide applies the same
factor). A configuration (VDSM stage 1 or 2, SVG, SRVP) fills in the hooks; a new kind of
per-frame prior is a new ``FramePrior`` class, not a branch here.
"""
import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
from pyro import poutine

from vdsm.handlers import register_module
from vdsm.precision import Normal, full_precision

__all__ = ["StateSpaceVideoModel", "emission_distribution", "FramePrior", "IndependentNormal",
           "LearnedFromFrames", "MarkovTransition", "RecurrentPrior", "ResidualState"]


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
    def sample(self, model, b, t, d, ref, x=None):
        return pyro.sample("z", dist.Normal(ref.new_zeros(b, t, model.z_dim), 1.0).to_event(2))


class LearnedFromFrames(FramePrior):
    """z_t ~ N(learned_prior(x)[t]): the prior reads earlier frames only, all known in training."""

    def sample(self, model, b, t, d, ref, x=None):
        loc, scale = model.learned_prior(x)
        return pyro.sample("z", Normal(loc, scale).to_event(2))


class MarkovTransition(FramePrior):
    """z_1 ~ N(0, I), z_t ~ N(transition(z_{t-1}, d)): sites "z_1".."z_T" (``pyro.markov``).

    With ``model.overshooting`` = w > 0, latent overshooting (Hafner et al. 2019, PlaNet) with the
    earlier steps at their means: from every z_s the transition is also rolled out open-loop, and
    its k-step predictions (k = 2..T-s) score the later latents, held fixed as in PlaNet:
    ``pyro.factor("overshooting", w / (T - 1) * sum_k sum_t log N(z_t | k-step prediction))``.
    Training sees only one-step transitions otherwise, while transfer and prediction roll the
    transition out from z_1 for T - 1 steps (BENCHMARKS.md: the rollouts of some actions drift to
    another action's poses).
    """

    def sample(self, model, b, t, d, ref, x=None):
        zs, z_prev = [], None
        for k in pyro.markov(range(1, t + 1)):
            if z_prev is None:
                loc, scale = ref.new_zeros(b, model.z_dim), ref.new_ones(b, model.z_dim)
            else:
                loc, scale = model.transition(z_prev, d)
            z_prev = pyro.sample(f"z_{k}", Normal(loc, scale).to_event(1))
            zs.append(z_prev)
        zs = torch.stack(zs, 1)
        if model.overshooting > 0 and t > 2:
            pyro.factor("overshooting", model.overshooting / (t - 1) * self.overshooting_log_prob(model, zs, d))
        return zs

    @staticmethod
    def overshooting_log_prob(model, zs, d):
        """[B]: sum over k = 2..T-1 and t of log N(z_t | the transition's k-step open-loop prediction
        from z_{t-k}); the latents ``zs`` [B, T, z_dim] are held fixed (no gradient through them)."""
        zs = zs.detach()
        t = zs.shape[1]
        means, total = zs[:, :-1], 0.0       # means[:, s]: the (k-1)-step prediction started at z_{s+1}
        for k in range(1, t):
            loc, scale = model.transition(means, d.unsqueeze(1).expand(-1, means.shape[1], -1))
            if k > 1:  # k = 1 is the ELBO's own transition term
                total = total + Normal(loc, scale).log_prob(zs[:, k:]).sum((-2, -1))
            means = loc[:, :-1]
        return total


class RecurrentPrior(FramePrior):
    """z_t ~ N(loc_t, scale_t) with ``loc_t, scale_t, state = model.prior_step(z_{t-1}, state)`` (an
    LSTM cell over the earlier latents, z_0 = 0 and a zero state): sites "z_1".."z_T" (DSA)."""

    def sample(self, model, b, t, d, ref, x=None):
        zs, z_prev, state = [], ref.new_zeros(b, model.z_dim), None
        for k in pyro.markov(range(1, t + 1)):
            loc, scale, state = model.prior_step(z_prev, state)
            z_prev = pyro.sample(f"z_{k}", Normal(loc, scale).to_event(1))
            zs.append(z_prev)
        return torch.stack(zs, 1)


class ResidualState(FramePrior):
    """A deterministic state y carried through time (SRVP): y_1 ~ N(0, I) (site "y_1"), then for
    t = 2..T z_t ~ N(state_prior(y_{t-1})) (sites "z_t", KL times ``model.z_kl_scale``) and
    ``y_t, penalty_t = step(y_{t-1}, z_t)``; the summed penalties enter as ``pyro.factor("l2_res",
    -model.penalty_scale * sum)``. Returns the states y_1..y_T [B, T, y_dim]."""

    def sample(self, model, b, t, d, ref, x=None):
        y = pyro.sample("y_1", dist.Normal(ref.new_zeros(b, model.y_dim), 1.0).to_event(1))
        ys, penalty = [y], 0.0
        for k in pyro.markov(range(2, t + 1)):
            loc, scale = model.state_prior(y)
            with poutine.scale(scale=model.z_kl_scale):
                z = pyro.sample(f"z_{k}", Normal(loc, scale).to_event(1))
            y, p = model.step(y, z)
            ys.append(y)
            penalty = penalty + p
        if model.penalty_scale > 0 and t > 1:
            pyro.factor("l2_res", -model.penalty_scale * full_precision(penalty))
        return torch.stack(ys, 1)


class StateSpaceVideoModel(nn.Module):
    """Base class: owns the plate and the order of sample sites; subclasses fill the hooks.

    Hooks: ``static_prior(batch, x_like)`` and ``dynamics_prior(batch, x_like)`` return a
    distribution (event dim 1) or None; ``frame_prior`` is a :class:`FramePrior` (which calls
    the model's ``transition(z_prev, d)``, ``learned_prior(x)`` or ``state_prior(y)`` / ``step(y,
    z)`` as it needs); ``num_latent_frames(t)`` is T' (default T); ``emit(z, s, factors, x)``
    returns the distribution of ``observed(x)``.

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
    overshooting = 0.0  # weight of MarkovTransition's latent overshooting (0: one-step transitions only)

    def static_prior(self, batch, ref):
        return None

    def dynamics_prior(self, batch, ref):
        return None

    def transition(self, z_prev, d):
        raise NotImplementedError

    def learned_prior(self, x):
        raise NotImplementedError

    def num_latent_frames(self, t):
        return t

    def observed(self, x):
        return x

    def emit(self, z, s, factors, x=None):
        raise NotImplementedError

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
            return pyro.sample("obs", self.emit(z, s, factors, x), obs=obs)

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
