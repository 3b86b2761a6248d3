"""VDSM (Vowels et al., CVPR 2021) as two configurations of the state-space family.

Sites (stable names for custom guides): "identity" [B, n_experts], "dynamics"
[B, dynamics_dim] (stage 2), "z" [B, T, z_dim] (stage 1) or "z_1".."z_T" [B, z_dim]
(stage 2), "obs" [B, T, C, 64, 64].
"""
import contextlib
import dataclasses
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
from pyro import poutine

from vdsm.annealing import Schedule
from vdsm.checkpoint import load_checkpoint, save_checkpoint
from vdsm.fitted_prior import (
    DiagonalMixture,
    fit_mixture_chosen_on_val,
    posterior_values,
)
from vdsm.nets import GatedTransition, MixtureOfExpertsDecoder
from vdsm.precision import Normal

from .config import TrainConfig, field_help
from .family import (
    IndependentNormal,
    StateSpaceVideoModel,
    Stepped,
    emission_distribution,
)
from .spec import (
    JUDGE,
    ModelSpec,
    Stage,
    StaticLatentRun,
    import_object,
)

__all__ = ["VDSMConfig", "VDSMStage1Model", "VDSMStage2Model", "LatentOvershooting", "VDSMRun", "SPEC", "FITTED_PRIORS", "FITTED_FROM",
           "prior_path", "guide_factory"]

#: Latents with a prior fitted after training (``vdsm.fitted_prior``), and the guide's sites each covers.
FITTED_PRIORS = {"identity": ("identity",), "dynamics": ("dynamics", "z_1")}
#: The stage whose posterior each fitted prior describes (stage 2 keeps stage 1's encoder frozen).
FITTED_FROM = {"identity": "stage1", "dynamics": "stage2"}
STAGES = ("stage1", "stage2")


def prior_path(run_dir, latent):
    """Where a run keeps the fitted prior of ``latent``: checkpoints/<latent>_prior.pt."""
    return Path(run_dir) / "checkpoints" / f"{latent}_prior.pt"


def guide_factory(path):
    """``"package.module:factory"`` -> the factory callable (it takes a VDSMRun, returns a guide)."""
    try:
        return import_object(path, "guide factory")
    except ValueError as err:
        raise ValueError(f"{err}; use --guide2 package.module:factory") from None


@dataclass
class VDSMConfig:
    """Network sizes of VDSM (defaults: the reference's Sprites config)."""

    nc: int = 3                     # channels of a frame
    z_dim: int = 30                 # per-frame pose latent z_t
    n_experts: int = 40             # decoder experts; the identity is a softmax over them
    encoder_widths: tuple = (32, 32, 64, 64)   # channels of the frame encoder's four blocks
    encoder_features: int = 256     # frame code of the encoder
    decoder_widths: tuple = (512, 256, 128, 64)   # channels of each expert's four blocks
    dynamics_dim: int = 50          # the sequence's dynamics (action) latent d
    trans_dim: int = 64             # hidden width of the stage-2 transition p(z_t | z_t-1, d)
    rnn_dim: int = 512              # the stage-2 guide's LSTM
    rnn_layers: int = 3             # ... its layers
    rnn_dropout: float = 0.2        # ... dropout between its layers (guide_release_lstm: none)
    emission: str = "bernoulli"     # pixel likelihood: bernoulli, normal or laplace
    emission_scale: float = 0.1     # scale of a normal or laplace pixel likelihood
    identity_scale_max: float = 0.0  # > 0: bound on the guide's identity scale (0: unbounded, the reference)
    identity_film: bool = False  # per-sequence affine maps of the decoder's channels from the identity
    learned_identity_loc: bool = False  # identity prior N(m, 1/n) with m learned in stage 1 (reference: m = 0)
    learned_dynamics_prior: bool = False  # dynamics prior N(m, s) with m, s learned in stage 2 (reference: N(0, 1/n))
    guide_pose_input: float = 0.0  # share of training sequences whose stage-2 combiner sees the frame poses (0: reference)
    # with guide_pose_input > 0: a shown pose is added to the combiner's mean (the combiner learns a correction)
    guide_pose_residual: bool = False
    # the stage-2 guide's LSTM as the release's (output fed back, h_0 and c_0 linear in d, no dropout,
    # q(d)'s mean under LeakyReLU 0.01); False: an LSTM over the frame codes alone, rnn_dropout between
    # layers, LeakyReLU 0.2 (guides.vdsm)
    guide_release_lstm: bool = True
    # 0: identities drawn from the Gaussian prior (reference); N > 0: after training, from a mixture of at
    # most N components fitted to the training identities (vdsm.fitted_prior); training is unchanged
    identity_prior_components: int = 0
    # 0: new dynamics d and first poses z_1 drawn from their priors (reference); N > 0: after training, jointly
    # from a mixture of at most N components fitted to the training sequences' posterior [d, z_1]
    dynamics_prior_components: int = 0
    # > 0: weight of latent overshooting in stage 2 (the transition's open-loop k-step predictions also
    # score the posterior poses, LatentOvershooting); 0: one-step transitions only (reference)
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


