import json
import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from tests_helpers import SVG_TINY, run_main
from models.registry import load_run
from vdsm.metrics.frechet import frechet_distance, frechet_from_features
from vdsm.metrics.prediction import best_of_n, mean_with_interval, psnr, running_best_of_n, ssim



@pytest.mark.parametrize("channels", [1, 3])
def test_psnr_and_ssim_agree_with_scikit_image(channels):
    rng = np.random.default_rng(0)
    a = rng.random((4, channels, 64, 64)).astype(np.float32)
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
    ours_p = psnr(torch.from_numpy(a), torch.from_numpy(b))
    ours_s = ssim(torch.from_numpy(a), torch.from_numpy(b))
    for i in range(4):
        assert ours_p[i].item() == pytest.approx(peak_signal_noise_ratio(b[i], a[i], data_range=1.0), rel=1e-4)
        ref = structural_similarity(a[i], b[i], data_range=1.0, channel_axis=0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
        assert ours_s[i].item() == pytest.approx(ref, abs=2e-4)
    assert ssim(torch.from_numpy(a), torch.from_numpy(a)).allclose(torch.ones(4))


def test_best_of_n_picks_the_closest_sample_per_sequence():
    target = torch.rand(3, 4, 1, 64, 64)
    samples = torch.stack([target + 0.3 * torch.randn_like(target) for _ in range(5)]).clamp(0, 1)
    samples[2, 1] = target[1]  # sample 2 is exact for sequence 1
    best = best_of_n(samples, target)
    assert best["best_psnr_sample"][1] == 2 and best["best_ssim_sample"][1] == 2
    assert best["psnr"].shape == (3, 4) and torch.allclose(best["ssim"][1], torch.ones(4))
    mean, half = mean_with_interval(torch.tensor([1.0, 2.0, 3.0]))
    assert mean.item() == 2.0 and half.item() == pytest.approx(1.96 * 1.0 / math.sqrt(3))


def test_running_best_of_n_equals_best_of_n_over_the_stacked_samples():
    torch.manual_seed(0)
    target = torch.rand(4, 3, 1, 64, 64)
    samples = torch.stack([(target + s * torch.randn_like(target)).clamp(0, 1) for s in (0.5, 0.1, 0.3, 0.05, 0.2)])
    samples[1, 2] = samples[3, 2]                    # a tie: the earlier sample is kept, as argmax does
    stacked = best_of_n(samples, target)
    running = running_best_of_n(iter(samples), target, keep_rows=2)
    for key in ("psnr", "ssim", "best_psnr_sample", "best_ssim_sample"):
        assert torch.equal(running[key], stacked[key]), key
    assert running["samples"] == 5
    assert torch.equal(running["best_ssim_frames"], samples[stacked["best_ssim_sample"][:2], torch.arange(2)])
    assert torch.equal(running["first_frames"], samples[0, :2])


def test_frechet_of_gaussians_matches_the_closed_form():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20000, 3))
    b = rng.standard_normal((20000, 3)) * 2 + 1
    # ||mu||^2 = 3, Tr(I + 4I - 2 * 2I) = 3
    assert frechet_from_features(a, b) == pytest.approx(6.0, rel=0.05)


