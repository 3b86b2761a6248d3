"""Library API for a trained DSA run (``python -m experiments.run --model dsa``): load it, then swap,
transfer and generate as with VDSM, and run the same judge protocols."""
import torch

from guides.dsa import DSAGuide
from models.dsa import DSAConfig, DSAModel, DSANets

from .api import LatentVideoAPI
from .prediction_api import OneStageModelAPI

__all__ = ["DSA"]


class DSA(OneStageModelAPI, LatentVideoAPI):
    """DSA's model and guide on one device. The static latent f is the "identity"; the dynamics are
    the per-frame latents z_1..z_T (DSA has no sequence-level dynamics latent), so keeping the
    dynamics of a sequence keeps its z_1..z_T.

    Example::

        dsa = DSA.load("runs/sprites-dsa-...")
        moved = dsa.transfer_action(action_x, identity_x)
    """

    config_cls, nets_cls, model_cls, guide_cls = DSAConfig, DSANets, DSAModel, DSAGuide
    checkpoint_name = "dsa"

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
