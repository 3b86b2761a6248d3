"""Deprecated frame priors, kept for one release: each calls the hook its model had before the one
transition hook (``models.family.Stepped`` / ``TeacherForced`` with ``transition(state, t)``).

    LearnedFromFrames   model.learned_prior(x) -> (loc, scale) of site "z"
    MarkovTransition    model.transition(z_prev, d) -> (loc, scale) of z_t; latent overshooting
    RecurrentPrior      model.prior_step(z_prev, state) -> (loc, scale, state)
    ResidualState       model.state_prior(y) and model.step(y, z) (SRVP's residual state)

A model written against them keeps training unchanged (same sites, same numbers); importing them from
``models.family`` warns. Port the model to ``transition(state, t)``: see README, "Your own model".
"""
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from vdsm.precision import Normal, full_precision

from .family import FramePrior

__all__ = ["LearnedFromFrames", "MarkovTransition", "RecurrentPrior", "ResidualState"]


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
