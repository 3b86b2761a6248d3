"""``--dataset videos``: the user's own video files, on videos these tests generate (moving shapes
with labels for shape, colour and direction): decoding once, splits by video, labels, bad input,
and every model through the runner and the evaluation, with and without labels."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

from data import DataError, get_dataset
from data.shape_videos import shape_frames, write_shape_videos, write_video
from data.videos import find_sources
from tests_helpers import SVG_TINY, run_main, tiny_run_flags

N_VIDEOS, N_FRAMES = 12, 24


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """A folder of 12 labelled .mp4 videos of 24 frames (96 x 72 at 30 fps)."""
    folder = tmp_path_factory.mktemp("videos") / "clips"
    write_shape_videos(folder, N_VIDEOS, N_FRAMES)
    return folder


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """One data root (decode cache) for the tests that read the shared videos as they are."""
    return tmp_path_factory.mktemp("root")


def copy_of(videos, tmp_path, labels=True):
    folder = tmp_path / "clips"
    shutil.copytree(videos, folder)
    if not labels:
        (folder / "labels.csv").unlink()
        (folder / "labels.json").unlink()
    return folder


def dataset(folder, split="train", root=None, **options):
    return get_dataset("videos", split, root or folder.parent / "root", videos=folder, **options)


# ---------------------------------------------------------------- the dataset


def test_clips_frames_and_labels(videos, root):
    train = dataset(videos, "train", root, seq_len=8)
    x, labels = train[0]
    assert x.shape == (8, 3, 64, 64) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert set(labels) == {"shape", "colour", "direction"}
    assert train.judge_factors == {"dynamic": {"direction": 4}, "static": {"shape": 3, "colour": 3}}
    test = dataset(videos, "test", root, seq_len=8)
    # val/test items are each video's consecutive clips: 24 frames give 3 clips of 8, the same each time
    assert len(test) == 3 * len(test.names) and torch.equal(test[0][0], test[0][0])
    grey = dataset(videos, "test", root, seq_len=8, channels=1)
    assert grey[0][0].shape == (8, 1, 64, 64)


def test_the_split_is_by_video_and_seeded(videos, root):
    splits = {s: dataset(videos, s, root, seq_len=8) for s in ("train", "val", "test", "trainval")}
    names = {s: set(ds.names) for s, ds in splits.items()}
    assert not names["train"] & names["val"] and not names["train"] & names["test"] and not names["val"] & names["test"]
    assert names["train"] | names["val"] | names["test"] == set(find_sources(videos))
    assert names["trainval"] == names["train"] | names["val"] and names["val"] and names["test"]
    # every clip of a split comes from that split's videos
    assert {name for name, _ in splits["test"].clips} == names["test"]
    assert dataset(videos, "test", root, seq_len=8).names == splits["test"].names   # seeded
    other = dataset(videos, "test", root, seq_len=8, split_seed=5, test_fraction=0.25)
    assert len(other.names) == 3 and other.split_of != splits["test"].split_of


def test_pairs_are_two_clips_of_one_identity(videos, root):
    """VDSM's stage-1 pairs: the second clip has the first's static labels and other dynamic ones
    when the split has such a video, else it is another clip of the same video."""
    ds = dataset(videos, "trainval", root, seq_len=4, pair_actions=True)
    assert ds.partners, "the generated videos repeat a shape and colour with another direction"
    for i in range(len(ds)):
        x, labels = ds[i]
        assert x.shape[0] == 8
        name = ds.clips[i][0]
        if name in ds.partners:
            assert (labels["shape"], labels["colour"]) == (labels["shape_b"], labels["colour_b"])
            assert labels["direction"] != labels["direction_b"]
        else:
            assert all(labels[k] == labels[f"{k}_b"] for k in ("shape", "colour", "direction"))
    ds.epoch = 3   # item randomness follows (seed, epoch, index): the same item again, another epoch differs
    assert torch.equal(ds[0][0], ds[0][0])


def test_a_split_file_names_each_videos_split(videos, tmp_path):
    folder = copy_of(videos, tmp_path)
    names = list(find_sources(folder))
    rows = ["video,split"] + [f"{n},{'test' if k < 2 else 'val' if k < 4 else 'train'}" for k, n in enumerate(names)]
    (folder / "split.csv").write_text("\n".join(rows) + "\n")
    assert dataset(folder, "test", seq_len=8).names == names[:2]
    (folder / "split.csv").write_text("\n".join(rows + ["ghost.mp4,train"]) + "\n")
    with pytest.raises(DataError, match="ghost.mp4"):
        dataset(folder, "test", seq_len=8)
    (folder / "split.csv").write_text("\n".join(rows[:-1]) + "\n")
    with pytest.raises(DataError, match="lacks 1 of the videos"):
        dataset(folder, "test", seq_len=8)


def test_decoded_once_then_read_from_the_cache(videos, tmp_path, monkeypatch):
    import data.videos as module

    folder, root = copy_of(videos, tmp_path), tmp_path / "root"
    first = dataset(folder, "test", root, seq_len=8)[0][0]
    cache = {json.loads(p.read_text())["source"]: p.with_suffix(".npy") for p in (root / "videos").glob("*.json")}
    assert len(cache) == N_VIDEOS

    def no_decoding(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(module, "_decode", no_decoding)
    assert torch.equal(dataset(folder, "test", root, seq_len=8)[0][0], first)
    monkeypatch.undo()
    # an edited video is read again; a damaged cache file is rebuilt, never trusted
    decoded = []
    real = module._decode
    monkeypatch.setattr(module, "_decode", lambda *a: decoded.append(a[0].name) or real(*a))
    module._VERIFIED.clear()
    os.utime(folder / "video003.mp4", ns=(1, 10 ** 18))
    with open(cache[str((folder / "video000.mp4").resolve())], "r+b") as f:
        f.seek(-100, 2)
        f.write(b"\x07" * 100)
    again = dataset(folder, "test", root, seq_len=8)
    assert sorted(decoded) == ["video000.mp4", "video003.mp4"]
    assert torch.equal(again[0][0], first)


def test_stride_and_frame_rate(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    for k, fps in enumerate((30, 15, 30)):
        write_video(folder / f"v{k}.mp4", shape_frames("disc", "red", "right", 60 if fps == 30 else 30), fps)
    with pytest.raises(DataError, match="frame rates differ .*--fps"):
        dataset(folder, seq_len=4)
    resampled = dataset(folder, "trainval", seq_len=4, fps=15, split_file=None)
    assert {len(p) for p in resampled._positions.values()} == {30}
    strided = dataset(folder, "trainval", seq_len=4, fps=15, frame_stride=3)
    assert {len(p) for p in strided._positions.values()} == {10}
    with pytest.raises(DataError, match="fewer than --seq-len 12: lower --seq-len or --frame-stride"):
        dataset(folder, "test", seq_len=12, fps=15, frame_stride=3)


def test_square_crop_and_pad(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    frames = np.zeros((6, 40, 120, 3), np.uint8)
    frames[:, :, :40] = 255   # a white left third: cropped away, or kept beside black padding
    for k in range(3):
        write_video(folder / f"v{k}.mp4", frames)
    crop = dataset(folder, "test", seq_len=2)[0][0]
    pad = dataset(folder, "test", seq_len=2, fit="pad")[0][0]
    assert crop.mean() < 0.05
    assert pad[:, :, :16].mean() < 0.05 and pad[:, :, 28:36, :16].mean() > 0.8   # black bands above and below


def test_labels_must_match_the_videos_and_be_declared(videos, tmp_path):
    folder = copy_of(videos, tmp_path)
    rows = (folder / "labels.csv").read_text().splitlines()
    (folder / "labels.json").unlink()
    with pytest.raises(DataError, match="not declared static or dynamic: pass --static-factors"):
        dataset(folder, seq_len=8)
    ds = dataset(folder, seq_len=8, static_factors="shape,colour", dynamic_factors="direction")
    assert ds.judge_factors["dynamic"] == {"direction": 4}
    with pytest.raises(DataError, match="'speed' is not a column"):
        dataset(folder, seq_len=8, static_factors="shape,colour", dynamic_factors="direction,speed")
    (folder / "labels.csv").write_text("\n".join(rows[:-1]) + "\n")
    with pytest.raises(DataError, match="lacks 1 of the videos, e.g. 'video011.mp4'"):
        dataset(folder, seq_len=8, static_factors="shape,colour", dynamic_factors="direction")
    (folder / "labels.csv").write_text("\n".join(rows + ["other.mp4,disc,red,up"]) + "\n")
    with pytest.raises(DataError, match="'other.mp4'"):
        dataset(folder, seq_len=8, static_factors="shape,colour", dynamic_factors="direction")


def test_unreadable_files_are_refused_or_skipped(videos, tmp_path):
    folder = copy_of(videos, tmp_path)
    (folder / "broken.mp4").write_bytes(b"not a video")
    (folder / "labels.csv").write_text((folder / "labels.csv").read_text() + "broken.mp4,disc,red,up\n")
    with pytest.raises(DataError, match="cannot read video .*broken.mp4.*--skip-unreadable"):
        dataset(folder, seq_len=8)
    ds = dataset(folder, seq_len=8, skip_unreadable=True)
    assert ds.skipped == ["broken.mp4"] and "broken.mp4" not in ds.split_of


def test_frame_folders_and_gifs_are_videos_too(tmp_path):
    from PIL import Image

    folder = tmp_path / "clips"
    for k in range(2):
        frames_dir = folder / f"take{k}"
        frames_dir.mkdir(parents=True)
        for t, frame in enumerate(shape_frames("square", "blue", "down", 9)):
            Image.fromarray(frame).save(frames_dir / f"{t}.png")
    write_video(folder / "loop.gif", shape_frames("disc", "green", "left", 9))
    assert set(find_sources(folder)) == {"take0", "take1", "loop.gif"}
    assert len(dataset(folder, "trainval", seq_len=8)) + len(dataset(folder, "test", seq_len=8)) == 3


# ---------------------------------------------------------------- the commands


def test_bad_input_is_one_line_before_a_run_folder(videos, root, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "run"
    cases = [(["--videos", empty], "no videos under"),
             (["--videos", videos, "--seq-len", "40"], "fewer than --seq-len 40"),
             (["--videos", videos, "--channels", "2"], "--channels 2 must be 1"),
             (["--videos", videos, "--split-file", tmp_path / "none.csv"], "split file"),
             (["--videos", videos, "--labels", tmp_path / "none.csv"], "labels file")]
    for flags, message in cases:
        code, _, err = run_main("run", ["--dataset", "videos", "--data-root", root, "--out", out, *flags,
                                        *tiny_run_flags()])
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()
    code, _, err = run_main("run", ["--dataset", "sprites", "--channels", "1", "--out", out])
    assert code == 2 and "--channels only apply to --dataset videos" in err


def test_vdsm_trains_and_evaluates_with_labels_and_without(videos, root, tmp_path):
    labelled, run = videos, tmp_path / "run"
    flags = ["--dataset", "videos", "--data-root", root, "--seq-len", "8", *tiny_run_flags(steps=None),
             "--stage1-steps", "2", "--stage2-steps", "2"]
    code, out, err = run_main("run", [*flags, "--videos", labelled, "--out", run, "--channels", "1"])
    assert code == 0, err
    assert "videos split by video (seeded: --split-seed 0" in out
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["nc"] == 1 and config["changed_from_preset"]["model.nc"] == {"preset": 3, "run": 1}
    assert sorted(set(config["data_options"]["split_of"].values())) == ["test", "train", "val"]
    code, _, err = run_main("run", ["--dataset", "videos", "--resume", run, "--channels", "3"])
    assert code == 2 and "reads its data options from its config.json" in err
    # evaluate reads the folder, the split and the channels from config.json: no data flags
    code, _, err = run_main("evaluate", ["--run", run, "--data-root", root, "--judge-steps", "5",
                                         "--repeats", "1", "--batch-size", "3", "--no-progress"])
    assert code == 0, err
    judged = json.loads((run / "metrics.json").read_text())["judge_protocol"]
    assert judged["dynamic_heads"] == ["direction"] and set(judged["static_heads"]) == {"shape", "colour"}

    unlabelled = copy_of(videos, tmp_path, labels=False)
    run2 = tmp_path / "run2"
    assert run_main("run", [*flags, "--videos", unlabelled, "--out", run2])[0] == 0
    code, out, err = run_main("evaluate", ["--run", run2, "--data-root", root, "--no-progress"])
    assert code == 0, err
    result = json.loads((run2 / "metrics.json").read_text())["unlabelled"]
    assert "labels.csv" in result["skipped"]["judge_protocols"] and "prediction" in result["skipped"]
    assert np.isfinite(result["frechet_prior_samples"]["value"]) and result["recon_mse_per_pixel"] > 0
    assert (run2 / "test_pictures" / "identity_swap.png").is_file()
    code, _, err = run_main("damage", ["--run", run2, "--data-root", root, "--no-progress"])
    assert code == 2 and "has no labels" in err


@pytest.mark.parametrize("model, flags", [
    ("svg-lp", SVG_TINY),
    ("srvp", ["--nf", "4", "--nh", "8", "--ny", "3", "--z-dim", "2", "--content-dim", "6", "--rnn-dim", "5",
              "--y-hidden", "7", "--mlp-hidden", "9", "--batch-size", "2", "--n-future", "3", "--steps", "2",
              "--eval-samples", "2", "--eval-sequences", "3", "--num-workers", "0", "--no-progress"]),
    ("dsa", ["--f-dim", "4", "--z-dim", "3", "--g-dim", "8", "--nf", "4", "--rnn-dim", "8", "--batch-size", "2",
             "--steps", "2", "--seq-len", "6", "--eval-sequences", "4", "--num-workers", "0", "--no-progress"]),
])
def test_every_model_trains_and_evaluates_on_videos(model, flags, videos, root, tmp_path, alexnet_features):
    run = tmp_path / "run"
    code, _, err = run_main("run", ["--dataset", "videos", "--videos", videos, "--model", model, "--data-root", root,
                                    "--out", run, *flags])
    assert code == 0, err
    extra = (["--max-sequences", "2", "--samples", "2", "--n-future", "3", "--lpips-backbone", alexnet_features]
             if model != "dsa" else ["--judge-steps", "5", "--repeats", "1", "--batch-size", "3"])
    code, _, err = run_main("evaluate", ["--run", run, "--data-root", root, "--no-progress", *extra])
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert ("prediction" in metrics) != (model == "dsa") and ("judge_protocol" in metrics) == (model == "dsa")


def test_the_judge_protocols_score_kept_dynamics_above_chance(videos, root):
    """A stand-in model that keeps each real sequence (its dynamics and its identity) scores the
    dynamic factor above chance with the judge trained on the videos."""
    from models.spec import StaticLatentRun
    from vdsm.metrics.judge import load_or_train_judge
    from vdsm.metrics.protocol import judge_protocol

    options = {"videos": videos, "seq_len": 8}
    judge, accuracy = load_or_train_judge("videos", root=root, steps=80, accuracy_on=("trainval",),
                                          **options)
    assert accuracy["trainval"]["direction"] > 0.5   # 4 directions: chance is 0.25

    class KeepsEverything(StaticLatentRun):   # the judge protocols' interface, without networks
        def __init__(self):
            pass

        def eval(self):
            return self

        def fix_dynamics(self, x):
            return x

        def fix_identity(self, x):
            return x

        def reconstruct(self, x):
            return x

        def transfer_action(self, action_x, identity_x):
            return action_x

        def generate(self, batch_size, seq_len):
            return torch.rand(batch_size, seq_len, 3, 64, 64)

    sequences = get_dataset("videos", "trainval", root, **options)
    result = judge_protocol(KeepsEverything(), judge, sequences, batch_size=16, repeats=1)
    assert result["fix_dynamics"]["heads"]["direction"]["accuracy"]["mean"] > 0.5


def test_the_data_bench_row(tmp_path):
    from experiments.bench import bench_videos

    row = bench_videos(tmp_path, n_videos=3, seconds=1.0, fps=10, size=(48, 32), seq_len=4, batch_size=2,
                       workers=(0,), batches=2)
    assert row["frames"] == 30 and row["decode_seconds"] > 0 and row["reopen_seconds"] > 0
    assert row["cache_bytes"] >= 30 * 64 * 64 * 3 and row["loading"][0]["sequences_per_second"] > 0
