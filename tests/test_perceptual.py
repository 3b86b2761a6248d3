"""LPIPS and FVD: the plumbing against the lpips package and independent formulas, the loading
paths and their one-line errors. Nothing is downloaded (a random AlexNet trunk, a stand-in I3D)."""
import numpy as np
import pytest
import torch
from torch import nn

from vdsm.metrics.frechet import frechet_from_features
from vdsm.metrics.fvd import FVD, FVDError
from vdsm.metrics.perceptual import LPIPS, LPIPSError
from vdsm.metrics.prediction import METRICS, running_best_of_n


def package_lpips(backbone):
    """The lpips package's own module with its linear weights and the same trunk weights."""
    import lpips

    reference = lpips.LPIPS(pretrained=True, net="alex", version="0.1", pnet_rand=True, verbose=False)
    state = torch.load(backbone, weights_only=True)
    features = nn.Sequential(*[layer for s in (reference.net.slice1, reference.net.slice2, reference.net.slice3,
                                               reference.net.slice4, reference.net.slice5) for layer in s])
    features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()})
    return reference.eval()


@pytest.mark.parametrize("channels", [1, 3])
def test_lpips_agrees_with_the_package_on_the_same_weights(alexnet_features, channels):
    ours, reference = LPIPS(alexnet_features), package_lpips(alexnet_features)
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, channels, 64, 64, generator=g), torch.rand(2, 3, channels, 64, 64, generator=g)
    d = ours(a, b)
    assert d.shape == (2, 3)
    flat = lambda x: (2 * x.reshape(6, channels, 64, 64) - 1).expand(-1, 3, -1, -1)   # [-1, 1], 3 channels
    with torch.no_grad():
        expected = reference(flat(a), flat(b)).reshape(2, 3)
    torch.testing.assert_close(d, expected, rtol=1e-5, atol=1e-6)
    assert torch.all(ours(a, a).abs() < 1e-6) and torch.all(d > 0)


def test_best_of_n_keeps_the_lowest_lpips(alexnet_features):
    lpips = LPIPS(alexnet_features)
    g = torch.Generator().manual_seed(1)
    target = torch.rand(3, 4, 1, 64, 64, generator=g)
    samples = [target + s * torch.randn(3, 4, 1, 64, 64, generator=g) for s in (0.4, 0.05, 0.2)]
    samples = [x.clamp(0, 1) for x in samples]
    best = running_best_of_n(iter(samples), target, {**METRICS, "lpips": lpips})
    per_sample = torch.stack([lpips(x, target).mean(-1) for x in samples])      # [N, B]
    torch.testing.assert_close(best["lpips"].mean(-1), per_sample.min(0).values)
    assert torch.equal(best["best_lpips_sample"], per_sample.argmin(0))


def test_lpips_weight_files_give_one_line_errors(tmp_path, alexnet_features, monkeypatch):
    with pytest.raises(LPIPSError, match="no such file") as err:
        LPIPS(tmp_path / "missing.pth")
    assert "\n" not in str(err.value) and "--lpips-backbone" in str(err.value)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(alexnet_features.read_bytes()[:1000])
    with pytest.raises(LPIPSError, match="not a readable state dict"):
        LPIPS(corrupt)
    other = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(3)}, other)
    with pytest.raises(LPIPSError, match="features.0.weight"):
        LPIPS(other)

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(LPIPSError, match="run once online") as err:
        LPIPS()
    assert "\n" not in str(err.value)


class StandInI3D(nn.Module):
    """Features that record what the model received: channels, frames, height, width, min, max,
    and the keyword arguments of the StyleGAN-V/DIGAN I3D."""

    def forward(self, videos: torch.Tensor, rescale: bool = True, resize: bool = True,
                return_features: bool = False) -> torch.Tensor:
        b = videos.shape[0]
        flat = videos.reshape(b, -1)
        shape = torch.tensor([float(videos.shape[1]), float(videos.shape[2]), float(videos.shape[3]),
                              float(videos.shape[4]), float(rescale), float(resize), float(return_features)])
        return torch.cat([shape.expand(b, -1), flat.amin(1, keepdim=True), flat.amax(1, keepdim=True),
                          flat.mean(1, keepdim=True)], 1)


def test_fvd_gives_the_model_videos_in_its_layout_and_range(tmp_path):
    path = tmp_path / "i3d.pt"
    torch.jit.script(StandInI3D()).save(str(path))
    fvd = FVD(path)
    videos = torch.rand(3, 7, 1, 64, 64)
    videos[0] = 0.0
    videos[1] = 1.0
    f = fvd.features(videos)
    assert f.shape == (3, 10)
    assert f[0, :7].tolist() == [3, 7, 224, 224, 0, 0, 1]   # [B, 3, T, 224, 224], rescale/resize off, features on
    assert f[0, 7] == -1 and f[1, 8] == 1 and -1 <= f[2, 7] < f[2, 8] <= 1
    with pytest.raises(FVDError, match="at least 16"):
        fvd.distance(videos, videos)
    assert fvd.distance(f.repeat(6, 1) + torch.randn(18, 10, dtype=f.dtype) * 1e-3,
                        f.repeat(6, 1) + torch.randn(18, 10, dtype=f.dtype) * 1e-3) < 1e-3


def test_fvd_model_files_give_one_line_errors(tmp_path):
    with pytest.raises(FVDError, match="no such file"):
        FVD(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torchscript file")
    with pytest.raises(FVDError, match="not a TorchScript module") as err:
        FVD(bad)
    assert "\n" not in str(err.value)


def test_frechet_formula_matches_an_eigenvalue_computation():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((500, 6)) @ rng.standard_normal((6, 6))
    b = rng.standard_normal((400, 6)) @ rng.standard_normal((6, 6)) + 0.5
    mu_a, mu_b, s_a, s_b = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr((S_a S_b)^(1/2)) = sum of the square roots of the eigenvalues of S_a S_b (real, >= 0)
    trace_root = np.sqrt(np.clip(np.linalg.eigvals(s_a @ s_b).real, 0, None)).sum()
    expected = ((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * trace_root
    assert frechet_from_features(a, b) == pytest.approx(expected, rel=1e-8)
