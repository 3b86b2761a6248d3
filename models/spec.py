"""The model contract: what a model module declares once (``ModelSpec`` with its ``Stage``s) and
the interface of a loaded run (``VideoRun``).

A model module (``models/vdsm.py``, ``svg.py``, ``srvp.py``, ``dsa.py``, or a user's own) holds its
config dataclass, its networks, its Pyro model(s), its run class and ``SPEC``; ``models.registry``
lists the specs. The runner (``experiments.run``), ``evaluate``, ``damage``, ``fit_prior``,
``bench`` and the Frechet distance read only the spec and the run class, never a model's name.

Guides are named by import path ("guides.dsa:DSAGuide") and imported when a run is built, so that
``models/`` never imports ``guides/``.
"""
import contextlib
import dataclasses
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from pyro import poutine

from vdsm.annealing import ConstantFactors
from vdsm.checkpoint import CheckpointError, CheckpointManager
from vdsm.handlers import use_means
from vdsm.runfolder import read_config_json
from vdsm.train_state import load_param_store_state

from .config import SequenceTrain, check_types, merged

__all__ = ["Stage", "ModelSpec", "VideoRun", "StaticLatentRun", "PredictionFlags", "import_object", "constant_schedule",
           "JUDGE", "PREDICTION"]

#: The evaluations a spec may name (``experiments.evaluate``).
JUDGE, PREDICTION = "judge", "prediction"


def import_object(path, what="object"):
    """``"package.module:name"`` -> that object; a ValueError naming the path when it cannot be imported."""
    module_name, _, name = str(path).partition(":")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"cannot import {what} {path!r} ({err}): give package.module:NAME") from None


def constant_schedule(groups):
    """A stage's schedule factory for models trained without annealing: every KL factor of ``groups``
    is 1 but the identity's, the section's ``identity_kl``; the learning rate decays linearly to 0 over
    the section's last ``lr_decay_frac``."""
    def schedule(section):
        weights = {"identity": section.get("identity_kl", 1.0)} if "identity" in groups else {}
        return ConstantFactors(section.get("lr_decay_frac", 0.0), groups=groups, weights=weights)
    return schedule


class PredictionFlags:
    """The ``cli`` of the prediction models: ``--eval-samples``, futures sampled per val sequence for
    metrics.json (the config's "eval" section)."""

    def add_flags(self, group):
        group.add_argument("--eval-samples", type=int, help="futures sampled per val sequence for metrics.json")
        return {"eval_samples"}

    def defaults(self, preset):
        return {"eval_samples": preset["eval"]["samples"] if preset is not None else "the preset's"}

    def resolve(self, args, config):
        if getattr(args, "eval_samples", None) is not None:
            config["eval"]["samples"] = args.eval_samples
        if config["eval"]["samples"] < 1:
            raise ValueError(f"--eval-samples={config['eval']['samples']} must be at least 1")
        return config

    def stages(self, args, spec):
        return [stage.tag for stage in spec.stages]


@dataclass(frozen=True)
class Stage:
    """One training stage.

    ``tag``: checkpoints/<tag>.pt (and the TensorBoard tag); ``section``: the config.json section
    with its steps, batch_size, lr, clip_norm (and schedule); ``pair(run) -> (model, guide)``;
    ``frozen(run)``: modules and parameters held fixed (no gradient, not in the optimiser);
    ``schedule(section)``: an object with ``factors(progress)`` and ``lr_factor(progress)``;
    ``frames(config)``: frames per training sequence; ``data_flags``: boolean keys of the section
    passed on to the dataset (VDSM stage 1: pair_actions, random_window); ``config_cls``: the
    section's typed defaults (a ``models.config.TrainConfig``), which a preset overrides.
    """

    tag: str
    section: str
    pair: Callable
    schedule: Callable
    frames: Callable
    frozen: Callable = lambda run: ()
    data_flags: tuple = ()
    label: str = None     # how messages name it ("stage 1"); default: the tag
    config_cls: type = SequenceTrain

    @property
    def title(self):
        return self.label or self.tag

    def data_options(self, config):
        section = config[self.section]
        return {"seq_len": self.frames(config), **{k: True for k in self.data_flags if section.get(k)}}


