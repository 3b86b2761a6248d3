"""Library API for a trained SRVP run: load it and sample conditioned futures (as ``vdsm.svg_api.SVG``)."""
import json
from pathlib import Path

import torch

from guides.srvp import SRVPGuide
from models.srvp import SRVPConfig, SRVPModel, SRVPNets

from .checkpoint import CheckpointError, CheckpointManager

__all__ = ["SRVP"]


class SRVP:
    """SRVP model and guide on one device. ``predict(x_past, n_future)`` samples futures.

    Example::

        srvp = SRVP.load("runs/smmnist-srvp")
        futures = srvp.predict(x[:, :5], n_future=20)    # [B, 25, 1, 64, 64]
    """

    checkpoint_name = "srvp"

    def __init__(self, config: SRVPConfig, device="cpu"):
        self.config, self.device = config, torch.device(device)
        self.nets = SRVPNets(config).to(self.device)
        self.model, self.guide = SRVPModel(self.nets), SRVPGuide(self.nets)

    @classmethod
    def load(cls, run_dir, device="cpu"):
        run_dir = Path(run_dir)
        if not (run_dir / "config.json").is_file():
            raise CheckpointError(f"{run_dir} has no config.json: pass a run folder written by experiments.run")
        config = json.loads((run_dir / "config.json").read_text())
        srvp = cls(SRVPConfig.from_dict(config["model"]), device)
        state = CheckpointManager(run_dir / "checkpoints", cls.checkpoint_name).load_newest(srvp.device)
        srvp.model.load_state_dict(state["model"])
        return srvp.eval()

    def eval(self):
        """Evaluation mode (BatchNorm's running statistics); ``load`` returns the model in it."""
        self.nets.eval()
        return self

    @torch.no_grad()
    def predict(self, x_past, n_future):
        """Frames [B, n_past + n_future, C, H, W]: ``x_past`` then sampled futures."""
        return self.model.predict(x_past.to(self.device), n_future)
