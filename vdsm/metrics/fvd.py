"""Frechet Video Distance (Unterthiner et al. 2018) with an I3D the user provides as TorchScript.

SRVP's protocol: the first sampled future of each test video, the conditioning frames prepended
to both the real and the generated videos, I3D features of every video resized to 224 x 224, the
Frechet distance between the two Gaussians (``vdsm.metrics.frechet.frechet_from_features``); at
least 16 videos.

The model contract: ``model(videos)`` with float videos [B, 3, T, 224, 224] in [-1, 1] returns
features [B, D] (for the TF-hub I3D of the FVD paper: its 400 logits). A TorchScript I3D whose
``forward`` takes ``rescale``, ``resize`` and ``return_features`` (the one StyleGAN-V and DIGAN
distribute) is called with ``rescale=False, resize=False, return_features=True``, as they do.
"""
from pathlib import Path

import torch
import torch.nn.functional as F

from .frechet import frechet_from_features

__all__ = ["FVD", "FVDError", "MIN_VIDEOS"]

#: The fewest videos per set an FVD is computed on (fewer make the covariance meaningless).
MIN_VIDEOS = 16


class FVDError(Exception):
    """The FVD model could not be used (one line: what, and how to fix it)."""


class FVD:
    """``FVD(path, device)``; ``features(videos)`` for videos [B, T, C, H, W] in [0, 1];
    ``distance(real, fake)`` for two sets of videos (or of features)."""

    def __init__(self, path, device="cpu", batch_size=8):
        path = Path(path)
        if not path.is_file():
            raise FVDError(f"--fvd-model {path}: no such file; pass a TorchScript I3D (e.g. i3d_torchscript.pt)")
        try:
            self.model = torch.jit.load(str(path), map_location=device).eval()
        except Exception as err:  # not TorchScript, truncated
            raise FVDError(f"--fvd-model {path} is not a TorchScript module ({type(err).__name__}); "
                           f"pass a TorchScript I3D") from None
        names = {a.name for a in self.model.forward.schema.arguments}
        self.kwargs = dict(rescale=False, resize=False, return_features=True) if "return_features" in names else {}
        self.device, self.batch_size = torch.device(device), batch_size

    @torch.no_grad()
    def features(self, videos):
        out = []
        for start in range(0, videos.shape[0], self.batch_size):
            v = videos[start:start + self.batch_size].to(self.device).float()
            b, t, c = v.shape[:3]
            v = F.interpolate(v.reshape(b * t, c, *v.shape[-2:]), size=(224, 224), mode="bilinear",
                              align_corners=False)
            if c == 1:
                v = v.expand(-1, 3, -1, -1)
            v = (2 * v - 1).reshape(b, t, 3, 224, 224).transpose(1, 2)     # [B, 3, T, 224, 224] in [-1, 1]
            try:
                feats = self.model(v, **self.kwargs)
            except Exception as err:
                raise FVDError(f"the FVD model failed on videos [B, 3, {t}, 224, 224] in [-1, 1] "
                               f"({type(err).__name__}): pass an I3D that takes them") from None
            if feats.dim() != 2 or feats.shape[0] != b:
                raise FVDError(f"the FVD model returned shape {tuple(feats.shape)}; expected features [B, D]")
            out.append(feats.double().cpu())
        return torch.cat(out)

    def distance(self, real, fake):
        if real.shape[0] < MIN_VIDEOS or fake.shape[0] < MIN_VIDEOS:
            raise FVDError(f"FVD needs at least {MIN_VIDEOS} videos per set (got {real.shape[0]} and "
                           f"{fake.shape[0]}): evaluate more sequences")
        a = real if real.dim() == 2 else self.features(real)
        b = fake if fake.dim() == 2 else self.features(fake)
        return frechet_from_features(a.numpy(), b.numpy())
