"""SPYL, "sample and predict your latent" (Naiman, Berman & Azencot, ICML 2023), as a member of the
state-space family.

The generative model and the networks are C-DSVAE's (``models.cdsvae``: a static latent s ~ N(0, I),
site "identity"; per-frame latents d_1..d_T with a two-layer LSTM prior, sites "z_1".."z_T"; frames from
one decoder of [d_t, s]; the guide ``guides.spyl`` reads one bidirectional LSTM over the frame features).
What SPYL changes is the objective (the release's ``train.py`` and ``sample_and_predict.py``), per
sequence:

    10 x squared error         a Normal likelihood of scale sqrt(1/20) per pixel (site "obs")
    + 5 x KL(q(s) || p(s))     the "identity" KL scaled by the train section's ``identity_kl`` (model and guide)
    + KL of the d_t            every KL in closed form (``TraceMeanField_ELBO``)
    + MI(s; d)                 C-DSVAE's ReLU-clamped minibatch estimate (site "mi_sd")
    + static_nce, dynamics_nce the sample-and-predict contrastive terms (sites "static_nce", "dynamics_nce")

The contrastive terms need no data augmentation: the views come from the model itself.

- A bank of ``bank_factor`` x B sequences is decoded from the prior (s ~ N(0, I); d the prior's means
  along a sampled rollout) and encoded again, without gradients; it keeps each one's posterior of s and
  of d averaged over time.
- Static term: the anchor is the posterior mean of s for x; the positive, the posterior mean of s for a
  decode of that mean with a fresh prior rollout's d (motion changed, content kept); the negatives, the
  ``negative_share`` of the bank farthest from the anchor by KL. InfoNCE of cosine similarities at
  ``temperature``, one value per sequence.
- Dynamics term: the same with the posterior means of d averaged over time, the positive re-encoding a
  decode of x's posterior mean of d with s ~ N(0, I).

Both contrastive terms are off for the train section's first ``contrastive_warmup_frac`` of training (the
release: 50 of 1000 epochs), through the schedule's "contrastive" factor, and skipped then. Departures
from the release: the library trains on its train split (8100 sequences; N of the MI estimate
accordingly); the posterior of x is the guide's pass, computed once per step (the release encodes x again
for each positive); the MI kernels are the posterior's (``mi_kernel="variance"``: C-DSVAE's, which SPYL's
code keeps).
"""
from dataclasses import dataclass

import pyro
import torch
import torch.nn.functional as F

from vdsm.annealing import ConstantFactors

from .cdsvae import MI_KERNELS, CDSVAENets, mi_penalty
from .config import SequenceTrain, check_values
from .dsa import DSAModel, DSARun, StaticAndFramesSizes
from .spec import JUDGE, ModelSpec, Stage

__all__ = ["SPYLConfig", "SPYLTrain", "SPYLFactors", "SPYLNets", "SPYLModel", "SPYLRun", "SPEC",
           "sample_and_predict_nce", "farthest_by_kl"]


