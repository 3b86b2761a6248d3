"""A model defined outside the library: DSA with a Markov per-frame prior (docs/own_model.md).

DSA's static latent, guide and networks, but z_t ~ N(transition(z_{t-1})) from a small MLP instead
of DSA's LSTM over every earlier z. ``python -m experiments.run --model dsa_markov:SPEC`` trains,
resumes, evaluates and damages it like any library model.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.dsa import DSAConfig, DSAModel, DSANets, DSARun
from models.spec import JUDGE, ModelSpec, Stage, constant_schedule


class MarkovNets(DSANets):
    """DSA's networks plus the transition MLP z_{t-1} -> (loc, scale) of z_t."""

    def __init__(self, config):
        super().__init__(config)
        self.transition = nn.Sequential(nn.Linear(config.z_dim, config.rnn_dim), nn.Tanh(),
                                        nn.Linear(config.rnn_dim, 2 * config.z_dim))


class MarkovDSAModel(DSAModel):
    """p(f) p(z_1) prod_t p(z_t | z_{t-1}) p(x_t | z_t, f): DSA's sites, stepped by DSA's frame prior."""

    def transition(self, state, t):      # state: z_{t-1}; before frame 1, the family's initial state
        if t == 1:
            loc = state["ref"].new_zeros(state["batch"], self.z_dim)
            scale = torch.ones_like(loc)
        else:
            loc, raw = self.nets.transition(state).chunk(2, -1)
            scale = F.softplus(raw) + 1e-4
        z = self.frame_site(t, loc, scale)   # site "z_t"
        return z, z                          # (next state, what the decoder reads)


class MarkovDSARun(DSARun):
    nets_cls, model_cls = MarkovNets, MarkovDSAModel   # DSA's guide (guides.dsa:DSAGuide) as it is


SPEC = ModelSpec(
    names=("dsa-markov",), config_cls=DSAConfig, presets="dsa", run_cls=MarkovDSARun,
    stages=(Stage("dsa-markov", "train", pair=lambda run: (run.model, run.guide),
                  schedule=constant_schedule(("identity", "z")), frames=lambda config: config["train"]["seq_len"]),),
    evaluations=frozenset({JUDGE}), train_flags=("steps", "batch_size", "lr", "seq_len", "clip_norm"))
MarkovDSARun.spec = SPEC
