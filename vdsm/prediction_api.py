"""The library API every prediction model shares (SVG, SRVP): build, ``load(run_dir)`` in eval
mode, ``predict(x_past, n_future)``. A model's class names its config, networks, model, guide and
checkpoint; ``experiments.registry`` lists the classes."""
import json
from pathlib import Path

import torch

from .checkpoint import CheckpointError, CheckpointManager

__all__ = ["PredictionModelAPI"]


class PredictionModelAPI:
    """Model and guide of one prediction model on one device (subclasses set the class attributes)."""

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

    @torch.no_grad()
    def predict(self, x_past, n_future):
        """Frames [B, n_past + n_future, C, H, W]: ``x_past`` then sampled futures (the current mode:
        ``load`` gives eval mode)."""
        return self.model.predict(x_past.to(self.device), n_future)
