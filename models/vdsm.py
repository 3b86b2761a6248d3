"""VDSM (Vowels et al., CVPR 2021) as two configurations of the state-space family.

Sites (stable names for custom guides): "identity" [B, n_experts], "dynamics"
[B, dynamics_dim] (stage 2), "z" [B, T, z_dim] (stage 1) or "z_1".."z_T" [B, z_dim]
(stage 2), "obs" [B, T, C, 64, 64].
"""
import math
from dataclasses import asdict, dataclass

import pyro.distributions as dist
import torch
import torch.nn as nn

from vdsm.nets import GatedTransition, MixtureOfExpertsDecoder

from .family import IndependentNormal, MarkovTransition, StateSpaceVideoModel, emission_distribution

__all__ = ["VDSMConfig", "VDSMStage1Model", "VDSMStage2Model"]


@dataclass
class VDSMConfig:
    """Network sizes of VDSM (defaults: the reference's Sprites config)."""

    nc: int = 3
    z_dim: int = 30
    n_experts: int = 40
    encoder_widths: tuple = (32, 32, 64, 64)
    encoder_features: int = 256
    decoder_widths: tuple = (512, 256, 128, 64)
    dynamics_dim: int = 50
    trans_dim: int = 64
    rnn_dim: int = 512
    rnn_layers: int = 3
    rnn_dropout: float = 0.2
    emission: str = "bernoulli"
    emission_scale: float = 0.1
    identity_scale_max: float = 0.0  # > 0: bound on the guide's identity scale (0: unbounded, the reference)
    identity_film: bool = False  # per-sequence affine maps of the decoder's channels from the identity
    learned_identity_loc: bool = False  # identity prior N(m, 1/n) with m learned in stage 1 (reference: m = 0)
    learned_dynamics_prior: bool = False  # dynamics prior N(m, s) with m, s learned in stage 2 (reference: N(0, 1/n))
    guide_pose_input: float = 0.0  # share of training sequences whose stage-2 combiner sees the frame poses (0: reference)
    # with guide_pose_input > 0: a shown pose is added to the combiner's mean (the combiner learns a correction)
    guide_pose_residual: bool = False
    # 0: identities drawn from the Gaussian prior (reference); N > 0: after training, from a mixture of at
    # most N components fitted to the training identities (vdsm.fitted_prior); training is unchanged
    identity_prior_components: int = 0
    # 0: new dynamics d and first poses z_1 drawn from their priors (reference); N > 0: after training, jointly
    # from a mixture of at most N components fitted to the training sequences' posterior [d, z_1]
    dynamics_prior_components: int = 0
    # > 0: weight of latent overshooting in stage 2 (the transition's open-loop k-step predictions also
    # score the posterior poses, models.family.MarkovTransition); 0: one-step transitions only (reference)
    overshooting: float = 0.0

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        for k in ("encoder_widths", "decoder_widths"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def check(self):
        for name in ("nc", "z_dim", "n_experts", "encoder_features", "dynamics_dim", "trans_dim", "rnn_dim",
                     "rnn_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        for name in ("encoder_widths", "decoder_widths"):  # 64 px -> 4 px in four halvings, and back
            widths = getattr(self, name)
            if len(widths) != 4 or min(widths) < 1:
                raise ValueError(f"{name}={list(widths)} must be four widths of at least 1")
        if self.emission != "bernoulli" and not self.emission_scale > 0:
            raise ValueError(f"emission_scale={self.emission_scale} must be positive")
        if not 0 <= self.rnn_dropout < 1:
            raise ValueError(f"rnn_dropout={self.rnn_dropout} must be in [0, 1)")
        for name in ("identity_prior_components", "dynamics_prior_components"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0 (0: the reference's prior)")
        if self.overshooting < 0:
            raise ValueError(f"overshooting={self.overshooting} must be >= 0 (0: the reference's one-step transitions)")
        if self.identity_scale_max < 0:
            raise ValueError(f"identity_scale_max={self.identity_scale_max} must be >= 0 (0 means unbounded)")
        if not 0 <= self.guide_pose_input <= 1:
            raise ValueError(f"guide_pose_input={self.guide_pose_input} must be in [0, 1] (0: the reference guide)")
        if self.guide_pose_residual and self.guide_pose_input == 0:
            raise ValueError("guide_pose_residual needs guide_pose_input > 0 (no pose is shown to add): "
                             "turn it off too (--no-guide-pose-residual)")
        if self.emission not in ("bernoulli", "normal", "laplace"):
            raise ValueError(f"emission={self.emission!r}: use bernoulli, normal or laplace")


class VDSMStage1Model(StateSpaceVideoModel):
    """Stage 1: identity ~ N(0, 1/n_experts) (or a learned mean), z_t ~ N(0, I) iid, x_t from the
    mixture-of-experts decoder.

    After training the prior may be replaced by a mixture fitted to the training identities
    (``identity_mixture``, see ``vdsm.fitted_prior``), which is then what identities are drawn from.

    With ``learned_identity_loc`` the identity prior's mean is a parameter (``identity_loc``,
    shared with stage 2 and frozen there): with a down-weighted identity KL the posterior
    identities drift away from 0 as a whole, and identities drawn from a zero-mean prior then
    decode to something no training sequence looks like.
    """

    frame_prior = IndependentNormal()
    identity_mixture = None   # a vdsm.fitted_prior.DiagonalMixture fitted after training, or None

    def __init__(self, config: VDSMConfig):
        super().__init__()
        self.config, self.z_dim = config, config.z_dim
        self.decoder = MixtureOfExpertsDecoder(config.z_dim, config.n_experts, config.nc, config.decoder_widths,
                                               config.identity_film)
        self.identity_loc = nn.Parameter(torch.zeros(config.n_experts)) if config.learned_identity_loc else None

    def static_prior(self, batch, ref):
        if self.identity_mixture is not None:
            return self.identity_mixture.distribution(batch)
        n = self.config.n_experts
        loc = ref.new_zeros(batch, n) if self.identity_loc is None else self.identity_loc.expand(batch, n)
        return dist.Normal(loc, 1.0 / n).to_event(1)

    def mixture(self, identity, factors):
        return torch.softmax(factors["temp_id"] * identity, -1)

    def emit(self, z, s, factors, x=None):
        logits = self.decoder(z, self.mixture(s, factors))
        return emission_distribution(self.config.emission, logits, self.config.emission_scale)


class VDSMStage2Model(VDSMStage1Model):
    """Stage 2: adds dynamics d ~ N(0, 1/dynamics_dim) and z_t ~ N(GatedTransition(z_{t-1}, d)).

    The decoder comes from stage 1 and is frozen by the runner. With ``overshooting`` > 0 the
    transition is also trained on its open-loop rollouts (``models.family.MarkovTransition``). With
    ``learned_dynamics_prior`` the prior of d is N(m, diag(s)) with m and s learned in stage 2
    (``dynamics_loc``, ``dynamics_log_scale``, starting at the reference's N(0, 1/n)): the ELBO
    then fits them to the posterior dynamics, whose spread is 2-3x the reference prior's scale
    when the dynamics KL is down-weighted, so that d drawn from the prior moves like a real
    sequence instead of rolling out an average motion.
    """

    frame_prior = MarkovTransition()

    def __init__(self, config: VDSMConfig):
        super().__init__(config)
        self.trans = GatedTransition(config.z_dim, config.dynamics_dim, config.trans_dim)
        n = config.dynamics_dim
        if config.learned_dynamics_prior:
            self.dynamics_loc = nn.Parameter(torch.zeros(n))
            self.dynamics_log_scale = nn.Parameter(torch.full((n,), -math.log(n)))
        else:
            self.dynamics_loc = self.dynamics_log_scale = None

    @property
    def overshooting(self):
        return self.config.overshooting

    def dynamics_prior(self, batch, ref):
        n = self.config.dynamics_dim
        if self.dynamics_loc is None:
            return dist.Normal(ref.new_zeros(batch, n), 1.0 / n).to_event(1)
        return dist.Normal(self.dynamics_loc.expand(batch, n), self.dynamics_log_scale.exp().expand(batch, n)).to_event(1)

    def transition(self, z_prev, d):
        return self.trans(z_prev, d)
