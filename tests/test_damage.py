"""The damage experiment: how the hits are chosen, what is damaged, and the command's outputs."""
import hashlib
import json

import pytest
import torch
from torch import nn

from experiments.damage import Damage, candidates
from experiments.damage import main as damage_main
from test_srvp import SRVP_TINY


def test_tensor_target_hits_small_tensors_densely_and_weight_target_does_not():
    def hits_on_small(target):
        small, large = torch.ones(2), torch.ones(1000)
        hurt = Damage([("small", small), ("large", large)], target)
        hurt.hit(400, torch.Generator().manual_seed(0))
        assert torch.all(small <= 1) and torch.all(large <= 1) and torch.all(large >= 0)   # multiplied by U(0, 1)
        hit = int((small < 1).sum()) + int((large < 1).sum())
        assert hurt.share() == pytest.approx(hit / 1002)   # distinct values hit
        return int(hurt.hit_mask[0].sum()), int(hurt.hit_mask[1].sum())

    small_t, large_t = hits_on_small("tensor")    # ~200 hits on 2 values: both hit; ~200 on the large one
    small_w, large_w = hits_on_small("weight")    # ~0.8 hits expected on the small one
    assert small_t == 2 and 150 < large_t < 250
    assert large_w > 300 and large_w > large_t


def test_buffers_are_candidates_only_when_asked():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    plain = [name for name, _ in candidates(net, "all", include_buffers=False)]
    assert plain == ["0.weight", "0.bias", "1.weight", "1.bias"]
    everything = [name for name, _ in candidates(net, "all", include_buffers=True)]
    assert {"1.running_mean", "1.running_var", "1.num_batches_tracked"} <= set(everything)
    counter = dict(candidates(net, "all", include_buffers=True))["1.num_batches_tracked"]
    counter.fill_(7)
    hurt = Damage([("n", counter)], "tensor")
    hurt.hit(3, torch.Generator().manual_seed(0))
    assert counter.dtype == torch.long and 0 <= int(counter) <= 7


@pytest.fixture(scope="module")
def srvp_run(tmp_path_factory, data_dirs):
    from experiments.run import main

    out = tmp_path_factory.mktemp("damage") / "run"
    root = out.parent / "root"
    assert main(["--dataset", "smmnist", "--model", "srvp", "--mnist", str(data_dirs.mnist), "--data-root", str(root),
                 "--out", str(out), "--steps", "2", *SRVP_TINY]) == 0
    return out, root


