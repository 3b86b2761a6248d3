"""Video-prediction metrics: PSNR and SSIM per frame (batched, torch) and the best-of-N protocol.

SSIM follows Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03,
'valid' borders and the mean over channels, the convention of SVG/SRVP's evaluation; a test
checks it against scikit-image's ``structural_similarity`` with the same settings.
"""
import math

import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim", "best_of_n", "mean_with_interval"]


def psnr(pred, target, data_range=1.0):
    """PSNR in dB per image over the last three dims [..., C, H, W]."""
    mse = ((pred - target) ** 2).flatten(-3).mean(-1)
    return 10 * torch.log10(data_range ** 2 / mse.clamp_min(1e-12))


def _gaussian_window(size=11, sigma=1.5, device=None, dtype=None):
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(pred, target, data_range=1.0, window=11, sigma=1.5):
    """SSIM per image [..., C, H, W] -> [...]; channels are averaged."""
    shape = pred.shape[:-3]
    c = pred.shape[-3]
    p = pred.reshape(-1, c, *pred.shape[-2:]).double()
    t = target.reshape(-1, c, *target.shape[-2:]).double()
    w = _gaussian_window(window, sigma, p.device, p.dtype).expand(c, 1, window, window)
    filt = lambda img: F.conv2d(img, w, groups=c)  # noqa: E731
    mu_p, mu_t = filt(p), filt(t)
    var_p = filt(p * p) - mu_p ** 2
    var_t = filt(t * t) - mu_t ** 2
    cov = filt(p * t) - mu_p * mu_t
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p ** 2 + mu_t ** 2 + c1) * (var_p + var_t + c2))
    return s.flatten(1).mean(-1).float().reshape(shape)


def best_of_n(samples, target):
    """samples [N, B, T, C, H, W] of predicted frames, target [B, T, C, H, W].

    For each sequence keep the sample with the best mean PSNR and, separately, the one with
    the best mean SSIM (over frames). Returns per-frame curves [B, T] for both metrics and
    the indices of the chosen samples.
    """
    p = psnr(samples, target.unsqueeze(0))     # [N, B, T]
    s = ssim(samples, target.unsqueeze(0).expand_as(samples))
    best_p, best_s = p.mean(-1).argmax(0), s.mean(-1).argmax(0)   # [B]
    rows = torch.arange(target.shape[0])
    return {"psnr": p[best_p, rows], "ssim": s[best_s, rows], "best_psnr_sample": best_p,
            "best_ssim_sample": best_s}


def mean_with_interval(values):
    """Mean and half-width of the 95% interval (1.96 std / sqrt(N)) over the first dim."""
    n = values.shape[0]
    mean = values.float().mean(0)
    half = 1.96 * values.float().std(0, unbiased=True) / math.sqrt(n) if n > 1 else torch.zeros_like(mean)
    return mean, half
