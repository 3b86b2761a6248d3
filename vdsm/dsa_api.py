"""Library API for a trained DSA run (``python -m experiments.run --model dsa``): load it, then swap,
transfer and generate as with VDSM, and run the same judge protocols."""
import json
from pathlib import Path

import torch

from guides.dsa import DSAGuide
from models.dsa import DSAConfig, DSAModel, DSANets

from .api import LatentVideoAPI
from .checkpoint import CheckpointError, CheckpointManager

__all__ = ["DSA"]


class DSA(LatentVideoAPI):
    """DSA's model and guide on one device. The static latent f is the "identity"; the dynamics are
    the per-frame latents z_1..z_T (DSA has no sequence-level dynamics latent), so keeping the
    dynamics of a sequence keeps its z_1..z_T.

    Example::

        dsa = DSA.load("runs/sprites-dsa-...")
        moved = dsa.transfer_action(action_x, identity_x)
    """

    checkpoint_name = "dsa"
    has_stage2 = True   # the judge protocols' "fixed dynamics" keeps a real dynamics latent (z_1..z_T)

    def __init__(self, config: DSAConfig, device="cpu"):
        self.config, self.device = config, torch.device(device)
        self.nets = DSANets(config).to(self.device)
        self.model, self.guide = DSAModel(self.nets), DSAGuide(self.nets)

    @classmethod
    def load(cls, run_dir, device="cpu"):
        """The run's newest loadable checkpoint, in evaluation mode."""
        run_dir = Path(run_dir)
        if not (run_dir / "config.json").is_file():
            raise CheckpointError(f"{run_dir} has no config.json: pass a run folder written by experiments.run")
        config = json.loads((run_dir / "config.json").read_text())
        api = cls(DSAConfig.from_dict(config["model"]), device)
        api.model.load_state_dict(CheckpointManager(run_dir / "checkpoints", cls.checkpoint_name)
                                  .load_newest(api.device)["model"])
        return api.eval()

    def eval(self):
        self.nets.eval()
        return self

    def _pair(self):
        return self.model, self.guide

    def factors(self):
        return {"identity": 1.0, "z": 1.0}

    @staticmethod
    def _frame_sites(t):
        return {f"z_{k}" for k in range(1, t + 1)}

    @torch.no_grad()
    def transfer_action(self, action_x, identity_x):
        """z_1..z_T of ``action_x`` with the static latent of ``identity_x`` (= ``swap_identity``)."""
        return self.swap_identity(action_x, identity_x)

    @torch.no_grad()
    def fix_dynamics(self, x):
        """Keep z_1..z_T of ``x`` (posterior means), draw f from the prior N(0, I)."""
        latents = self._latents(self.posterior(x), lambda n: n != "identity")
        return self._decode(latents, x.shape[0], x.shape[1], sampled={"identity"})

    @torch.no_grad()
    def fix_identity(self, x):
        """Keep f of ``x`` (posterior mean), draw z_1..z_T from the learned LSTM prior."""
        latents = self._latents(self.posterior(x), lambda n: n == "identity")
        return self._decode(latents, x.shape[0], x.shape[1], sampled=self._frame_sites(x.shape[1]))
