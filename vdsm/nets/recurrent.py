"""Pyro DMM's GatedTransition and Combiner, each with a per-sequence dynamics vector as extra input;
SVG's sequence LSTM; and the recurrent layers every model uses (``LSTM``, ``RNN``), which run in fp32
inside a mixed-precision autocast region wherever the machine has no low-precision kernel for them."""
import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["GatedTransition", "Combiner", "SequenceLSTM", "LSTM", "RNN", "low_precision_kernel_available"]


@functools.lru_cache(maxsize=None)
def low_precision_kernel_available(rnn_cls, device_type, dtype):
    """Whether ``rnn_cls`` (``nn.LSTM``, ``nn.RNN``, ...) runs forward and backward under
    ``torch.autocast(device_type, dtype)`` on this machine, by trying a tiny one (once per process).

    oneDNN, which runs CPU LSTMs under bf16 autocast, has no bf16 LSTM kernel on CPUs without
    AVX512-BF16 or AMX (an AVX2-only laptop): the call raises instead of falling back. A probe
    rather than a list of CPU models, so ``ONEDNN_MAX_CPU_ISA`` and new hardware are seen as they are.
    """
    with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.enable_grad():
        probe = rnn_cls(4, 4, batch_first=True).to(device_type)   # fork_rng: the probe draws no user numbers
        x = torch.ones(2, 3, 4, device=device_type, requires_grad=True)
        try:
            with torch.autocast(device_type, dtype=dtype):
                out, _ = probe(x)
            out.float().sum().backward()
        except (RuntimeError, NotImplementedError):
            return False
    return True


def _fp32(value):
    if value is None:
        return None
    if isinstance(value, tuple):
        return tuple(v.float() for v in value)
    return value.float()


class _Fp32WithoutLowPrecisionKernel:
    """Mixin for a ``torch.nn`` recurrent layer: under autocast, if the probe finds no kernel for the
    autocast dtype, the layer runs in fp32 (autocast off for this call) instead of raising. Outputs
    are then fp32; the next autocast layer casts them down as it would any input."""

    torch_cls = None   # the torch.nn layer it extends, whose kernel is probed

    def forward(self, input, hx=None):
        device = input.device.type
        if torch.is_autocast_enabled(device):
            if not low_precision_kernel_available(self.torch_cls, device, torch.get_autocast_dtype(device)):
                with torch.autocast(device, enabled=False):
                    return super().forward(_fp32(input), _fp32(hx))
        return super().forward(input, hx)


class LSTM(_Fp32WithoutLowPrecisionKernel, nn.LSTM):
    """``nn.LSTM`` (same arguments, same parameter names) that never fails under ``--amp``."""

    torch_cls = nn.LSTM


class RNN(_Fp32WithoutLowPrecisionKernel, nn.RNN):
    """``nn.RNN`` (same arguments, same parameter names) that never fails under ``--amp``."""

    torch_cls = nn.RNN


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

    ``kind="deterministic"``: head linear -> tanh (the frame predictor; the SVG release's, whose
    ``models/lstm.py`` has the BatchNorm between them commented out), or linear -> BatchNorm -> tanh
    with ``batchnorm`` (this library's SVG before 2026-12-03; run folders of then keep it).
    ``kind="gaussian"``: heads for loc and scale (the posterior and learned prior).
    ``forward(inputs [B, T, in], state=None)`` returns (output(s), state); stepping frame by
    frame with the returned state gives the same result as one call over the sequence.
    """

    def __init__(self, input_dim, output_dim, hidden_dim, num_layers, kind, batchnorm=False):
        super().__init__()
        self.kind = kind
        self.embed = nn.Linear(input_dim, hidden_dim)
        self.lstm = LSTM(hidden_dim, hidden_dim, num_layers, batch_first=True)
        if kind == "gaussian":
            self.loc = nn.Linear(hidden_dim, output_dim)
            self.log_var = nn.Linear(hidden_dim, output_dim)
        else:
            self.out = nn.Linear(hidden_dim, output_dim)
            self.norm = nn.BatchNorm1d(output_dim) if batchnorm else None

    def forward(self, inputs, state=None):
        h, state = self.lstm(self.embed(inputs), state)
        if self.kind == "gaussian":
            return (self.loc(h), torch.exp(0.5 * self.log_var(h)) + 1e-5), state
        if self.norm is None:
            return torch.tanh(self.out(h)), state
        b, t = h.shape[:2]
        return torch.tanh(self.norm(self.out(h).reshape(b * t, -1)).reshape(b, t, -1)), state
