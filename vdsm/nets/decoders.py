"""Frame decoders: VDSM's mixture of experts (one grouped transposed convolution per layer for the
whole batch) and SVG's DCGAN-64 / VGG-64 U-Net decoders (skip halves computed once per skip frame)."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .bn_act import BatchNormLeakyReLU
from .layout import conv_layout

__all__ = ["MixtureOfExpertsDecoder", "DCGANDecoder", "VGGDecoder"]


class MixtureOfExpertsDecoder(nn.Module):
    """Pose ``z_t`` and identity mixture weights -> Bernoulli logits of a 64x64 frame.

    Five transposed convs (k4; strides 1, 2, 2, 2, 2; 1x1 -> 64x64) with LeakyReLU
    between. Every layer has ``n_experts`` weight and bias tensors; sequence b uses the
    weighted sum ``sum_e mix[b, e] * W_e``. The per-sequence weights are stacked along the
    channel axis and all sequences run as one grouped convolution (groups = batch), frames
    of a sequence along the convolution's batch axis; the first layer (1x1 input) is one
    batched matrix product instead. The mixture weights are also
    concatenated to ``z_t`` as input, as in the reference.

    :param widths: hidden widths (reference 512, 256, 128, 64).
    :param identity_film: if True (not in the reference), every hidden layer's channels are also
        scaled and shifted per sequence by linear maps of the centred log mixture weights
        (zero-initialised, so training starts from the reference decoder). Mixtures stay close
        to uniform, so through the experts alone an identity only nudges the weights, and the
        decoder learns identity-specific colours slowly; the affine maps give it a direct path.

    Example::

        dec = MixtureOfExpertsDecoder(z_dim=30, n_experts=40, nc=3)
        mix = torch.softmax(torch.randn(4, 40), -1)
        logits = dec(torch.randn(4, 8, 30), mix)   # [4, 8, 3, 64, 64]
    """

    def __init__(self, z_dim, n_experts, nc, widths=(512, 256, 128, 64), identity_film=False):
        super().__init__()
        self.film = nn.ModuleList([nn.Linear(n_experts, 2 * w) for w in widths]) if identity_film else None
        for layer in self.film or ():
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        chans = [z_dim + n_experts, *widths, nc]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            w = torch.empty(n_experts, c_in, c_out, 4, 4)
            bound = 1 / math.sqrt(c_out * 16)  # PyTorch's ConvTranspose2d default init, per expert
            nn.init.uniform_(w, -bound, bound)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.empty(n_experts, c_out).uniform_(-bound, bound)))

    def forward(self, z, mix):
        """z [B, T, z_dim], mix [B, n_experts] (rows sum to 1) -> logits [B, T, nc, 64, 64]."""
        b, t = z.shape[:2]
        h = torch.cat([z, mix.unsqueeze(1).expand(b, t, mix.shape[-1])], -1)   # [B, T, C]
        if self.film is not None:
            log_mix = mix.clamp_min(1e-12).log()
            code = log_mix - log_mix.mean(-1, keepdim=True)  # = temperature * centred identity
        for k, (w, bias) in enumerate(zip(self.weights, self.biases)):
            c_in, c_out = w.shape[1], w.shape[2]
            w_mixed = mix @ w.flatten(1)                     # [B, c_in * c_out * 16]: one matmul for the batch
            bias_mixed = mix @ bias                          # [B, c_out]
            if k == 0:
                # on a 1x1 input the first transposed conv is a matrix product per sequence; one bmm
                # runs 4-5x faster than the grouped convolution on CPU
                h = torch.baddbmm(bias_mixed.repeat_interleave(16, -1).unsqueeze(1), h,
                                  w_mixed.reshape(b, c_in, c_out * 16))
                h = h.transpose(0, 1).reshape(t, b * c_out, 4, 4)            # [T, B * c_out, 4, 4]
            else:
                h = F.conv_transpose2d(conv_layout(h), w_mixed.reshape(b * c_in, c_out, 4, 4),
                                       bias_mixed.reshape(b * c_out), stride=2, padding=1, groups=b)
            if k < len(self.weights) - 1:
                h = F.leaky_relu(h, 0.2)
                if self.film is not None:
                    gain, shift = self.film[k](code).reshape(b, 2, c_out).unbind(1)
                    h = h * (1 + gain).reshape(1, b * c_out, 1, 1) + shift.reshape(1, b * c_out, 1, 1)
        return h.reshape(t, b, -1, *h.shape[-2:]).transpose(0, 1)


def _upconv_bn(c_in, c_out):
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), BatchNormLeakyReLU(c_out))


def _partial_conv(layer, x, channels, bias):
    """``layer`` (Conv2d or ConvTranspose2d) applied to the input channels ``channels`` only.

    A convolution is linear in its input, so ``layer(cat([h, skip]))`` equals the h part plus the
    skip part; the skip part is computed once per skip frame and reused by every frame decoded
    from it (SVG reuses one frame's skips for all future frames)."""
    if isinstance(layer, nn.ConvTranspose2d):  # weight [in, out, k, k]
        return F.conv_transpose2d(x, layer.weight[channels], bias, layer.stride, layer.padding)
    return F.conv2d(x, layer.weight[:, channels], bias, layer.stride, layer.padding)  # weight [out, in, k, k]


class _SkipDecoder(nn.Module):
    """Shared logic of SVG's decoders: every ``stage`` (a Sequential whose first layer sees
    ``cat([h, skip])``) is run with its weight split in two (see ``_partial_conv``).

    ``skip_terms(skips)`` computes the skip halves for some encoder frames; ``forward(g, skips)``
    or ``forward(g, terms=...)`` decodes. Parameters are those of the plain U-Net decoder, so
    checkpoints are unchanged.
    """

    def stages(self):
        raise NotImplementedError

    def skip_terms(self, skips):
        """Encoder skips (list per level, 64 px first) -> skip halves per decoder stage."""
        return [_partial_conv(stage[0], skip, slice(-skip.shape[1], None), None)
                for stage, skip in zip(self.stages(), reversed(skips))]

    def start(self, g):
        raise NotImplementedError

    def between(self, h, k):
        return h

    skip = True

    def forward(self, g, skips=None, terms=None, logits=False):
        """g [N, dim] and either skips (encoder outputs of the N frames) or their ``skip_terms``
        (neither for a decoder built with ``skip=False``). Frames in [0, 1], or with ``logits``
        the values before the sigmoid (for a Bernoulli likelihood)."""
        if not self.skip:
            terms = [None] * len(self.stages())
        elif terms is None:
            terms = self.skip_terms(skips)
        h = conv_layout(self.start(g))
        for k, (stage, term) in enumerate(zip(self.stages(), terms)):
            h = _partial_conv(stage[0], h, slice(0, h.shape[1]), stage[0].bias)
            if term is not None:
                h = h.add_(term)  # in place: a convolution's backward does not need its output
            for layer in stage[1:]:
                h = layer(h)
            h = self.between(h, k)
        return h if logits else torch.sigmoid(h)


class DCGANDecoder(_SkipDecoder):
    """SVG's DCGAN-64 decoder with U-Net skips: each block sees its input concatenated with the
    encoder skip of the same size; sigmoid output in [0, 1]."""

    def __init__(self, nc, dim=128, nf=64, skip=True):
        super().__init__()
        self.skip, m = skip, 2 if skip else 1  # without skips each block sees its input only
        self.inp = nn.Sequential(nn.ConvTranspose2d(dim, 8 * nf, 4, 1, 0), BatchNormLeakyReLU(8 * nf))
        self.blocks = nn.ModuleList([_upconv_bn(8 * m * nf, 4 * nf), _upconv_bn(4 * m * nf, 2 * nf),
                                     _upconv_bn(2 * m * nf, nf)])
        self.out = nn.ConvTranspose2d(m * nf, nc, 4, 2, 1)

    def stages(self):
        return [*self.blocks, [self.out]]

    def start(self, g):
        return self.inp(g[:, :, None, None])


def _vgg_up(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1), BatchNormLeakyReLU(c_out))