@dataclass
class SPYLConfig(StaticAndFramesSizes):
    """SPYL sizes and weights (defaults: the release's Sprites run, ``train.py``)."""

    f_dim: int = 256                # static latent s ("identity")
    z_dim: int = 32                 # per-frame latent d_t
    emission: str = "normal"        # pixel likelihood: bernoulli, normal or laplace
    emission_scale: float = 0.22360679774997896   # sqrt(1/20): -log N is 10 x the squared error, the release's weight
    weight_mi: float = 1.0          # weight of the MI(s; d) penalty
    mws_dataset_size: int = 8100    # N of the minibatch estimate of q(s), q(d), q(s, d) (the train split's size)
    mi_kernel: str = "std"          # width of the MI estimate's kernels: std (the posterior's), or variance (the release's)
    weight_static_nce: float = 1.0      # weight of the static sample-and-predict term (the release's --c_floss)
    weight_dynamics_nce: float = 1.0    # weight of the dynamics sample-and-predict term (the release's --c_floss)
    temperature: float = 0.5        # temperature of both contrastive terms
    bank_factor: int = 4            # the bank holds bank_factor x batch sequences drawn from the prior
    negative_share: float = 0.5     # the share of the bank, farthest from the anchor by KL, taken as negatives
    init_std: float = 0.01          # conv and linear weights N(0, init_std), as the release (0: PyTorch's initialisation)

    def check(self):
        check_values(self, positive=("emission_scale", "temperature"),
                     at_least_one=("nc", "f_dim", "z_dim", "g_dim", "nf", "rnn_dim", "mws_dataset_size", "bank_factor"))
        if self.emission not in ("bernoulli", "normal", "laplace"):
            raise ValueError(f"emission={self.emission!r}: use bernoulli, normal or laplace")
        if self.mi_kernel not in MI_KERNELS:
            raise ValueError(f"mi_kernel={self.mi_kernel!r}: use {' or '.join(MI_KERNELS)}")
        if not 0 < self.negative_share <= 1:
            raise ValueError(f"negative_share={self.negative_share} must be in (0, 1]")
        for name in ("weight_mi", "weight_static_nce", "weight_dynamics_nce", "init_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 0")


@dataclass
class SPYLTrain(SequenceTrain):
    """SPYL's training stage: C-DSVAE's, with the release's identity KL weight and the contrastive warm-up."""

    identity_kl: float = 5.0                # weight of KL(q(s) || p(s)) (the release's --weight_s)
    contrastive_warmup_frac: float = 0.05   # the contrastive terms are off for this first fraction (the release: 50 of 1000 epochs)


class SPYLFactors(ConstantFactors):
    """The schedule of a SPYL stage: "identity" is the static KL's constant weight, "z" 1, "contrastive" 0
    during the warm-up and 1 afterwards; the learning rate as ``ConstantFactors``'."""

    def __init__(self, section):
        super().__init__(section.get("lr_decay_frac", 0.0), groups=("identity", "z"),
                         weights={"identity": section.get("identity_kl", 5.0)})
        self.warmup = section.get("contrastive_warmup_frac", 0.05)

    def factors(self, progress):
        return {**super().factors(progress), "contrastive": 0.0 if progress < self.warmup else 1.0}


class SPYLNets(CDSVAENets):
    """C-DSVAE's networks, and the prior's rollout the sample-and-predict views are decoded from."""

    def prior_means(self, batch, t, ref):
        """The prior's means [batch, t, z_dim] along one rollout that feeds each step's draw to the next
        (the release's ``sample_motion_prior``)."""
        z_prev, state, means = ref.new_zeros(batch, self.config.z_dim), None, []
        for _ in range(t):
            loc, scale, state = self.prior_step(z_prev, state)
            means.append(loc)
            z_prev = loc + scale * torch.randn_like(loc)
        return torch.stack(means, 1)

    def decode_mean(self, z, s):
        return torch.sigmoid(self.decode_logits(z, s))

    def bank(self, batch, t, ref):
        """The negatives' bank: ``batch`` sequences from the prior, encoded again; posterior (loc, scale) of
        s, and of d averaged over time (the scales' logs averaged, as the release averages log-variances)."""
        s = torch.randn(batch, self.config.f_dim, device=ref.device, dtype=ref.dtype)
        s_loc, s_scale, d_loc, d_scale = self.posterior(self.decode_mean(self.prior_means(batch, t, ref), s))
        self.forget()
        return s_loc, s_scale, d_loc.mean(1), d_scale.log().mean(1).exp()


def farthest_by_kl(loc, scale, bank_loc, bank_scale, count):
    """[B, count, D]: for each of the B posteriors N(loc, scale), the means of the ``count`` bank posteriors
    farthest from it by KL(anchor || bank member)."""
    var, bank_var = scale[:, None] ** 2, bank_scale[None] ** 2
    kl = 0.5 * (bank_var.log() - var.log() + (var + (loc[:, None] - bank_loc[None]) ** 2) / bank_var - 1).sum(-1)
    return bank_loc[kl.argsort(-1, descending=True)[:, :count]]


