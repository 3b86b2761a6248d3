"""Frechet distance between two image sets in the feature space of a given network (e.g. a trained
run's frame encoder, ``VideoRun.frame_features``)."""
import warnings

import numpy as np
import torch
from scipy import linalg

__all__ = ["frechet_distance", "frechet_from_features"]


def frechet_from_features(a, b):
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two feature sets [N, D]."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():   # a singular product (e.g. a collapsed sample set) is handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():  # nearly singular product: regularise as the FID code does
        eps = 1e-6 * np.eye(a.shape[1])
        root = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root.real))


@torch.no_grad()
def frechet_distance(images_a, images_b, features, device="cpu", batch_size=256):
    """Frechet distance of two image sets [N, C, H, W] (or [N, T, C, H, W], frames pooled) in the space
    of ``features``: a callable frames [n, C, H, W] -> [n, D], e.g. a loaded run's
    ``frame_features`` (``models.spec.VideoRun``)."""

    def embed(images):
        images = images.reshape(-1, *images.shape[-3:])
        return torch.cat([features(chunk.to(device)).cpu() for chunk in images.split(batch_size)]).numpy()

    return frechet_from_features(embed(images_a), embed(images_b))
