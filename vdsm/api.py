"""Library API for a trained VDSM run: load, reconstruct, generate, swap identity, transfer action."""
import contextlib
import importlib
import json
from pathlib import Path

import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger

from guides.vdsm import VDSMStage1Guide, VDSMStage2Guide
from models.vdsm import VDSMConfig, VDSMStage1Model, VDSMStage2Model

from .annealing import Schedule
from .checkpoint import CheckpointError, CheckpointManager, load_checkpoint, save_checkpoint
from .fitted_prior import DiagonalMixture, fit_mixture_chosen_on_val, posterior_values
from .train import load_param_store_state

__all__ = ["VDSM", "LatentVideoAPI", "use_means", "guide_factory"]

# latents with a prior fitted after training (vdsm.fitted_prior), and the guide's sites each covers
FITTED_PRIORS = {"identity": ("identity",), "dynamics": ("dynamics", "z_1")}
# the stage whose posterior each fitted prior describes (stage 2 keeps stage 1's encoder frozen)
FITTED_FROM = {"identity": "stage1", "dynamics": "stage2"}


def prior_path(run_dir, latent):
    """Where a run keeps the fitted prior of ``latent``: checkpoints/<latent>_prior.pt."""
    return Path(run_dir) / "checkpoints" / f"{latent}_prior.pt"


def guide_factory(spec):
    """``"package.module:factory"`` -> the factory callable (it takes a VDSM, returns a guide)."""
    module_name, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"cannot import guide factory {spec!r} ({err}): use --guide2 package.module:factory") from None


class use_means(Messenger):
    """Effect handler: every unobserved sample site (except those named in ``skip``) takes its mean."""

    def __init__(self, skip=()):
        super().__init__()
        self.skip = set(skip)

    def _pyro_sample(self, msg):
        if msg["is_observed"] or msg["value"] is not None or msg["name"] in self.skip:
            return
        try:
            mean = msg["fn"].mean
        except (AttributeError, NotImplementedError):  # e.g. a plate's subsample site
            return
        msg["value"], msg["done"] = mean, True


def _mean_of_obs(trace):
    return trace.nodes["obs"]["fn"].mean


class LatentVideoAPI:
    """What VDSM and DSA share: a static latent "identity" and per-frame latents, read off the
    guide at their posterior means and decoded by the model. A subclass gives ``_pair()`` (the
    model and guide in use), ``factors()`` and ``device``.

    All methods take frames [B, T, C, 64, 64] in [0, 1], work on the whole batch at once
    under ``torch.no_grad()``, and return frames of the same layout. Random draws come from
    torch's global generator: the same seed gives the same frames.
    """

    def _pair(self):
        raise NotImplementedError

    def factors(self):
        raise NotImplementedError

    def posterior(self, x):
        """Guide trace with every latent at its posterior mean (autoregressively for stage 2)."""
        _, guide = self._pair()
        with use_means():
            return poutine.trace(guide).get_trace(x.to(self.device), factors=self.factors())

    def _decode(self, condition, batch_size, seq_len, sampled=()):
        """Frame means of the model conditioned on ``condition``; sites named in ``sampled`` are
        drawn from the prior, every other free site takes its mean."""
        model, _ = self._pair()
        conditioned = poutine.condition(model, data=condition)
        with use_means(skip=sampled):
            trace = poutine.trace(conditioned).get_trace(None, factors=self.factors(), batch_size=batch_size,
                                                         seq_len=seq_len)
        return _mean_of_obs(trace)

    @staticmethod
    def _latents(trace, keep=lambda name: True):
        return {n: site["value"] for n, site in trace.nodes.items()
                if site["type"] == "sample" and not site["is_observed"] and keep(n)}

    @torch.no_grad()
    def reconstruct(self, x):
        trace = self.posterior(x)
        return self._decode(self._latents(trace), x.shape[0], x.shape[1])

    @torch.no_grad()
    def generate(self, batch_size, seq_len):
        """Sequences drawn from the prior (identity, dynamics, z sampled; frames at their mean)."""
        model, _ = self._pair()
        model = poutine.condition(model, data=self._fitted_draws(batch_size))
        trace = poutine.trace(model).get_trace(None, factors=self.factors(), batch_size=batch_size,
                                               seq_len=seq_len)
        return _mean_of_obs(trace)

    def _fitted_draws(self, batch_size):
        """Values of latents drawn from priors fitted after training (none here; VDSM: d and z_1)."""
        return {}

    @torch.no_grad()
    def swap_identity(self, pose_x, identity_x):
        """Poses (all per-frame latents, and dynamics) of ``pose_x`` drawn with the identity of ``identity_x``."""
        return self.with_identity(pose_x, self.identities(identity_x))

    @torch.no_grad()
    def identities(self, x):
        """The posterior mean identity of each sequence [B, identity size] (e.g. to interpolate between two)."""
        return self.posterior(x).nodes["identity"]["value"]

    @torch.no_grad()
    def with_identity(self, pose_x, identity):
        """Every pose (and the dynamics) of ``pose_x`` drawn with the given identities [B, identity size]."""
        latents = self._latents(self.posterior(pose_x), lambda n: n != "identity")
        latents["identity"] = identity.to(self.device)
        return self._decode(latents, pose_x.shape[0], pose_x.shape[1])