class LatentOvershooting(Stepped):
    """Stage 2's frame prior: the transition stepped through time (``Stepped``: sites "z_1".."z_T"),
    plus, with ``model.overshooting`` = w > 0, latent overshooting (Hafner et al. 2019, PlaNet) with
    the earlier steps at their means: from every z_s the transition is also rolled out open-loop, and
    its k-step predictions (k = 2..T-s) score the later latents, held fixed as in PlaNet:
    ``pyro.factor("overshooting", w / (T - 1) * sum_k sum_t log N(z_t | k-step prediction))``.
    Training sees only one-step transitions otherwise, while transfer and prediction roll the
    transition out from z_1 for T - 1 steps (docs/journal.md, "Latent overshooting": the rollouts of some actions
    drift to another action's poses).
    """

    def sample(self, model, b, t, d, ref, x=None):
        zs = super().sample(model, b, t, d, ref, x)
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
            loc, scale = model.trans(means, d.unsqueeze(1).expand(-1, means.shape[1], -1))
            if k > 1:  # k = 1 is the ELBO's own transition term
                total = total + Normal(loc, scale).log_prob(zs[:, k:]).sum((-2, -1))
            means = loc[:, :-1]
        return total


class VDSMStage2Model(VDSMStage1Model):
    """Stage 2: adds dynamics d ~ N(0, 1/dynamics_dim) and z_t ~ N(GatedTransition(z_{t-1}, d)).

    The decoder comes from stage 1 and is frozen by the runner. With ``overshooting`` > 0 the
    transition is also trained on its open-loop rollouts (``LatentOvershooting``). With
    ``learned_dynamics_prior`` the prior of d is N(m, diag(s)) with m and s learned in stage 2
    (``dynamics_loc``, ``dynamics_log_scale``, starting at the reference's N(0, 1/n)): the ELBO
    then fits them to the posterior dynamics, whose spread is 2-3x the reference prior's scale
    when the dynamics KL is down-weighted, so that d drawn from the prior moves like a real
    sequence instead of rolling out an average motion.
    """

    frame_prior = LatentOvershooting()

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

    def transition(self, state, t):
        """z_1 ~ N(0, I), z_t ~ N(GatedTransition(z_{t-1}, d)); the state is (z_{t-1}, d)."""
        if t == 1:
            ref, shape = state["ref"], (state["batch"], self.config.z_dim)
            loc, scale = ref.new_zeros(shape), ref.new_ones(shape)
        else:
            loc, scale = self.trans(state["z"], state["dynamics"])
        z = self.frame_site(t, loc, scale)
        return dict(state, z=z), z