class VGGDecoder(_SkipDecoder):
    """SVG's VGG-64 decoder: upsampling plus 3x3 conv blocks, with the VGG encoder's skips (widths
    from ``nf`` as in :class:`vdsm.nets.VGGEncoder`; the reference: ``nf`` = 64)."""

    def __init__(self, nc, dim=128, nf=64, skip=True):
        super().__init__()
        self.skip, m = skip, 2 if skip else 1  # without skips each block sees its input only
        w1, w2, w3, w4 = nf, 2 * nf, 4 * nf, 8 * nf
        self.inp = nn.Sequential(nn.ConvTranspose2d(dim, w4, 4, 1, 0), BatchNormLeakyReLU(w4))
        self.blocks = nn.ModuleList([
            nn.Sequential(_vgg_up(m * w4, w4), _vgg_up(w4, w4), _vgg_up(w4, w3)),   # 8
            nn.Sequential(_vgg_up(m * w3, w3), _vgg_up(w3, w3), _vgg_up(w3, w2)),   # 16
            nn.Sequential(_vgg_up(m * w2, w2), _vgg_up(w2, w1)),                    # 32
        ])
        self.last = nn.Sequential(_vgg_up(m * w1, w1), nn.ConvTranspose2d(w1, nc, 3, 1, 1))  # 64
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def stages(self):
        # each stage's first layer is the one that sees the skip: a Conv2d inside the first _vgg_up
        return [[b[0][0], *b[0][1:], *b[1:]] for b in self.blocks] + [[self.last[0][0], *self.last[0][1:],
                                                                        self.last[1]]]

    def start(self, g):
        return self.up(self.inp(g[:, :, None, None]))                    # 8

    def between(self, h, k):
        return self.up(h) if k < len(self.blocks) else h
