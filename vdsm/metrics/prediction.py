"""Video-prediction metrics: PSNR and SSIM per frame (batched, torch) and the best-of-N protocol as
functions of plain callables: ``prediction_rows(batches, predictors, metrics)`` scores any predictors
(a model's sampler, the trivial baselines of ``baseline_predictors``) with any metrics (``METRICS``,
LPIPS) and returns one plain row per predictor and sequence; ``summarize(rows)`` pools them.

SSIM follows Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03,
'valid' borders and the mean over channels, the convention of SVG/SRVP's evaluation; a test
checks it against scikit-image's ``structural_similarity`` with the same settings.
"""
import math

import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim", "best_of_n", "running_best_of_n", "mean_with_interval", "trivial_predictions",
           "BASELINES", "baseline_scores", "baseline_predictors", "prediction_rows", "summarize", "METRICS",
           "LOWER_IS_BETTER"]

#: What a predictor must beat: frames anyone can predict without a model ("mean": the conditioning frames' mean).
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


def baseline_predictors():
    """{baseline: predictor}: each ``f(x_past, n_future)`` yields its one deterministic guess
    (``trivial_predictions``), so the baselines are scored as any predictor is."""
    return {name: (lambda x_past, n_future, name=name: iter([trivial_predictions(x_past, n_future)[name]]))
            for name in BASELINES}


def baseline_scores(x_past, truth, metrics=None):
    """{baseline: {metric: [B, T]}} of the ``trivial_predictions`` of ``truth`` [B, T, C, H, W]
    (``metrics``: default ``METRICS``)."""
    metrics = metrics or METRICS
    return {name: {m: fn(guess, truth) for m, fn in metrics.items()}
            for name, guess in trivial_predictions(x_past, truth.shape[1]).items()}


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


def running_best_of_n(samples, target, metrics=None, keep_rows=0):
    """``best_of_n`` over an iterable of samples [B, T, C, H, W], one at a time: memory stays that of
    one sample, whatever N. Ties keep the earlier sample (as ``argmax``). ``metrics``: {name:
    f(pred, target) -> [B, T]} (default ``METRICS``: PSNR and SSIM); for a name in ``LOWER_IS_BETTER``
    (a distance such as :class:`vdsm.metrics.perceptual.LPIPS`) the best sample is the lowest.

    Besides the per-frame curves and chosen indices, returns for the first ``keep_rows`` sequences
    the frames of their best-SSIM sample (``best_ssim_frames``) and of the first sample
    (``first_frames``), for pictures, and ``samples`` (N).
    """
    metrics = metrics or METRICS
    best, sign = None, {name: -1 if name in LOWER_IS_BETTER else 1 for name in metrics}
    for k, sample in enumerate(samples):
        values = {name: fn(sample, target) for name, fn in metrics.items()}          # [B, T]
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


def prediction_rows(batches, predictors, metrics=None, *, n_past, keep_rows=0, on_batch=None):
    """The prediction protocol: for every batch of real sequences [B, n_past + n_future, C, H, W], each
    predictor's futures from the first ``n_past`` frames, the best of its samples per metric and
    sequence (``running_best_of_n``). Returns plain rows, one per predictor and sequence:
    ``{"predictor", "sequence", metric: [value per predicted frame]}``.

    :param predictors: {name: f(x_past, n_future) -> iterable of futures [B, n_future, C, H, W]}: a
        model's sampler yields N draws, a baseline (``baseline_predictors``) one guess.
    :param metrics: {name: f(pred, target) -> [B, n_future]} (default ``METRICS``).
    :param on_batch: ``f(predictor, x, best)`` after each predictor's batch (pictures of the first
        ``keep_rows`` sequences of the first batch, video features).
    """
    metrics, rows, offset = metrics or METRICS, [], 0
    for b, x in enumerate(batches):
        past, truth = x[:, :n_past], x[:, n_past:]
        for name, predict in predictors.items():
            best = running_best_of_n(predict(past, truth.shape[1]), truth, metrics, keep_rows if b == 0 else 0)
            if on_batch is not None:
                on_batch(name, x, best)
            values = {m: best[m].float().cpu().tolist() for m in metrics}
            rows += [{"predictor": name, "sequence": offset + i, **{m: values[m][i] for m in metrics}}
                     for i in range(len(x))]
        offset += len(x)
    return rows


def summarize(rows):
    """{predictor: {metric: mean over sequences of the mean over frames, metric_ci95: its 95% half-width,
    "per_frame": {metric: (mean [T], half-width [T])}}} of ``prediction_rows``' rows."""
    out = {}
    for name in dict.fromkeys(r["predictor"] for r in rows):
        mine = [r for r in rows if r["predictor"] == name]
        metrics = [k for k in mine[0] if k not in ("predictor", "sequence")]
        out[name] = {"per_frame": {}}
        for m in metrics:
            values = torch.tensor([r[m] for r in mine])            # [N, T]
            mean, half = mean_with_interval(values.mean(1))
            out[name][m], out[name][f"{m}_ci95"] = float(mean), float(half)
            out[name]["per_frame"][m] = mean_with_interval(values)
    return out


def mean_with_interval(values):
    """Mean and half-width of the 95% interval (1.96 std / sqrt(N)) over the first dim."""
    n = values.shape[0]
    mean = values.float().mean(0)
    half = 1.96 * values.float().std(0, unbiased=True) / math.sqrt(n) if n > 1 else torch.zeros_like(mean)
    return mean, half


#: Per-frame metrics of predicted frames [B, T, C, H, W] against the truth: higher is better, unless the name is
#: in ``LOWER_IS_BETTER``.
METRICS = {"psnr": psnr, "ssim": ssim}
#: Metrics that are distances (LPIPS).
LOWER_IS_BETTER = {"lpips"}
