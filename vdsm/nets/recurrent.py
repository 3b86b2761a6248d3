"""Pyro DMM's GatedTransition and Combiner, each with a per-sequence dynamics vector as extra input."""
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["GatedTransition", "Combiner"]


class GatedTransition(nn.Module):
    """p(z_t | z_{t-1}, d): a gated mix of an identity-initialised linear map and a proposal.

    Works on any leading shape, so transitions of a whole sequence are scored in one call.
    """

    def __init__(self, z_dim, d_dim, hidden_dim):
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(z_dim + d_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, z_dim))
        self.proposal = nn.Sequential(nn.Linear(z_dim + d_dim, hidden_dim), nn.ReLU(),
                                      nn.Linear(hidden_dim, z_dim))
        self.z_to_loc = nn.Linear(z_dim, z_dim)
        self.to_scale = nn.Linear(z_dim, z_dim)
        with torch.no_grad():  # start close to z_t = z_{t-1}
            self.z_to_loc.weight.copy_(torch.eye(z_dim))
            self.z_to_loc.bias.zero_()

    def forward(self, z_prev, d):
        u = torch.cat([z_prev, d], -1)
        gate = torch.sigmoid(self.gate(u))
        proposed = self.proposal(u)
        loc = (1 - gate) * self.z_to_loc(z_prev) + gate * proposed
        scale = F.softplus(self.to_scale(F.relu(proposed))) + 1e-4
        return loc, scale


class Combiner(nn.Module):
    """q(z_t | z_{t-1}, h_t, d): DMM's combiner with the dynamics vector concatenated to z_{t-1}."""

    def __init__(self, z_dim, rnn_dim, d_dim):
        super().__init__()
        self.z_to_hidden = nn.Linear(z_dim + d_dim, rnn_dim)
        self.to_loc = nn.Linear(rnn_dim, z_dim)
        self.to_scale = nn.Linear(rnn_dim, z_dim)

    def forward(self, z_prev, h_rnn, d):
        h = 0.5 * (torch.tanh(self.z_to_hidden(torch.cat([z_prev, d], -1))) + h_rnn)
        return self.to_loc(h), F.softplus(self.to_scale(h)) + 1e-4


class SequenceLSTM(nn.Module):
    """SVG's LSTM: linear embedding -> stacked LSTM -> output head, run over a whole sequence at once.

    ``kind="deterministic"``: head linear -> BatchNorm -> tanh (the frame predictor).
    ``kind="gaussian"``: heads for loc and scale (the posterior and learned prior).
    ``forward(inputs [B, T, in], state=None)`` returns (output(s), state); stepping frame by
    frame with the returned state gives the same result as one call over the sequence.
    """

    def __init__(self, input_dim, output_dim, hidden_dim, num_layers, kind):
        super().__init__()
        self.kind = kind
        self.embed = nn.Linear(input_dim, hidden_dim)
        self.lstm = nn.LSTM(hidden_dim, hidden_dim, num_layers, batch_first=True)
        if kind == "gaussian":
            self.loc = nn.Linear(hidden_dim, output_dim)
            self.log_var = nn.Linear(hidden_dim, output_dim)
        else:
            self.out = nn.Linear(hidden_dim, output_dim)
            self.norm = nn.BatchNorm1d(output_dim)

    def forward(self, inputs, state=None):
        h, state = self.lstm(self.embed(inputs), state)
        if self.kind == "gaussian":
            return (self.loc(h), torch.exp(0.5 * self.log_var(h)) + 1e-5), state
        b, t = h.shape[:2]
        return torch.tanh(self.norm(self.out(h).reshape(b * t, -1)).reshape(b, t, -1)), state