def test_damage_command_writes_curves_and_pictures_and_leaves_the_run_alone(srvp_run, data_dirs, tmp_path, capsys):
    run, root = srvp_run
    checkpoint = run / "checkpoints" / "srvp.pt"
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    common = ["--run", str(run), "--mnist", str(data_dirs.mnist), "--data-root", str(root), "--iterations", "3",
              "--hits", "40", "--repeats", "2", "--sequences", "3", "--which", "all", "encoder", "residual",
              "--no-progress"]
    assert damage_main([*common, "--out", str(tmp_path / "a")]) == 0
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == digest   # a copy in memory was damaged
    out = tmp_path / "a"
    rows = (out / "damage.csv").read_text().splitlines()
    assert rows[0] == "group,repeat,iteration,share_damaged,psnr,ssim" and len(rows) == 1 + 3 * 2 * 4
    summary = json.loads((out / "damage.json").read_text())
    assert set(summary["baselines"]) == {"blank", "last", "mean"} and 0 < summary["baselines"]["blank"]["ssim"] < 1
    for group in ("all", "encoder", "residual"):
        curve = summary["groups"][group]["curve"]
        shares = [c["share_damaged"] for c in curve]
        assert shares[0] == 0 and all(a < b for a, b in zip(shares, shares[1:]))
        assert curve[0]["psnr_std"] == 0   # the undamaged model, the same draws in every repeat
        assert (out / f"damage_{group}.gif").stat().st_size > 0
        assert sorted(p.name for p in (out / "weights" / group).iterdir()) == [f"iter_00{k}.png" for k in (1, 2, 3)]
    # every group starts from the same undamaged predictions
    firsts = {g["curve"][0]["psnr"] for g in summary["groups"].values()}
    assert len(firsts) == 1
    assert (out / "damage.png").stat().st_size > 0 and "| group |" in (out / "fragility.md").read_text()
    assert "| residual |" in capsys.readouterr().out
    # deterministic given the seed; another seed damages other values
    assert damage_main([*common, "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "damage.csv").read_text() == (out / "damage.csv").read_text()
    assert damage_main([*common, "--out", str(tmp_path / "c"), "--seed", "1"]) == 0
    assert (tmp_path / "c" / "damage.csv").read_text() != (out / "damage.csv").read_text()
    # settings other than the protocol's are labelled in the outputs; --pictures-every thins the pictures
    assert summary["departures"] == ["iterations 3 (protocol: 100)", "hits 40 (protocol: 100)"]
    assert "Departs from the protocol: iterations 3" in (out / "fragility.md").read_text()
    assert damage_main([*common[:-5], "--which", "residual", "--no-progress", "--iterations", "5",
                        "--pictures-every", "2", "--out", str(tmp_path / "d")]) == 0
    assert sorted(p.name for p in (tmp_path / "d" / "weights" / "residual").iterdir()) == \
        ["iter_002.png", "iter_004.png", "iter_005.png"]


def test_damage_refuses_unknown_groups(srvp_run, data_dirs, tmp_path, capsys):
    run, root = srvp_run
    assert damage_main(["--run", str(run), "--mnist", str(data_dirs.mnist), "--data-root", str(root), "--which",
                        "wings", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "wings" in err[0] and "encoder" in err[0] and not (tmp_path / "x").exists()
    assert damage_main(["--run", str(run), "--judge-steps", "3", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--judge-steps" in err[0] and not (tmp_path / "x").exists()
    assert damage_main(["--run", str(run), "--pictures-every", "0", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--pictures-every=0" in err[0] and not (tmp_path / "x").exists()


def test_damage_measures_a_vdsm_run_with_the_judge(vdsm_run, judge_root, tmp_path, data_dirs, capsys):
    run, root = vdsm_run.path, judge_root
    out = tmp_path / "damage"
    assert damage_main(["--run", str(run), "--sprites-layers", str(data_dirs.sprites), "--data-root", str(root),
                        "--judge-steps", "3", "--iterations", "2", "--hits", "30", "--repeats", "1", "--sequences",
                        "6", "--which", "all", "model1.decoder", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "damage.json").read_text())
    assert summary["metrics"] == ["reconstruction", "generation_action", "generation_attributes", "transfer"]
    for group in ("all", "model1.decoder"):
        curve = summary["groups"][group]["curve"]
        assert len(curve) == 3 and curve[0]["share_damaged"] == 0 < curve[1]["share_damaged"]
        for c in curve:
            assert all(0 <= c[m] <= 1 for m in summary["metrics"])
        assert (out / f"damage_{group}.gif").stat().st_size > 0
    assert "| model1.decoder |" in (out / "fragility.md").read_text()
    # stage 2 shares stage 1's decoder: one group, named once
    assert damage_main(["--run", str(run), "--which", "model2.decoder", "--out", str(tmp_path / "y")]) == 2
    assert "model1.decoder" in capsys.readouterr().err


def test_weight_pictures_show_every_damaged_tensor_and_a_single_hit_in_red(tmp_path):
    import numpy as np
    from PIL import Image

    big, bias, spared = torch.rand(300, 2000), torch.rand(7), torch.rand(4, 4)
    hurt = Damage([("big", big), ("bias", bias), ("spared", spared)], "tensor")
    hurt.hit_mask[0][12345] = True   # one element of 600k, shrunk ~2500x into its tile
    hurt.hit_mask[1][3] = True
    hurt.picture(tmp_path / "p.png", "iteration 1")
    pixels = np.asarray(Image.open(tmp_path / "p.png").convert("RGB")).astype(int)
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 30) & (pixels[..., 2] < 30)
    w = 240   # PICTURE_TILE (240 x 180): two tiles side by side (the spared tensor is not drawn)
    assert pixels.shape[1] == 8 + 2 * (w + 8)
    left, right = red[:, 8:8 + w], red[:, 16 + w:16 + 2 * w]
    assert 1 <= left.sum() <= 8 and right.sum() >= 4
    hurt.hit_mask = [torch.zeros_like(m) for m in hurt.hit_mask]
    hurt.picture(tmp_path / "none.png", "nothing hit")
    assert not (tmp_path / "none.png").exists()
