"""Video-prediction metrics: PSNR and SSIM per frame (batched, torch) and the best-of-N protocol.

SSIM follows Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03,
'valid' borders and the mean over channels, the convention of SVG/SRVP's evaluation; a test
checks it against scikit-image's ``structural_similarity`` with the same settings.
"""
import math

import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim", "best_of_n", "running_best_of_n", "mean_with_interval", "trivial_predictions",
           "BASELINES", "baseline_scores"]

# what a predictor must beat: frames anyone can predict without a model ("mean": the conditioning frames' mean)
BASELINES = ("blank", "last", "mean")


def psnr(pred, target, data_range=1.0):
    """PSNR in dB per image [..., C, H, W] -> [...]: per channel (MSE over H x W), then averaged over
    channels, as SRVP's ``test.py`` (the same as over all pixels for grey frames)."""
    mse = ((pred - target) ** 2).flatten(-2).mean(-1)
    return (10 * torch.log10(data_range ** 2 / mse.clamp_min(1e-12))).mean(-1)


def trivial_predictions(x_past, n_future):
    """The ``BASELINES`` for conditioning frames [B, T, C, H, W]: each [B, n_future, C, H, W]: all-black
    frames, the last conditioning frame repeated, the mean conditioning frame repeated."""
    shape = (-1, n_future, -1, -1, -1)
    return {"blank": torch.zeros_like(x_past[:, :1]).expand(shape), "last": x_past[:, -1:].expand(shape),
            "mean": x_past.mean(1, keepdim=True).expand(shape)}


def baseline_scores(x_past, truth, lpips=None):
    """{baseline: {"psnr", "ssim"(, "lpips"): [B, T]}} of the ``trivial_predictions`` of ``truth`` [B, T, C, H, W]."""
    out = {}
    for name, guess in trivial_predictions(x_past, truth.shape[1]).items():
        out[name] = {"psnr": psnr(guess, truth), "ssim": ssim(guess, truth)}
        if lpips is not None:
            out[name]["lpips"] = lpips(guess, truth)
    return out


def _gaussian_1d(size, sigma, device, dtype):
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def ssim(pred, target, data_range=1.0, window=11, sigma=1.5, chunk=256):
    """SSIM per image [..., C, H, W] -> [...]; channels are averaged.

    The Gaussian filter is applied as two 1-D convolutions, over chunks of ``chunk`` images (in
    float64, about 20 intermediate 64x64 maps each: ~50 MB per 256 grey images), so memory stays
    small for thousands of frames.
    """
    shape = pred.shape[:-3]
    c, h, w = pred.shape[-3:]
    p_all = pred.reshape(-1, c, h, w)
    t_all = target.reshape(-1, c, h, w)
    g = _gaussian_1d(window, sigma, pred.device, torch.float64)
    g_row, g_col = g.view(1, 1, 1, window), g.view(1, 1, window, 1)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def filt(img):  # [N, C, H, W] -> valid Gaussian filtering of every channel
        flat = img.reshape(-1, 1, *img.shape[-2:])
        out = F.conv2d(F.conv2d(flat, g_row), g_col)
        return out.reshape(img.shape[0], c, *out.shape[-2:])

    scores = []
    for start in range(0, p_all.shape[0], chunk):
        p = p_all[start:start + chunk].double()
        t = t_all[start:start + chunk].double()
        mu_p, mu_t = filt(p), filt(t)
        var_p = filt(p * p) - mu_p ** 2
        var_t = filt(t * t) - mu_t ** 2
        cov = filt(p * t) - mu_p * mu_t
        s_map = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p ** 2 + mu_t ** 2 + c1) * (var_p + var_t + c2))
        scores.append(s_map.flatten(1).mean(-1))
    return torch.cat(scores).float().reshape(shape)


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


def running_best_of_n(samples, target, keep_rows=0, lpips=None):
    """``best_of_n`` over an iterable of samples [B, T, C, H, W], one at a time: memory stays that of
    one sample, whatever N. Ties keep the earlier sample (as ``argmax``). With ``lpips`` (a
    distance per image, e.g. :class:`vdsm.metrics.perceptual.LPIPS`) also "lpips": the sample with
    the lowest mean distance per sequence.

    Besides the per-frame curves and chosen indices, returns for the first ``keep_rows`` sequences
    the frames of their best-SSIM sample (``best_ssim_frames``) and of the first sample
    (``first_frames``), for pictures, and ``samples`` (N).
    """
    best, sign = None, {"psnr": 1, "ssim": 1, "lpips": -1}   # lpips: lower is better
    for k, sample in enumerate(samples):
        values = {"psnr": psnr(sample, target), "ssim": ssim(sample, target)}          # [B, T]
        if lpips is not None:
            values["lpips"] = lpips(sample, target)
        if best is None:
            best = {**values, **{f"best_{m}_sample": torch.zeros(len(v), dtype=torch.long) for m, v in values.items()},
                    "best_ssim_frames": sample[:keep_rows].clone(), "first_frames": sample[:keep_rows].clone()}
        else:
            for metric, value in values.items():
                better = sign[metric] * value.mean(-1) > sign[metric] * best[metric].mean(-1)
                best[metric] = torch.where(better[:, None], value, best[metric])
                best[f"best_{metric}_sample"][better.cpu()] = k
                if metric == "ssim" and keep_rows:
                    rows = better[:keep_rows]
                    best["best_ssim_frames"][rows] = sample[:keep_rows][rows]
    if best is None:
        raise ValueError("running_best_of_n needs at least one sample")
    best["samples"] = k + 1
    return best


def mean_with_interval(values):
    """Mean and half-width of the 95% interval (1.96 std / sqrt(N)) over the first dim."""
    n = values.shape[0]
    mean = values.float().mean(0)
    half = 1.96 * values.float().std(0, unbiased=True) / math.sqrt(n) if n > 1 else torch.zeros_like(mean)
    return mean, half
