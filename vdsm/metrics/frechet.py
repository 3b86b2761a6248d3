"""Frechet distance between two image sets in the feature space of a trained run's frame encoder."""
import functools
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import linalg

__all__ = ["frechet_distance", "frechet_from_features", "feature_network"]


@functools.lru_cache(maxsize=4)
def feature_network(run_dir, device="cpu"):
    """frames [N, C, H, W] -> features [N, D] from the run's trained frame encoder (cached per run)."""
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    if config.get("model_name", "vdsm") != "vdsm":  # a prediction model (experiments.registry)
        from experiments.registry import api_class

        encoder = api_class(config["model_name"]).load(run_dir, device).nets.encoder.eval()
        return lambda frames: encoder(frames)[0]
    from vdsm.api import VDSM

    encoder = VDSM.load(run_dir, device).guide1.encoder.eval()
    return lambda frames: encoder.features(frames).flatten(1)


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
def frechet_distance(images_a, images_b, run_dir, device="cpu", batch_size=256):
    """Frechet distance of two image sets [N, C, H, W] (or [N, T, C, H, W], frames pooled)."""
    net = feature_network(str(Path(run_dir).resolve()), str(device))

    def features(images):
        images = images.reshape(-1, *images.shape[-3:])
        return torch.cat([net(chunk.to(device)).cpu() for chunk in images.split(batch_size)]).numpy()

    return frechet_from_features(features(images_a), features(images_b))