def test_svg_cli_run_and_evaluation(svg_run, data_dirs, alexnet_features, tmp_path):
    from test_perceptual import StandInI3D

    out, root = svg_run
    i3d = tmp_path / "i3d.pt"
    torch.jit.script(StandInI3D()).save(str(i3d))
    for name in ("config.json", "checkpoints/svg.pt", "futures.gif", "metrics.json", "tensorboard"):
        assert (out / name).exists(), name
    quick = json.loads((out / "metrics.json").read_text())["quick_prediction"]
    assert quick["split"] == "val" and quick["n_past"] == 5 and quick["sequences"] == 3
    assert set(quick["baselines"]) == {"blank", "last", "mean"} and 0 < quick["baselines"]["blank"]["ssim"] < 1
    code, stdout, err = run_main("evaluate", ["--run", out, "--mnist", data_dirs.mnist, "--data-root", root,
                                              "--samples", "2", "--max-sequences", "16", "--batch-size", "8",
                                              "--lpips-backbone", alexnet_features, "--fvd-model", i3d])
    assert code == 0, err
    plan = stdout.splitlines()[0]   # what it will do, before doing it
    assert "16 test sequences x 2 samples x 20 predicted frames" in plan and "published protocol" in plan
    assert "prediction (samples)" in err   # the progress bar
    summary = json.loads((out / "metrics.json").read_text())["prediction"]
    assert summary["test_sequences"] == 16 and summary["n_future"] == 20 and summary["split"] == "test"
    assert 0 < summary["lpips"] < 2 and summary["lpips_ci95"] >= 0 and "AlexNet" in summary["lpips_protocol"]
    assert summary["fvd"] >= 0 and "first sample" in summary["fvd_protocol"]
    assert "LPIPS" in stdout.splitlines()[-2] and "FVD" in stdout.splitlines()[-2]
    protocol = summary["protocol"]
    if not torch.cuda.is_available():
        assert protocol["name"] == "quick, overridden" and protocol["reason"].startswith("default without a GPU")
    assert protocol["departures"] == ["2 samples per sequence (published protocol: 100)",
                                      "the first 16 of the 5000 test sequences (published: all)"]
    lines = (out / "prediction_per_frame.csv").read_text().splitlines()
    assert lines[0].startswith("frame,psnr_mean,psnr_ci95,ssim_mean,ssim_ci95,lpips_mean,lpips_ci95,blank_psnr_mean,")
    assert len(lines) == 21 and len(lines[1].split(",")) == len(lines[0].split(",")) == 7 + 3 * 3
    # the baselines, on the same 16 sequences and 20 frames, beside the model's score
    import data
    test = data.get_dataset("smmnist", "test", root, mnist=data_dirs.mnist, seq_len=25)
    truth = torch.stack([test[i][0] for i in range(16)])[:, 5:]
    blank = summary["baselines"]["blank"]
    assert blank["psnr"] == pytest.approx(float(psnr(torch.zeros_like(truth), truth).mean()), rel=1e-5)
    assert blank["ssim"] == pytest.approx(float(ssim(torch.zeros_like(truth), truth).mean()), rel=1e-4)
    assert summary["model_minus_blank"]["psnr"] == pytest.approx(summary["psnr"] - blank["psnr"])
    assert set(summary["baselines"]) == {"blank", "last", "mean"} and "lpips" in summary["baselines"]["last"]
    assert "model - blank" in stdout.splitlines()[-1]
    assert (out / "prediction_per_frame.png").is_file() and (out / "prediction.gif").is_file()


def test_evaluate_batchnorm_batch_runs_prediction_on_batch_statistics_and_says_so(svg_run, data_dirs):
    out, root = svg_run
    common = ["--run", out, "--mnist", data_dirs.mnist, "--data-root", root, "--samples", "1", "--max-sequences", "4",
              "--split", "val", "--no-progress"]
    scores = {}
    for mode in ("running", "batch", "batch"):  # the same random numbers: only the statistics differ
        torch.manual_seed(0)
        code, _, err = run_main("evaluate", [*common, "--batchnorm", mode])
        assert code == 0, err
        summary = json.loads((out / "metrics.json").read_text())["prediction_val"]
        scores.setdefault(mode, []).append(summary["psnr"])
        assert summary["batchnorm"].startswith({"running": "running statistics", "batch": "batch statistics"}[mode])
    assert scores["batch"][0] == scores["batch"][1] and scores["batch"][0] != scores["running"][0]
    assert "--batchnorm batch" in summary["batchnorm"] and "batch of 100" in summary["batchnorm"]


class _RunWithoutBatchNorm:
    spec = type("Spec", (), {"name": "toy"})

    def modules(self):
        return [torch.nn.Linear(2, 2)]


def test_batchnorm_batch_is_refused_for_a_run_without_batchnorm():
    from experiments.cli import UsageError
    from experiments.evaluate import batchnorm_mode

    with pytest.raises(UsageError, match="no BatchNorm layer; drop the flag"):
        batchnorm_mode("batch", _RunWithoutBatchNorm())
    assert batchnorm_mode(None, _RunWithoutBatchNorm())["what"].startswith("none")