@dataclass(frozen=True)
class ModelSpec:
    """Everything the library's commands need to know about a model, declared in its module.

    ``names``: the ``--model`` values (config.json's ``model_name``), the first the model's own name;
    ``config_cls``: the model's sizes (a dataclass with ``from_dict``, ``check``); ``presets``: a folder
    under experiments/configs/, or the path of a model's own, of ``<dataset>.json`` files, each
    ``{"cpu": overrides, "paper": overrides}`` of the typed defaults (``defaults()``); ``run_cls``:
    the ``VideoRun`` subclass; ``stages``: trained in order; ``evaluations``: {JUDGE} (the judge
    protocols), {PREDICTION} (the prediction protocol) or both; ``fixed``: {name: config fields that name
    sets} (SVG-LP / SVG-FP); ``train_flags``: the training flags that set every stage section's key
    of the same name; ``cli``: optional object with ``add_flags(group)`` -> set of dests,
    ``resolve(args, config)`` -> config (raising ValueError), ``stages(args)`` -> tags to train;
    ``after_training(run, context)``: work after the stages (VDSM: its fitted priors), returning
    entries for metrics.json; ``more_sections``: config sections besides the stages', with their
    typed defaults (the prediction models' ``eval``).
    """

    names: tuple
    config_cls: type
    presets: str
    run_cls: type
    stages: tuple
    evaluations: frozenset
    fixed: dict = field(default_factory=dict)
    train_flags: tuple = ("steps", "batch_size", "lr", "clip_norm")
    cli: object = None
    after_training: Callable = None
    more_sections: dict = field(default_factory=dict)

    @property
    def name(self):
        return self.names[0]

    def stage(self, tag):
        return next(s for s in self.stages if s.tag == tag)

    def model_flags(self, name=None):
        """The config fields a command line may set for ``--model name`` (the name fixes the others)."""
        return {f.name for f in dataclasses.fields(self.config_cls)} - set(self.fixed.get(name or self.name, {}))

    def section_classes(self):
        """{config section: its typed defaults' class}: each stage's, then ``more_sections``."""
        return {**{stage.section: stage.config_cls for stage in self.stages}, **self.more_sections}

    def defaults(self):
        """The config a preset overrides: the model's sizes and every section, at their typed defaults."""
        sections = {name: dataclasses.asdict(cls()) for name, cls in self.section_classes().items()}
        return json.loads(json.dumps({"model": dataclasses.asdict(self.config_cls()), **sections}))

    def complete_model(self, model):
        """Every config field, as JSON data (a field the section leaves out: its default)."""
        return json.loads(json.dumps(dataclasses.asdict(self.config_cls.from_dict(model))))

    def complete(self, config, where="config.json"):
        """A saved config.json with every key the commands read (a hand-made one may leave out the
        defaults); CheckpointError naming ``where`` and the key when the file was damaged or edited by hand
        (a key missing, of the wrong type, or unknown)."""
        try:
            check_types(self.config_cls, config["model"], where="model")
            return self._complete(config)
        except KeyError as err:
            problem = f"key {err} is missing"
        except (TypeError, ValueError, AttributeError) as err:
            problem = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{where}: {problem}; it was edited or damaged: fix it, or restore it from a copy of "
                              f"the run") from None

    def _complete(self, config):
        config = json.loads(json.dumps(config))
        config.setdefault("model_name", self.name)
        config.setdefault("seed", 0)
        config.setdefault("train_split", "train")
        config.setdefault("safety", {"max_bad_steps": 5, "lr_drop": 0.5})
        config["model"] = self.complete_model(config["model"])
        for name, cls in self.section_classes().items():   # a hand-made config may hold some sections only
            if name in config:
                check_types(cls, config[name], where=name)
                config[name] = merged(dataclasses.asdict(cls()), config[name])
        if not all(isinstance(config.get(key, ""), str) for key in ("dataset", "data_root")) or \
                not isinstance(config["seed"], int):
            raise ValueError("dataset and data_root must be strings and seed an int")
        return config