class VDSM(LatentVideoAPI):
    """A trained (or freshly built) VDSM: stage-1 and stage-2 model/guide pairs on one device.

    The methods of ``LatentVideoAPI`` plus transfer, prediction and the judge protocols' two
    generations. ``load`` returns the model in evaluation mode (no dropout; the stage-2 guide shows the frame poses to every sequence).

    Example::

        vdsm = VDSM.load("runs/sprites")
        swapped = vdsm.swap_identity(pose_x, identity_x)
    """

    def __init__(self, config: VDSMConfig, schedule2: Schedule = None, device="cpu"):
        self.config, self.device = config, torch.device(device)
        self.model1, self.guide1 = VDSMStage1Model(config), VDSMStage1Guide(config)
        self.model2, self.guide2 = VDSMStage2Model(config), VDSMStage2Guide(config)
        # stage 2 reuses stage 1's networks (frozen during stage-2 training)
        self.model2.decoder = self.model1.decoder
        self.model2.identity_loc = self.model1.identity_loc
        self.guide2.encoder = self.guide1.encoder
        for m in (self.model1, self.guide1, self.model2, self.guide2):
            m.to(self.device)
        self.schedule2 = schedule2 or Schedule()
        self.has_stage2 = False

    @classmethod
    def load(cls, run_dir, device="cpu"):
        """The trained run in ``run_dir``, in evaluation mode. Pyro params of a custom guide (written
        with ``pyro.param``) are restored into Pyro's global param store."""
        run_dir = Path(run_dir)
        config_path = run_dir / "config.json"
        if not config_path.is_file():
            raise CheckpointError(f"{run_dir} has no config.json: pass a run folder written by experiments.run")
        config = json.loads(config_path.read_text())
        if config.get("model_name", "vdsm") != "vdsm":
            raise CheckpointError(f"{run_dir} holds a {config['model_name']} run: load it with "
                                  f"experiments.registry.api_class({config['model_name']!r})")
        schedule = Schedule(**config["stage2"]["schedule"])
        vdsm = cls(VDSMConfig.from_dict(config["model"]), schedule, device)
        if config.get("guide2"):
            vdsm.use_guide2(config["guide2"], batch_size=config["stage2"]["batch_size"],
                            seq_len=config["stage2"]["seq_len"])
        state = CheckpointManager(run_dir / "checkpoints", "stage1").load_newest(vdsm.device)
        vdsm.model1.load_state_dict(state["model"])
        vdsm.guide1.load_state_dict(state["guide"])
        stage2 = CheckpointManager(run_dir / "checkpoints", "stage2")
        if stage2.exists():
            state = stage2.load_newest(vdsm.device)
            vdsm.model2.load_state_dict(state["model"])
            vdsm.guide2.load_state_dict(state["guide"])
            load_param_store_state(state.get("param_store", {}))
            vdsm.has_stage2 = True
        for latent in FITTED_PRIORS:
            path = prior_path(run_dir, latent)
            if path.is_file():
                vdsm.set_fitted_prior(latent, DiagonalMixture.from_state_dict(load_checkpoint(path, "cpu")["mixture"]))
        return vdsm.eval()

    dynamics_mixture = None   # a DiagonalMixture over [d, z_1] fitted after training, or None

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

    @staticmethod
    def save_prior(run_dir, latent, mixture, summary):
        save_checkpoint(prior_path(run_dir, latent), {"mixture": mixture.state_dict(), "summary": json.dumps(summary)})

    def use_guide2(self, spec, batch_size=None, seq_len=None):
        """Replace the stage-2 guide by ``guide_factory(spec)(self)``; with a batch shape, run it once
        so that lazily created parameters (Pyro autoguides) exist before a state dict is loaded."""
        self.guide2 = guide_factory(spec)(self).to(self.device)
        if batch_size:
            x = torch.zeros(batch_size, seq_len, self.config.nc, 64, 64, device=self.device)
            with torch.no_grad(), poutine.block():
                self.guide2(x, factors=self.factors())
        return self

    def eval(self):
        for m in (self.model1, self.guide1, self.model2, self.guide2):
            m.eval()
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

    def _pair(self):
        return (self.model2, self.guide2) if self.has_stage2 else (self.model1, self.guide1)

    def factors(self):
        return self.schedule2.factors(1.0)

    @torch.no_grad()
    def transfer_action(self, action_x, identity_x):
        """Dynamics and first pose of ``action_x``, identity of ``identity_x``; later poses follow the
        learned transition (stage 2). With stage 1 only this equals ``swap_identity``."""
        if not self.has_stage2:
            return self.swap_identity(action_x, identity_x)
        latents = self._latents(self.posterior(action_x), lambda n: n in ("dynamics", "z_1"))
        latents.update(self._latents(self.posterior(identity_x), lambda n: n == "identity"))
        return self._decode(latents, action_x.shape[0], action_x.shape[1])

    @torch.no_grad()
    def predict(self, x_past, n_future, n_samples=None):
        """Frames [B, n_past + n_future, C, H, W]: ``x_past``, then futures. The identity, the
        dynamics and the poses z_1..z_{n_past} are the posterior means given ``x_past``; the later
        poses are drawn from the learned transition, frames at their mean. With ``n_samples``,
        that many draws stacked first (as ``PredictionModelAPI.predict``). Needs stage 2."""
        if not self.has_stage2:
            raise ValueError("prediction needs the stage-2 dynamics model: train stage 2 (--stage both)")
        if n_samples is not None:
            return torch.stack([self.predict(x_past, n_future) for _ in range(n_samples)])
        x_past = x_past.to(self.device)
        b, n_past = x_past.shape[:2]
        latents = self._latents(self.posterior(x_past))
        future = {f"z_{t}" for t in range(n_past + 1, n_past + n_future + 1)}
        frames = self._decode(latents, b, n_past + n_future, sampled=future)
        return torch.cat([x_past, frames[:, n_past:]], 1)

    @torch.no_grad()
    def fix_dynamics(self, x):
        """Keep the dynamics of ``x`` (posterior means: "dynamics" and "z_1" in stage 2, every
        pose with stage 1 only), draw a new identity from the prior."""
        keep = (lambda n: n in ("dynamics", "z_1")) if self.has_stage2 else (lambda n: n != "identity")
        latents = self._latents(self.posterior(x), keep)
        return self._decode(latents, x.shape[0], x.shape[1], sampled={"identity"})

    @torch.no_grad()
    def fix_identity(self, x):
        """Keep the identity of ``x`` (posterior mean), draw new dynamics (and first pose) from the prior
        (with a fitted dynamics prior: d and z_1 jointly from it)."""
        latents = self._latents(self.posterior(x), lambda n: n == "identity")
        fresh = {"dynamics", "z_1"} if self.has_stage2 else {"z"}
        drawn = self._fitted_draws(x.shape[0])
        latents.update(drawn)
        return self._decode(latents, x.shape[0], x.shape[1], sampled=fresh - set(drawn))

    def _fitted_draws(self, batch_size):
        """{"dynamics": d, "z_1": z_1} drawn jointly from the fitted dynamics prior (stage 2), else {}."""
        if self.dynamics_mixture is None or not self.has_stage2:
            return {}
        points = self.dynamics_mixture.sample(batch_size)
        n = self.config.dynamics_dim
        return {"dynamics": points[:, :n], "z_1": points[:, n:]}