def test_svg_fp_trains_through_the_runner(tmp_path, data_dirs):
    from experiments.run import main
    out = tmp_path / "fp"
    assert main(["--dataset", "mmnist", "--model", "svg-fp", "--mnist", str(data_dirs.mnist), "--data-root",
                 str(tmp_path / "root"), "--out", str(out), *SVG_TINY]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["learned_prior"] is False and config["model_name"] == "svg-fp"


def test_frechet_distance_is_zero_for_identical_sets_and_grows_with_noise(svg_run, data_dirs):
    import data
    out, root = svg_run
    test = data.get_dataset("smmnist", "test", root, mnist=data_dirs.mnist, seq_len=25)
    images = torch.cat([test[i][0] for i in range(12)])          # 300 frames
    features = load_run(out).frame_features                    # the run's trained frame encoder
    same = frechet_distance(images, images, features)
    distances = [frechet_distance(images, (images + s * torch.randn_like(images)).clamp(0, 1), features)
                 for s in (0.05, 0.2, 0.5)]
    assert abs(same) < 1e-3
    assert distances[0] < distances[1] < distances[2]


def test_frechet_distance_with_a_vdsm_run(vdsm_run, data_dirs):
    import data
    out = vdsm_run.path
    frames = torch.cat([data.get_dataset("sprites", "test", sprites_layers=data_dirs.sprites)[i][0] for i in range(20)])
    assert abs(frechet_distance(frames, frames, load_run(out).frame_features)) < 1e-3
    assert frechet_distance(frames, frames.flip(-1).roll(7, -2), load_run(out).frame_features) > 0


def test_svg_fp_with_vgg_on_kth_frame_folders(tmp_path):
    from PIL import Image

    from experiments.run import main
    for person, action in [(2, "walking"), (5, "boxing"), (18, "handwaving"), (22, "running")]:
        video = tmp_path / "kth" / action / f"person{person:02d}_{action}_d1"
        video.mkdir(parents=True)
        for k in range(14):
            Image.new("L", (64, 64), 15 * k).save(video / f"image-{k}.png")
    out = tmp_path / "run"
    assert main(["--dataset", "kth", "--model", "svg-fp", "--arch", "vgg", "--kth", str(tmp_path / "kth"),
                 "--out", str(out), "--n-past", "2", "--n-future", "2", "--z-dim", "2", "--g-dim", "8",
                 "--rnn-dim", "8", "--batch-size", "1", "--steps", "1", "--eval-samples", "1",
                 "--eval-sequences", "1", "--num-workers", "0", "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["arch"] == "vgg" and config["model"]["nf"] == 32   # the cpu preset's width applies
    assert json.loads((out / "metrics.json").read_text())["quick_prediction"]["n_future"] == 2


def test_evaluate_without_lpips_weights_says_how_to_get_them_and_reports_the_rest(svg_run, data_dirs, tmp_path,
                                                                                   monkeypatch, capsys):
    import json

    from experiments.evaluate import main as evaluate_main

    out, root = svg_run
    common = ["--run", str(out), "--mnist", str(data_dirs.mnist), "--data-root", str(root), "--samples", "1",
              "--max-sequences", "2", "--split", "val", "--no-progress"]
    before = (out / "metrics.json").read_text()
    assert evaluate_main([*common, "--lpips-backbone", str(tmp_path / "missing.pth")]) == 2   # asked for: refused
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.pth" in err[0] and (out / "metrics.json").read_text() == before

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    assert evaluate_main(common) == 0
    skipped = [line for line in capsys.readouterr().out.splitlines() if line.startswith("LPIPS skipped")]
    assert len(skipped) == 1 and "--lpips-backbone" in skipped[0]
    summary = json.loads((out / "metrics.json").read_text())["prediction_val"]
    assert "--lpips-backbone" in summary["lpips"]["skipped"] and summary["ssim"] > 0


def test_trivial_predictions_are_the_blank_last_and_mean_frames():
    from vdsm.metrics.prediction import BASELINES, baseline_scores, psnr, ssim, trivial_predictions

    past, truth = torch.rand(2, 3, 1, 16, 16), torch.rand(2, 4, 1, 16, 16)
    guesses = trivial_predictions(past, 4)
    assert list(guesses) == list(BASELINES) and all(g.shape == truth.shape for g in guesses.values())
    assert guesses["blank"].abs().max() == 0 and torch.equal(guesses["last"][:, 2], past[:, -1])
    assert torch.allclose(guesses["mean"][:, 0], past.mean(1))
    scores = baseline_scores(past, truth)
    assert torch.allclose(scores["last"]["psnr"], psnr(past[:, -1:].expand(-1, 4, -1, -1, -1), truth))
    assert torch.allclose(scores["blank"]["ssim"], ssim(torch.zeros_like(truth), truth))


def test_rgb_psnr_averages_the_channels_psnrs_as_srvp():
    truth = torch.zeros(1, 3, 8, 8)
    pred = truth.clone()
    pred[0, 0] = 0.1                    # only the red channel is off: its PSNR 20 dB, the others capped
    per_channel = [20.0, 120.0, 120.0]  # 10 log10(1 / 1e-12) for an exact channel
    assert float(psnr(pred, truth)) == pytest.approx(sum(per_channel) / 3, rel=1e-4)