def sample_and_predict_nce(anchor, positive, negatives, temperature):
    """Per-sequence InfoNCE [B] of anchors [B, D] against their positives [B, D] and their own negatives
    [B, N, D], cosine similarities over ``temperature`` (the release's ``contrastive_loss(normalize=True)``,
    whose batch mean this is)."""
    with torch.autocast(anchor.device.type, enabled=False):   # --amp: the term in fp32
        anchor, positive, negatives = anchor.float(), positive.float(), negatives.float()
        pos = F.cosine_similarity(anchor, positive, dim=-1) / temperature
        neg = F.cosine_similarity(anchor[:, None], negatives, dim=-1) / temperature
        return torch.logsumexp(torch.cat([pos[:, None], neg], 1), 1) - pos


class SPYLModel(DSAModel):
    """p(s) prod_t p(d_t | d_<t) p(x_t | d_t, s) and SPYL's added terms; sites "identity" [B, f_dim],
    "z_1".."z_T" [B, z_dim], "obs" [B, T, C, 64, 64], factors "mi_sd", "static_nce", "dynamics_nce" [B]."""

    def objective_terms(self, x, s, z, factors):
        c, nets = self.nets.config, self.nets
        s_loc, s_scale, z_loc, z_scale = nets.posterior(x)   # the guide's pass of this step, when it made one
        nets.forget()
        if c.weight_mi:
            pyro.factor("mi_sd", -c.weight_mi * mi_penalty(s, z, s_loc, s_scale, z_loc, z_scale, c.mws_dataset_size,
                                                           c.mi_kernel))
        on = factors.get("contrastive", 1.0)
        if not on or not (c.weight_static_nce or c.weight_dynamics_nce):
            return
        b, t = x.shape[:2]
        with torch.no_grad():
            bank_s_loc, bank_s_scale, bank_d_loc, bank_d_scale = nets.bank(c.bank_factor * b, t, x)
        count = max(1, int(c.negative_share * c.bank_factor * b))
        if c.weight_static_nce:   # content kept, motion from the prior
            positive = nets.posterior(nets.decode_mean(nets.prior_means(b, t, x), s_loc))[0]
            negatives = farthest_by_kl(s_loc, s_scale, bank_s_loc, bank_s_scale, count)
            pyro.factor("static_nce", -on * c.weight_static_nce
                        * sample_and_predict_nce(s_loc, positive, negatives, c.temperature))
        if c.weight_dynamics_nce:   # motion kept, content from the prior
            positive = nets.posterior(nets.decode_mean(z_loc, torch.randn_like(s_loc)))[2].mean(1)
            d_loc, d_scale = z_loc.mean(1), z_scale.log().mean(1).exp()
            negatives = farthest_by_kl(d_loc, d_scale, bank_d_loc, bank_d_scale, count)
            pyro.factor("dynamics_nce", -on * c.weight_dynamics_nce
                        * sample_and_predict_nce(d_loc, positive, negatives, c.temperature))
        nets.forget()


class SPYLRun(DSARun):
    """A trained (or freshly built) SPYL; as DSA's run, its dynamics are z_1..z_T.

    Example::

        run = SPYLRun.load("runs/sprites-spyl-...")        # or models.registry.load_run(...)
        moved = run.transfer_action(action_x, identity_x)
    """

    nets_cls, model_cls, guide_path = SPYLNets, SPYLModel, "guides.spyl:SPYLGuide"


#: SPYL's declaration, read by the runner (``models.spec.ModelSpec``).
SPEC = ModelSpec(
    names=("spyl",), config_cls=SPYLConfig, presets="spyl", run_cls=SPYLRun,
    stages=(Stage("spyl", "train", pair=lambda run: (run.model, run.guide), schedule=SPYLFactors,
                  frames=lambda config: config["train"]["seq_len"], config_cls=SPYLTrain),),
    evaluations=frozenset({JUDGE}), train_flags=("steps", "batch_size", "lr", "seq_len", "clip_norm", "identity_kl"))
SPYLRun.spec = SPEC