class VideoRun:
    """A model's networks, model(s) and guide(s) on one device: build, ``load(run_dir)`` in eval
    mode, and what the library's tools ask of any run.

    A subclass sets ``spec`` and builds its networks in ``__init__(config, device)``; one-stage
    models with shared ``nets`` (``model_cls(nets)``, ``guide_cls(nets)``) need only the class
    attributes ``nets_cls``, ``model_cls`` and ``guide_path`` (an import path). All methods take frames
    [B, T, C, 64, 64] in [0, 1] and work on the whole batch under ``torch.no_grad()``.
    """

    spec = None
    nets_cls = model_cls = None
    guide_path = None     # "package.module:Guide", imported when the run is built
    stage_in_use = None   # the tag of the stage whose pair ``pair()`` returns
    sections = {}         # the run's config.json (its stage sections), when built from one

    def __init__(self, config, device="cpu"):
        self.config, self.device = config, torch.device(device)
        self.nets = self.nets_cls(config).to(self.device)
        self.model = self.model_cls(self.nets)
        self.guide = import_object(self.guide_path, "guide")(self.nets)
        self.stage_in_use = self.spec.stages[-1].tag

    # ------------------------------------------------------------ building and loading

    @classmethod
    def read_config(cls, run_dir):
        config = read_config_json(run_dir, "run folder")
        if config.get("model_name", cls.spec.name) not in cls.spec.names:
            raise CheckpointError(f"{run_dir} holds a {config['model_name']} run, not {cls.spec.name}: "
                                  f"load it with models.registry.load_run")
        return cls.spec.complete(config, where=f"{run_dir}/config.json")

    @classmethod
    def from_config(cls, config, device="cpu", loading=False):
        """A freshly built run for a complete config.json (``ModelSpec.complete``); ``loading``: its
        checkpoints are loaded next (``load``)."""
        run = cls(cls.spec.config_cls.from_dict(config["model"]), device)
        run.sections = config
        return run

    @classmethod
    def load(cls, run_dir, device="cpu"):
        """The trained run in ``run_dir``, in evaluation mode: each stage's newest loadable checkpoint
        (a stage never trained is left out); Pyro params of a custom guide go to the param store."""
        run_dir, config = Path(run_dir), cls.read_config(run_dir)
        run = cls.from_config(config, device, loading=True)
        loaded = [stage for stage in cls.spec.stages
                  if run.load_stage(stage, CheckpointManager(run_dir / "checkpoints", stage.tag))]
        if not loaded:
            raise CheckpointError(f"{run_dir} has no checkpoint of {cls.spec.stages[0].tag}: train it first")
        run.use_stage(loaded[-1].tag)
        run.loaded_stages = [stage.tag for stage in loaded]
        run.after_load(run_dir, config)
        return run.eval()

    def load_stage(self, stage, checkpoints):
        """Load ``stage``'s newest checkpoint; False when it has none."""
        if not checkpoints.exists():
            return False
        state = checkpoints.load_newest(self.device)
        model, guide = stage.pair(self)
        model.load_state_dict(state["model"])
        if "guide" in state:
            guide.load_state_dict(state["guide"])
        load_param_store_state(state.get("param_store", {}))
        return True

    def use_stage(self, tag):
        """Use the model/guide pair of stage ``tag`` from now on (VDSM: 'stage1' for a stage-1 run)."""
        self.stage_in_use = tag
        return self

    def after_load(self, run_dir, config):
        """What a loaded run reads besides its checkpoints (VDSM: fitted priors)."""

    def eval(self):
        """Evaluation mode (BatchNorm's running statistics, no dropout); ``load`` returns the run in it."""
        for module in self.modules():
            module.eval()
        return self

    def modules(self):
        """The model and guide modules of every stage (shared networks once)."""
        found = {}
        for stage in self.spec.stages:
            for module in stage.pair(self):
                found.setdefault(id(module), module)
        return list(found.values())

    def describe(self):
        """What this run is, in reports: "dsa model", "stage 2 model"."""
        return f"{self.spec.name} model"

    def networks(self):
        """One module whose named children are the groups the damage experiment hits."""
        return self.nets

    def trained_networks(self):
        """``networks()`` without the groups holding weights of a stage this run never trained (VDSM
        trained to stage 1 only: its stage-2 model and guide); all of them for a built, unloaded run."""
        groups = self.networks()
        loaded = getattr(self, "loaded_stages", None)
        untrained = [stage for stage in self.spec.stages if loaded is not None and stage.tag not in loaded]
        if not untrained:
            return groups
        trained = {id(p) for stage in self.spec.stages if stage.tag in loaded
                   for module in stage.pair(self) for p in module.parameters()}
        never = {id(p) for stage in untrained for module in stage.pair(self) for p in module.parameters()} - trained
        return nn.ModuleDict({name: group for name, group in groups.named_children()
                              if not any(id(p) in never for p in group.parameters())})

    # ------------------------------------------------------------ what the tools ask of a run

    def pair(self):
        return self.spec.stage(self.stage_in_use).pair(self)

    def factors(self):
        """The annealing factors of the stage in use at the end of training."""
        stage = self.spec.stage(self.stage_in_use)
        return stage.schedule(self.sections.get(stage.section, {})).factors(1.0)

    def posterior(self, x):
        """Guide trace with every latent at its posterior mean (autoregressive guides: in order)."""
        _, guide = self.pair()
        with use_means():
            return poutine.trace(guide).get_trace(x.to(self.device), factors=self.factors())

    @torch.no_grad()
    def reconstruct(self, x):
        """Frames [B, T, C, H, W]: every latent at its posterior mean given all of ``x``, frames at the
        likelihood's mean. Frames the model conditions on rather than reconstructs (SVG: the first)
        are those of ``x``."""
        model, _ = self.pair()
        x = x.to(self.device)
        guide_trace = self.posterior(x)
        trace = poutine.trace(poutine.replay(model, guide_trace)).get_trace(x, factors=self.factors())
        mean = trace.nodes["obs"]["fn"].mean
        return torch.cat([x[:, :x.shape[1] - mean.shape[1]], mean], 1)

    @torch.no_grad()
    def predict(self, x_past, n_future, n_samples=None):
        """Frames [B, n_past + n_future, C, H, W]: ``x_past`` then sampled futures; with ``n_samples``,
        that many independent draws stacked first: [n_samples, B, n_past + n_future, C, H, W]."""
        x_past = x_past.to(self.device)
        if n_samples is not None:
            return torch.stack([self.predict(x_past, n_future) for _ in range(n_samples)])
        return self.predict_once(x_past, n_future)

    def predict_once(self, x_past, n_future):
        """One draw of ``predict``: the model's ``predict(x_past, n_future, guide)`` (the family's runs the
        model under Pyro handlers, ``StateSpaceVideoModel.predict``)."""
        model, guide = self.pair()
        if PREDICTION not in self.spec.evaluations:
            raise ValueError(f"{self.spec.name} does not predict frames: its evaluations are {sorted(self.spec.evaluations)}")
        return model.predict(x_past, n_future, guide)

    def frame_features(self, frames):
        """frames [N, C, 64, 64] -> [N, D]: the trained frame encoder's features (Frechet distance)."""
        return self.nets.encoder(frames)[0]


