"""Human3.6M as SRVP prepares it, on a tiny made-up folder of converted videos."""
import numpy as np
import pytest
import torch

import data
from data.human36m import CROP_BOX, convert_frames


def make_folder(root, lengths=None):
    """train/: subjects 1, 5, 6, 7, 8 (4 videos each); test/: 9 and 11. Frame t of video v has the
    value (v * 7 + t) % 256 everywhere, so a clip tells where it came from."""
    lengths = lengths or {}
    v = 0
    for sub, subjects in (("train", (1, 5, 6, 7, 8)), ("test", (9, 11))):
        (root / sub).mkdir(parents=True)
        for s in subjects:
            for k in range(4):
                n = lengths.get((s, k), 40 + 3 * k)
                frames = np.broadcast_to(((v * 7 + np.arange(n)) % 256).astype(np.uint8)[:, None, None, None],
                                         (n, 64, 64, 3))
                np.savez(root / sub / f"S{s}-Walking {k}.5501", image=frames, subject=s)
                v += 1
    return root


def test_test_split_is_the_releases_fixed_draw(tmp_path):
    root = make_folder(tmp_path / "h36m")
    test = data.get_dataset("human36m", "test", human36m=root, seq_len=4, subsampling=3, test_size=12)
    files = sorted((root / "test").glob("*.npz"))
    rng = np.random.RandomState(42)   # the release: np.random.seed(42), then per sequence a video and a start
    for i in range(12):
        video = rng.randint(len(files))
        n = np.load(files[video])["image"].shape[0]
        t0 = rng.randint(n - 10 + 1)   # span (4 - 1) * 3 + 1
        x, labels = test[i]
        want = np.load(files[video])["image"][t0:t0 + 10:3]
        assert torch.allclose(x, torch.from_numpy(want).permute(0, 3, 1, 2).float() / 255, atol=1e-6)
        assert labels["subject"] in (9, 11)
    again = data.get_dataset("human36m", "test", human36m=root, seq_len=4, subsampling=3, test_size=12)
    assert all(torch.equal(test[i][0], again[i][0]) for i in range(12))


def test_train_and_val_are_disjoint_subjects_1_to_8_and_frames_are_subsampled(tmp_path):
    root = make_folder(tmp_path / "h36m")
    train = data.get_dataset("human36m", "train", human36m=root, seq_len=5, subsampling=8)
    val = data.get_dataset("human36m", "val", human36m=root, seq_len=5, subsampling=8, val_size=6)
    assert set(map(str, train.files)).isdisjoint(map(str, val.files)) and len(val.files) == 1   # 5% of 20
    assert len(train.files) == 19 and len(val) == 6
    for ds in (train, val):
        for i in range(6):
            x, labels = ds[i]
            assert x.shape == (5, 3, 64, 64) and labels["subject"] in (1, 5, 6, 7, 8)
            steps = torch.diff(x[:, 0, 0, 0] * 255).round()
            assert torch.all((steps == 8) | (steps == 8 - 256))   # one frame in 8
    again = data.get_dataset("human36m", "val", human36m=root, seq_len=5, subsampling=8, val_size=6)
    assert all(torch.equal(val[i][0], again[i][0]) for i in range(6))   # a fixed set of clips


def test_short_videos_and_bad_folders_give_one_line_errors(tmp_path):
    with pytest.raises(data.DataError, match="--human36m"):
        data.get_dataset("human36m", "train", human36m=tmp_path / "missing")
    root = make_folder(tmp_path / "h36m")
    with pytest.raises(data.DataError, match="lower --seq-len"):
        data.get_dataset("human36m", "test", human36m=root, seq_len=53, subsampling=8)
    (root / "train" / "S1-Walking 0.5501.npz").write_bytes(b"not a zip")
    with pytest.raises(data.DataError, match="convert that video again"):
        data.get_dataset("human36m", "trainval", human36m=root, seq_len=4)


def test_convert_frames_crops_then_resizes():
    frame = np.zeros((1000, 1000, 3), np.uint8)
    left, top, right, bottom = CROP_BOX
    frame[top:bottom, left:right] = 200            # the crop box is grey, the rest black
    out = convert_frames(frame[None])
    assert out.shape == (1, 64, 64, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - 200).max() <= 1   # nothing from outside the box survives


def test_srvp_trains_on_human36m_through_the_runner(tmp_path):
    import json

    from experiments.run import main

    root = make_folder(tmp_path / "h36m")
    out = tmp_path / "run"
    assert main(["--dataset", "human36m", "--model", "srvp", "--preset", "paper", "--human36m", str(root), "--out",
                 str(out), "--n-past", "2", "--nt-inf", "2", "--n-future", "2", "--nf", "4", "--nh", "8", "--ny", "3",
                 "--z-dim", "2", "--content-dim", "6", "--rnn-dim", "5", "--y-hidden", "7", "--mlp-hidden", "9",
                 "--batch-size", "2", "--steps", "1", "--eval-samples", "1", "--eval-sequences", "2",
                 "--num-workers", "0", "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["nc"] == 3 and config["model"]["skipco"] is True and config["model"]["emission_scale"] == 0.2
    assert config["eval"]["n_future"] == 45   # the release tests 8 -> 53
