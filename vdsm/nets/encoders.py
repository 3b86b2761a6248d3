"""VDSM's frame encoder: a conv stack with anti-aliased (BlurPool) downsampling."""
import torch.nn as nn
import torch.nn.functional as F
from antialiased_cnns import BlurPool

from .bn_act import BatchNormLeakyReLU
from .layout import conv_layout

__all__ = ["BlurPoolEncoder"]


class BlurPoolEncoder(nn.Module):
    """64x64 frames -> per-frame pose ``z`` and identity parameters.

    conv(k4,s1,p1) + LeakyReLU + BlurPool(stride 2) four times (64 -> 4), then conv(k4)
    to a ``feature_dim`` vector. Heads: pose loc/scale (``z_dim``); identity via
    linear -> 128 -> LeakyReLU -> linear to loc/scale (``n_experts``), then the two "ID
    layers" (LeakyReLU on loc, softplus on scale) as in the reference.

    :param nc: image channels.
    :param widths: the four conv widths (reference 32, 32, 64, 64).
    :param feature_dim: final conv width (reference 256).
    :param identity_scale_max: if > 0, the identity scale is squashed smoothly below it
        (``s * m / (s + m)``); 0 keeps the reference's unbounded softplus.

    Example::

        enc = BlurPoolEncoder(3, z_dim=30, n_experts=40)
        z_loc, z_scale, id_loc, id_scale = enc(torch.rand(10, 3, 64, 64))
    """

    def __init__(self, nc, z_dim, n_experts, widths=(32, 32, 64, 64), feature_dim=256, identity_scale_max=0.0):
        super().__init__()
        self.identity_scale_max = identity_scale_max
        layers, c_in = [], nc
        for w in widths:
            layers += [nn.Conv2d(c_in, w, 4, 1, 1), nn.LeakyReLU(0.2, inplace=True), BlurPool(w, stride=2)]
            c_in = w
        layers += [nn.Conv2d(c_in, feature_dim, 4), nn.LeakyReLU(0.2, inplace=True)]
        self.features = nn.Sequential(*layers)
        self.z_loc = nn.Linear(feature_dim, z_dim)
        self.z_scale = nn.Linear(feature_dim, z_dim)
        self.id_hidden = nn.Sequential(nn.Linear(feature_dim, 128), nn.LeakyReLU(0.2))
        self.id_loc = nn.Linear(128, n_experts)
        self.id_scale = nn.Linear(128, n_experts)
        self.id_loc_layer = nn.Linear(n_experts, n_experts)      # the reference's "ID layers"
        self.id_scale_layer = nn.Linear(n_experts, n_experts)

    def forward(self, frames):
        """frames [N, C, 64, 64] -> z_loc, z_scale [N, z_dim], id_loc, id_scale [N, n_experts]."""
        h = self.features(conv_layout(frames)).flatten(1)
        z_loc, z_scale = self.z_loc(h), F.softplus(self.z_scale(h)) + 1e-4
        g = self.id_hidden(h)
        id_loc = F.leaky_relu(self.id_loc_layer(self.id_loc(g)), 0.2)
        id_scale = F.softplus(self.id_scale_layer(self.id_scale(g))) + 1e-4
        if self.identity_scale_max > 0:
            # a noisy identity makes the decoder average neighbouring identities' colours
            id_scale = id_scale * self.identity_scale_max / (id_scale + self.identity_scale_max)
        return z_loc, z_scale, id_loc, id_scale

    def encode_sequences(self, x):
        """x [B, T, C, H, W] -> z_loc, z_scale [B, T, z_dim] and the sequence identity
        loc, scale [B, n_experts] (mean of the per-frame identity parameters)."""
        b, t = x.shape[:2]
        z_loc, z_scale, id_loc, id_scale = self(x.reshape(b * t, *x.shape[2:]))
        return (z_loc.reshape(b, t, -1), z_scale.reshape(b, t, -1),
                id_loc.reshape(b, t, -1).mean(1), id_scale.reshape(b, t, -1).mean(1))


def _conv_bn(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 4, 2, 1), BatchNormLeakyReLU(c_out))


class DCGANEncoder(nn.Module):
    """SVG's DCGAN-64 frame encoder: four conv(k4, s2)+BN+LeakyReLU blocks, then conv(k4)+BN+tanh.

    With ``first_batchnorm=False`` the first block is conv+LeakyReLU, as SRVP's release (its
    ``DCGAN64Encoder``; SVG's has the BatchNorm). Returns the ``dim``-vector and the four block
    outputs (skips for the decoder, 32 to 4 px).
    """

    def __init__(self, nc, dim=128, nf=64, first_batchnorm=True):
        super().__init__()
        first = _conv_bn(nc, nf) if first_batchnorm else nn.Sequential(nn.Conv2d(nc, nf, 4, 2, 1),
                                                                        nn.LeakyReLU(0.2, inplace=True))
        self.blocks = nn.ModuleList([first, _conv_bn(nf, 2 * nf), _conv_bn(2 * nf, 4 * nf), _conv_bn(4 * nf, 8 * nf)])
        self.out = nn.Sequential(nn.Conv2d(8 * nf, dim, 4, 1, 0), nn.BatchNorm2d(dim), nn.Tanh())

    def forward(self, frames):
        skips, h = [], conv_layout(frames)
        for block in self.blocks:
            h = block(h)
            skips.append(h)
        return self.out(h).flatten(1), skips


def _vgg_layer(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1), BatchNormLeakyReLU(c_out))


class VGGEncoder(nn.Module):
    """SVG's VGG-64 frame encoder: blocks of 3x3 conv+BN+LeakyReLU with max-pooling, skips as in DCGAN-64.

    Widths ``nf``, 2 ``nf``, 4 ``nf``, 8 ``nf`` per block (the reference: ``nf`` = 64).
    """

    def __init__(self, nc, dim=128, nf=64):
        super().__init__()
        w1, w2, w3, w4 = nf, 2 * nf, 4 * nf, 8 * nf
        self.blocks = nn.ModuleList([
            nn.Sequential(_vgg_layer(nc, w1), _vgg_layer(w1, w1)),                        # 64
            nn.Sequential(_vgg_layer(w1, w2), _vgg_layer(w2, w2)),                        # 32
            nn.Sequential(_vgg_layer(w2, w3), _vgg_layer(w3, w3), _vgg_layer(w3, w3)),    # 16
            nn.Sequential(_vgg_layer(w3, w4), _vgg_layer(w4, w4), _vgg_layer(w4, w4)),    # 8
        ])
        self.out = nn.Sequential(nn.Conv2d(w4, dim, 4, 1, 0), nn.BatchNorm2d(dim), nn.Tanh())
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, frames):
        skips, h = [], conv_layout(frames)
        for k, block in enumerate(self.blocks):
            h = block(h if k == 0 else self.pool(h))
            skips.append(h)
        return self.out(self.pool(h)).flatten(1), skips
