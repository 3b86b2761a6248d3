"""The library API every prediction model shares (SVG, SRVP): build, ``load(run_dir)`` in eval
mode, ``predict(x_past, n_future, n_samples)``, ``reconstruct(x)``. A model's class names its config, networks, model, guide and
checkpoint; ``experiments.registry`` lists the classes."""
import json
from pathlib import Path

import torch
from pyro import poutine

from .api import use_means
from .checkpoint import CheckpointError, CheckpointManager

__all__ = ["OneStageModelAPI", "PredictionModelAPI"]


class OneStageModelAPI:
    """Model and guide of a one-stage model on one device, sharing one ``nets`` module (SVG, SRVP,
    DSA; subclasses set the class attributes): build, ``load(run_dir)`` in eval mode, ``eval``."""

    config_cls = nets_cls = model_cls = guide_cls = None
    checkpoint_name = None

    def __init__(self, config, device="cpu"):
        self.config, self.device = config, torch.device(device)
        self.nets = self.nets_cls(config).to(self.device)
        self.model, self.guide = self.model_cls(self.nets), self.guide_cls(self.nets)

    @classmethod
    def load(cls, run_dir, device="cpu"):
        """The run's newest loadable checkpoint, in evaluation mode."""
        run_dir = Path(run_dir)
        if not (run_dir / "config.json").is_file():
            raise CheckpointError(f"{run_dir} has no config.json: pass a run folder written by experiments.run")
        config = json.loads((run_dir / "config.json").read_text())
        api = cls(cls.config_cls.from_dict(config["model"]), device)
        state = CheckpointManager(run_dir / "checkpoints", cls.checkpoint_name).load_newest(api.device)
        api.model.load_state_dict(state["model"])
        return api.eval()

    def eval(self):
        """Evaluation mode (BatchNorm's running statistics); ``load`` returns the model in it."""
        self.nets.eval()
        return self



class PredictionModelAPI(OneStageModelAPI):
    """A prediction model (SVG, SRVP): futures from past frames, and reconstructions."""

    @torch.no_grad()
    def predict(self, x_past, n_future, n_samples=None):
        """Frames [B, n_past + n_future, C, H, W]: ``x_past`` then sampled futures (the current mode:
        ``load`` gives eval mode); with ``n_samples``, that many independent draws stacked first:
        [n_samples, B, n_past + n_future, C, H, W]."""
        x_past = x_past.to(self.device)
        if n_samples is None:
            return self.model.predict(x_past, n_future)
        return torch.stack([self.model.predict(x_past, n_future) for _ in range(n_samples)])

    @torch.no_grad()
    def reconstruct(self, x):
        """Frames [B, T, C, H, W]: every latent at its posterior mean given all of ``x``, frames at the
        likelihood's mean. Frames the model conditions on rather than reconstructs (SVG: the first)
        are those of ``x``."""
        x, factors = x.to(self.device), {"z": 1.0}
        guide_trace = poutine.trace(use_means()(self.guide)).get_trace(x, factors=factors)
        trace = poutine.trace(poutine.replay(self.model, guide_trace)).get_trace(x, factors=factors)
        mean = trace.nodes["obs"]["fn"].mean
        return torch.cat([x[:, :x.shape[1] - mean.shape[1]], mean], 1)