class VDSMRun(StaticLatentRun):
    """A trained (or freshly built) VDSM: stage-1 and stage-2 model/guide pairs on one device.

    The methods of ``StaticLatentRun`` (generation, identity swap, action transfer, the judge
    protocols' two generations) plus prediction and the fitted priors. ``load`` returns the run in
    evaluation mode (no dropout; the stage-2 guide shows the frame poses to every sequence), using
    stage 2 when the run has it. Keeping a sequence's dynamics keeps "dynamics" and "z_1" (stage
    2; later poses follow the transition) or every pose (stage 1 only).

    Example::

        vdsm = VDSMRun.load("runs/sprites")             # or models.registry.load_run(...)
        swapped = vdsm.swap_identity(pose_x, identity_x)
    """

    dynamics_mixture = None   # a DiagonalMixture over [d, z_1] fitted after training, or None

    def __init__(self, config: VDSMConfig, schedule2: Schedule = None, device="cpu"):
        guide1, guide2 = (import_object(f"guides.vdsm:{name}", "guide") for name in ("VDSMStage1Guide", "VDSMStage2Guide"))
        self.config, self.device = config, torch.device(device)
        self.model1, self.guide1 = VDSMStage1Model(config), guide1(config)
        self.model2, self.guide2 = VDSMStage2Model(config), guide2(config)
        # stage 2 reuses stage 1's networks (frozen during stage-2 training)
        self.model2.decoder = self.model1.decoder
        self.model2.identity_loc = self.model1.identity_loc
        self.guide2.encoder = self.guide1.encoder
        for m in (self.model1, self.guide1, self.model2, self.guide2):
            m.to(self.device)
        self.schedule2 = schedule2 or Schedule()
        self.stage_in_use = "stage1"

    @classmethod
    def from_config(cls, config, device="cpu", loading=False):
        run = cls(VDSMConfig.from_dict(config["model"]), Schedule(**config["stage2"]["schedule"]), device)
        run.sections = config
        if config.get("guide2"):  # before loading: run once, so that lazily built parameters exist
            shape = {"batch_size": config["stage2"]["batch_size"], "seq_len": config["stage2"]["seq_len"]} if loading else {}
            run.use_guide2(config["guide2"], **shape)
        return run

    def after_load(self, run_dir, config):
        for latent in FITTED_PRIORS:
            path = prior_path(run_dir, latent)
            if path.is_file():
                self.set_fitted_prior(latent, DiagonalMixture.from_state_dict(load_checkpoint(path, "cpu")["mixture"]))

    @property
    def has_stage2(self):
        """True when the stage-2 pair is in use (a run trained through stage 2)."""
        return self.stage_in_use == "stage2"

    @has_stage2.setter
    def has_stage2(self, value):
        self.use_stage("stage2" if value else "stage1")

    @property
    def has_dynamics_latent(self):
        return self.has_stage2

    def describe(self):
        return f"stage {2 if self.has_stage2 else 1} model"

    def networks(self):
        """The damage groups: the four networks (stage 2 shares stage 1's encoder and decoder)."""
        return nn.ModuleDict({"model1": self.model1, "guide1": self.guide1, "model2": self.model2, "guide2": self.guide2})

    def frame_features(self, frames):
        return self.guide1.encoder.features(frames).flatten(1)

    def factors(self):
        return self.schedule2.factors(1.0)

    def dynamics_sites(self, t):
        return {"dynamics", "z_1"} if self.has_stage2 else {"z"}

    # ------------------------------------------------------------ fitted priors

    @property
    def fitted_priors(self):
        """The latents drawn from priors fitted after training (in use), e.g. ["identity", "dynamics"]."""
        in_use = {"identity": self.model2.identity_mixture, "dynamics": self.dynamics_mixture if self.has_stage2 else None}
        return [latent for latent, mixture in in_use.items() if mixture is not None]

    def set_fitted_prior(self, latent, mixture):
        """Draw ``latent`` ("identity", or "dynamics": d and z_1 jointly) from ``mixture`` (a
        ``DiagonalMixture``; None: from the model's own priors again)."""
        mixture = None if mixture is None else mixture.to(self.device)
        if latent == "identity":
            self.model1.identity_mixture = self.model2.identity_mixture = mixture
        else:
            self.dynamics_mixture = mixture
        return self

    @torch.no_grad()
    def fit_priors(self, components, train, val, seed=0):
        """Fit a mixture to each posterior latent in ``components`` (latent -> largest size;
        "identity", and "dynamics": [d, z_1], which needs stage 2) over the sequences of ``train``
        (datasets of (frames, labels)), its size chosen by the mean log-likelihood of ``val``'s, and
        use it. Both latents come from one pass over each dataset. Returns {latent: (mixture,
        summary)}, the summary with the sizes tried, the one kept and the scale floor."""
        if "dynamics" in components and not self.has_stage2:
            raise ValueError("no fitted prior for 'dynamics' on a stage-1 model: identity, or dynamics with stage 2")
        self.eval()
        groups = {latent: FITTED_PRIORS[latent] for latent in components}
        train_points = posterior_values(self.posterior, train, self.device, groups)
        val_points = posterior_values(self.posterior, val, self.device, groups)
        fitted = {}
        for latent, max_components in components.items():
            points, scales = train_points[latent]
            # identity: one floor for every dimension (the mean posterior scale); dynamics: one per dimension
            min_scale = float(scales.mean()) if latent == "identity" else scales
            mixture, tried = fit_mixture_chosen_on_val(points, val_points[latent][0], min_scale=min_scale,
                                                       max_components=max_components, seed=seed)
            self.set_fitted_prior(latent, mixture)
            what = "identities drawn from" if latent == "identity" else "dynamics d and first pose z_1 drawn jointly from"
            fitted[latent] = (mixture, {
                "what": f"{what} a diagonal Gaussian mixture fitted after training to the posterior means of the "
                        f"training sequences; size chosen on val",
                "components": int(mixture.loc.shape[0]), "max_components": max_components,
                "min_scale_mean": float(scales.mean()), "train_sequences": len(train), "val_sequences": len(val),
                "tried": tried})
        return fitted

    def fit_and_save(self, run_dir, train, val, components, seed=0, trained_on_val=False):
        """``fit_priors``, then each mixture saved in the run (``prior_path``); returns {latent: summary}."""
        started = time.time()
        fitted = self.fit_priors(components, train, val, seed=seed)
        seconds = round(time.time() - started, 1)   # one pass over the data serves every latent
        summaries = {}
        for latent, (mixture, summary) in fitted.items():
            if trained_on_val:
                summary["note"] = ("the run trained on its val sequences (--train-split trainval): the size was "
                                   "chosen on them")
            summary.update(date=time.strftime("%Y-%m-%d"), seconds_all_fits=seconds)
            self.save_prior(run_dir, latent, mixture, summary)
            summaries[latent] = summary
        return summaries

    @staticmethod
    def save_prior(run_dir, latent, mixture, summary):
        save_checkpoint(prior_path(run_dir, latent), {"mixture": mixture.state_dict(), "summary": json.dumps(summary)})

    def fitted_draws(self, batch_size):
        """{"dynamics": d, "z_1": z_1} drawn jointly from the fitted dynamics prior (stage 2), else {}."""
        if self.dynamics_mixture is None or not self.has_stage2:
            return {}
        points = self.dynamics_mixture.sample(batch_size)
        n = self.config.dynamics_dim
        return {"dynamics": points[:, :n], "z_1": points[:, n:]}

    # ------------------------------------------------------------ guides

    def use_guide2(self, path, batch_size=None, seq_len=None):
        """Replace the stage-2 guide by ``guide_factory(path)(self)``; with a batch shape, run it once
        so that lazily created parameters (Pyro autoguides) exist before a state dict is loaded."""
        self.guide2 = guide_factory(path)(self).to(self.device)
        if batch_size:
            x = torch.zeros(batch_size, seq_len, self.config.nc, 64, 64, device=self.device)
            with torch.no_grad(), poutine.block():
                self.guide2(x, factors=self.factors())
        return self

    @property
    def shows_poses(self):
        """True when the stage-2 guide also sees the frame poses in evaluation (``--guide-pose-input``)."""
        return (self.has_stage2 and self.config.guide_pose_input > 0
                and getattr(self.guide2, "show_poses_in_eval", False))

    @contextlib.contextmanager
    def reference_guide_inputs(self):
        """Within it, the stage-2 guide sees what the reference guide sees: no frame poses (with
        ``guide_pose_input`` > 0 it otherwise shows them to every sequence in evaluation). Used for
        VDSM's own consistency metric beside the paper's number."""
        guide, before = self.guide2, getattr(self.guide2, "show_poses_in_eval", None)
        if before is not None:
            guide.show_poses_in_eval = False
        try:
            yield self
        finally:
            if before is not None:
                guide.show_poses_in_eval = before

    # ------------------------------------------------------------ prediction

    def predict_once(self, x_past, n_future):
        """The identity, the dynamics and the poses z_1..z_{n_past} are the posterior means given
        ``x_past``; the later poses are drawn from the learned transition (the model run under
        ``condition``), frames at their mean. Needs stage 2."""
        if not self.has_stage2:
            raise ValueError("prediction needs the stage-2 dynamics model: train stage 2 (--stage both)")
        b, n_past = x_past.shape[:2]
        latents = self.latents(self.posterior(x_past))
        future = {f"z_{t}" for t in range(n_past + 1, n_past + n_future + 1)}
        frames = self.decode(latents, b, n_past + n_future, sampled=future)
        return torch.cat([x_past, frames[:, n_past:]], 1)


