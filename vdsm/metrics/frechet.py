"""Frechet distance between two image sets in the feature space of a given network (e.g. a trained
run's frame encoder, ``VideoRun.frame_features``)."""
import functools
import importlib
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import linalg

__all__ = ["frechet_distance", "frechet_from_features", "feature_network"]


@functools.lru_cache(maxsize=4)
def _run_features(run_dir, device):
    # deprecated path argument: the run is loaded through the registry, imported only here
    run = importlib.import_module("models.registry").load_run(run_dir, device)
    return run.frame_features


def feature_network(run_dir, device="cpu"):
    """Deprecated: frames -> features of a run's frame encoder; use
    ``models.registry.load_run(run_dir).frame_features``."""
    warnings.warn("feature_network(run_dir) is deprecated: use models.registry.load_run(run_dir).frame_features",
                  DeprecationWarning, stacklevel=2)
    return _run_features(str(Path(run_dir).resolve()), str(device))


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
    ``frame_features`` (``models.spec.VideoRun``). A run folder in its place still works for one
    release, with a DeprecationWarning."""
    if isinstance(features, (str, Path)):
        warnings.warn("frechet_distance(a, b, run_dir) is deprecated: pass the run's features, "
                      "models.registry.load_run(run_dir).frame_features", DeprecationWarning, stacklevel=2)
        features = _run_features(str(Path(features).resolve()), str(device))

    def embed(images):
        images = images.reshape(-1, *images.shape[-3:])
        return torch.cat([features(chunk.to(device)).cpu() for chunk in images.split(batch_size)]).numpy()

    return frechet_from_features(embed(images_a), embed(images_b))