class StaticLatentRun(VideoRun):
    """A run whose model has a static latent (site ``static_site``, "identity") beside its dynamics:
    generation, identity swaps, action transfer and the judge protocols' two generations.

    Which sites carry a sequence's dynamics is the run's ``dynamics_sites(t)`` (VDSM: "dynamics" and
    "z_1" in stage 2; DSA: every z_t); the methods below keep or redraw those sites, so a new model
    gets them all from that one set. Random draws come from torch's global generator.
    """

    static_site = "identity"
    # what the judge protocols (vdsm.metrics.protocol) read of a run besides its generations
    has_dynamics_latent = True   # False: a run whose "fixed dynamics" keeps every pose (VDSM's stage 1 alone)
    shows_poses = False          # its guide sees frame poses in evaluation, unlike the reference's
    fitted_priors = ()           # latents drawn from priors fitted after training (a departure, labelled)

    def reference_guide_inputs(self):
        """A context in which the guide sees what the reference's sees (VDSM: no frame poses)."""
        return contextlib.nullcontext()

    def dynamics_sites(self, t):
        raise NotImplementedError

    def fitted_draws(self, batch_size):
        """Values of latents drawn from priors fitted after training (VDSM: d and z_1), else {}."""
        return {}

    def decode(self, condition, batch_size, seq_len, sampled=()):
        """Frame means of the model conditioned on ``condition``; sites named in ``sampled`` are drawn
        from the prior, every other free site takes its mean."""
        model, _ = self.pair()
        with use_means(skip=sampled):
            trace = poutine.trace(poutine.condition(model, data=condition)).get_trace(
                None, factors=self.factors(), batch_size=batch_size, seq_len=seq_len)
        return trace.nodes["obs"]["fn"].mean

    @staticmethod
    def latents(trace, keep=lambda name: True):
        return {n: site["value"] for n, site in trace.nodes.items()
                if site["type"] == "sample" and not site["is_observed"] and keep(n)}

    @torch.no_grad()
    def generate(self, batch_size, seq_len):
        """Sequences drawn from the prior (every latent sampled; frames at their mean)."""
        model, _ = self.pair()
        model = poutine.condition(model, data=self.fitted_draws(batch_size))
        trace = poutine.trace(model).get_trace(None, factors=self.factors(), batch_size=batch_size, seq_len=seq_len)
        return trace.nodes["obs"]["fn"].mean

    @torch.no_grad()
    def identities(self, x):
        """The posterior mean static latent of each sequence [B, size] (e.g. to interpolate between two)."""
        return self.posterior(x).nodes[self.static_site]["value"]

    @torch.no_grad()
    def with_identity(self, pose_x, identity):
        """Every pose (and the dynamics) of ``pose_x`` drawn with the given identities [B, size]."""
        latents = self.latents(self.posterior(pose_x), lambda n: n != self.static_site)
        latents[self.static_site] = identity.to(self.device)
        return self.decode(latents, pose_x.shape[0], pose_x.shape[1])

    @torch.no_grad()
    def swap_identity(self, pose_x, identity_x):
        """Poses (all per-frame latents, and dynamics) of ``pose_x`` drawn with the identity of ``identity_x``."""
        return self.with_identity(pose_x, self.identities(identity_x))

    @torch.no_grad()
    def transfer_action(self, action_x, identity_x):
        """The dynamics sites of ``action_x``, the identity of ``identity_x``; every other latent at its
        mean (VDSM stage 2: later poses follow the learned transition)."""
        keep = self.dynamics_sites(action_x.shape[1])
        latents = self.latents(self.posterior(action_x), lambda n: n in keep)
        latents.update(self.latents(self.posterior(identity_x), lambda n: n == self.static_site))
        return self.decode(latents, action_x.shape[0], action_x.shape[1])

    @torch.no_grad()
    def fix_dynamics(self, x):
        """Keep the dynamics sites of ``x`` (posterior means), draw a new identity from the prior."""
        keep = self.dynamics_sites(x.shape[1])
        latents = self.latents(self.posterior(x), lambda n: n in keep)
        return self.decode(latents, x.shape[0], x.shape[1], sampled={self.static_site})

    @torch.no_grad()
    def fix_identity(self, x):
        """Keep the identity of ``x`` (posterior mean), draw new dynamics sites from the prior (or from
        a fitted prior, ``fitted_draws``)."""
        latents = self.latents(self.posterior(x), lambda n: n == self.static_site)
        drawn = self.fitted_draws(x.shape[0])
        latents.update(drawn)
        return self.decode(latents, x.shape[0], x.shape[1], sampled=self.dynamics_sites(x.shape[1]) - set(drawn))