# ---------------------------------------------------------------- the spec: stages, flags, old configs


def _stage2_frozen(run):
    """Stage 1's networks, fixed in stage 2: no gradients, not in the optimiser."""
    frozen = [run.model1.decoder, run.guide1.encoder]
    return frozen + ([run.model1.identity_loc] if run.model1.identity_loc is not None else [])


@dataclass
class VDSMStageConfig(TrainConfig):
    """A VDSM stage (config.json's ``stage1`` / ``stage2``): its sequences and its annealing schedule."""

    seq_len: int = 8               # frames per training sequence (stage 1 with pair_actions: two of them)
    pair_actions: bool = False     # each item two sequences of one character and action, concatenated
    random_window: bool = False    # seq_len consecutive frames from a random start (else the first)
    schedule: Schedule = field(default_factory=Schedule)   # the annealing factors over the stage


def _schedule(section):
    return Schedule(**section.get("schedule", {}))


class VDSMFlags:
    """VDSM's own command-line flags: which stage to train, per-stage steps and schedules, a custom
    stage-2 guide."""

    def add_flags(self, group):
        group.add_argument("--stage", choices=["1", "2", "both"], help="which training stage(s) to run")
        group.add_argument("--stage1-steps", type=int, help="training steps of stage 1; with --resume: extend to N")
        group.add_argument("--stage2-steps", type=int, help="training steps of stage 2; with --resume: extend to N")
        group.add_argument("--guide2", metavar="MODULE:FACTORY",
                           help="custom stage-2 guide: a factory taking the VDSM run (see guides/examples.py)")
        dests = {"stage", "stage1_steps", "stage2_steps", "guide2"}
        for stage in STAGES:
            for f in dataclasses.fields(Schedule):
                group.add_argument(f"--{stage}-{f.name.replace('_', '-')}", type=float, dest=f"{stage}_{f.name}",
                                   metavar="X", help=f"{stage}: {field_help(Schedule, f.name)}")
                dests.add(f"{stage}_{f.name}")
        return dests

    def defaults(self, preset):
        """The defaults of these flags in ``preset`` (a preset's config; None: the schedule's own)."""
        shown = {"stage": "both", "guide2": "the library's stage-2 guide"}
        for stage in STAGES:
            section = preset[stage] if preset is not None else {"steps": "the preset's", "schedule": {}}
            schedule = dataclasses.asdict(Schedule(**section["schedule"]))
            shown[f"{stage}_steps"] = section["steps"]
            shown.update({f"{stage}_{name}": value for name, value in schedule.items()})
        return shown

    def resolve(self, args, config):
        if getattr(args, "guide2", None):
            guide_factory(args.guide2)
            config["guide2"] = args.guide2
        config.setdefault("guide2", None)
        for stage in STAGES:
            s = config[stage]
            if getattr(args, f"{stage}_steps", None) is not None:
                s["steps"] = getattr(args, f"{stage}_steps")
            for f in dataclasses.fields(Schedule):
                value = getattr(args, f"{stage}_{f.name}", None)
                if value is not None:
                    s["schedule"][f.name] = value
            try:
                s["schedule"] = dataclasses.asdict(Schedule(**s["schedule"]).check())
            except (ValueError, TypeError) as err:
                raise ValueError(f"bad {stage} schedule: {err} (--{stage}-... flags)") from None
        return config

    def stages(self, args, spec):
        return {"1": ["stage1"], "2": ["stage2"], "both": list(STAGES)}[getattr(args, "stage", None) or "both"]


