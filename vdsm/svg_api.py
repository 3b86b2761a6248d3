"""Library API for a trained SVG run: load it and sample conditioned futures."""
import json
from pathlib import Path

import torch

from guides.svg import SVGGuide
from models.svg import SVGConfig, SVGModel, SVGNets

from .checkpoint import CheckpointError, CheckpointManager

__all__ = ["SVG", "ConstantFactors"]


class ConstantFactors:
    """SVG and SRVP train without annealing: the KL factor is always 1 (beta is in the model). The
    learning rate is constant, then (SRVP) decays linearly to 0 over the last ``lr_decay_frac`` of
    training."""

    def __init__(self, lr_decay_frac=0.0):
        self.lr_decay_frac = lr_decay_frac

    def factors(self, progress):
        return {"z": 1.0}

    def lr_factor(self, progress):
        if self.lr_decay_frac <= 0:
            return 1.0
        return min(1.0, max(0.0, (1.0 - progress) / self.lr_decay_frac))


class SVG:
    """SVG-LP/FP model and guide on one device. ``predict(x_past, n_future)`` samples futures.

    Example::

        svg = SVG.load("runs/smmnist-svg")
        futures = svg.predict(x[:, :5], n_future=20)    # [B, 25, 1, 64, 64]
    """

    def __init__(self, config: SVGConfig, device="cpu"):
        self.config, self.device = config, torch.device(device)
        self.nets = SVGNets(config).to(self.device)
        self.model, self.guide = SVGModel(self.nets), SVGGuide(self.nets)

    @classmethod
    def load(cls, run_dir, device="cpu"):
        run_dir = Path(run_dir)
        if not (run_dir / "config.json").is_file():
            raise CheckpointError(f"{run_dir} has no config.json: pass a run folder written by experiments.run")
        config = json.loads((run_dir / "config.json").read_text())
        svg = cls(SVGConfig.from_dict(config["model"]), device)
        state = CheckpointManager(run_dir / "checkpoints", "svg").load_newest(svg.device)
        svg.model.load_state_dict(state["model"])
        return svg.eval()

    def eval(self):
        """Evaluation mode (BatchNorm's running statistics); ``load`` returns the model in it."""
        self.nets.eval()
        return self

    @torch.no_grad()
    def predict(self, x_past, n_future):
        """Frames [B, n_past + n_future, C, H, W]: ``x_past`` then sampled futures (the current mode:
        ``load`` gives eval mode)."""
        return self.model.predict(x_past.to(self.device), n_future)