def _fitted_priors(run, context):
    """After training: fit the mixtures of ``identity_prior_components`` / ``dynamics_prior_components``
    (a prior only when the stage its posterior comes from trained in this call, or when it was
    never fitted: a resume that trained nothing keeps the run's mixtures instead of repeating the
    pass over every training sequence); returns their summaries for metrics.json."""
    wanted = {"identity": run.config.identity_prior_components}
    if run.has_stage2:
        wanted["dynamics"] = run.config.dynamics_prior_components
    wanted = {latent: n for latent, n in wanted.items() if n > 0}
    metrics = {}
    kept = {latent for latent in wanted
            if FITTED_FROM[latent] not in context.trained and prior_path(context.run_dir, latent).is_file()}
    for latent in kept:
        saved = load_checkpoint(prior_path(context.run_dir, latent), "cpu")
        run.set_fitted_prior(latent, DiagonalMixture.from_state_dict(saved["mixture"]))
        metrics[f"{latent}_prior"] = json.loads(saved["summary"])
    refit = {latent: n for latent, n in wanted.items() if latent not in kept}
    if context.rank == 0 and refit:
        summaries = run.fit_and_save(context.run_dir, context.dataset(context.train_split), context.dataset("val"),
                                     refit, seed=context.seed, trained_on_val=context.train_split == "trainval")
        metrics.update({f"{latent}_prior": summary for latent, summary in summaries.items()})
    return metrics


#: VDSM's declaration (two stages), read by the runner (``models.spec.ModelSpec``).
SPEC = ModelSpec(
    names=("vdsm",), config_cls=VDSMConfig, presets="vdsm", run_cls=VDSMRun,
    stages=(Stage("stage1", "stage1", pair=lambda run: (run.model1, run.guide1), schedule=_schedule,
                  frames=lambda config: config["stage1"]["seq_len"], data_flags=("pair_actions", "random_window"),
                  label="stage 1", config_cls=VDSMStageConfig),
            Stage("stage2", "stage2", pair=lambda run: (run.model2, run.guide2), schedule=_schedule,
                  frames=lambda config: config["stage2"]["seq_len"], frozen=_stage2_frozen,
                  data_flags=("pair_actions", "random_window"), label="stage 2", config_cls=VDSMStageConfig)),
    evaluations=frozenset({JUDGE}), train_flags=("steps", "batch_size", "lr", "seq_len", "clip_norm"), cli=VDSMFlags(),
    after_training=_fitted_priors)
VDSMRun.spec = SPEC
