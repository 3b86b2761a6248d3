import numpy as np
import pytest
import torch
from PIL import Image

from data import DataError, get_dataset
from data.moving_mnist import simulate_positions


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    return tmp_path_factory.mktemp("mnist_root")


def test_smmnist_train_items(data_dirs):
    ds = get_dataset("smmnist", "train", mnist=data_dirs.mnist, seq_len=30, num_sequences=10)
    x, labels = ds[0]
    assert x.shape == (30, 1, 64, 64) and 0 <= x.min() and x.max() <= 1
    assert set(labels) == {"digit0", "digit1"} and all(0 <= v <= 9 for v in labels.values())
    again = ds[0][0]
    assert torch.equal(x, again)  # reproducible within an epoch ...
    ds.epoch = 1
    assert not torch.equal(x, ds[0][0])  # ... and new in the next one


def test_smmnist_test_set_is_fixed_and_cached(data_dirs, mnist_root):
    a = get_dataset("smmnist", "test", root=mnist_root, mnist=data_dirs.mnist, num_sequences=20)
    files = list(mnist_root.glob("smmnist_test_*.npz"))
    assert len(files) == 1
    b = get_dataset("smmnist", "test", root=mnist_root, mnist="/nonexistent.npz", num_sequences=20)
    assert len(a) == 20 and a[0][0].shape == (25, 1, 64, 64)
    assert torch.equal(a[7][0], b[7][0]) and a[7][1] == b[7][1]  # second load never touched MNIST


@pytest.mark.parametrize("deterministic", [True, False])
def test_bounce_rules(deterministic):
    rng = np.random.default_rng(1)
    speeds_change = False
    extremes = set()
    for _ in range(20):
        pos = simulate_positions(rng, 60, 2, deterministic).astype(int)
        # a 32-pixel digit on a 64-pixel canvas: corners 0..31, and the walls are reached
        assert pos.min() >= 0 and pos.max() <= 31
        extremes |= {int(pos.min()), int(pos.max())}
        step = np.diff(pos, axis=0)
        assert np.abs(step).max() <= 4 + 1  # speed <= 4, plus at most one pixel of clamping
        # away from the walls (where clamping shortens a step) the speed along an axis is
        # constant for the deterministic variant and redrawn at bounces for the stochastic one
        free = (pos[:-1] > 0) & (pos[:-1] < 31) & (pos[1:] > 0) & (pos[1:] < 31)
        for d in range(2):
            for a in range(2):
                speeds = set(np.abs(step[free[:, d, a], d, a]).tolist())
                if deterministic:
                    assert len(speeds) <= 1
                speeds_change |= len(speeds) > 1
    assert speeds_change != deterministic
    assert extremes >= {0, 31}


def test_smmnist_val_is_fixed_and_built_from_held_out_training_digits(data_dirs, mnist_root):
    from data.moving_mnist import MovingMNIST, resize_digits
    val = get_dataset("smmnist", "val", root=mnist_root, mnist=data_dirs.mnist, num_sequences=30, seq_len=4)
    assert len(val) == 30 and list(mnist_root.glob("smmnist_val_*.npz"))
    assert torch.equal(val[3][0], get_dataset("smmnist", "val", root=mnist_root, mnist="/nonexistent.npz",
                                              num_sequences=30, seq_len=4)[3][0])
    held, _ = MovingMNIST._digits_of("val", data_dirs.mnist, None, False)
    used, _ = MovingMNIST._digits_of("train", data_dirs.mnist, None, False)
    assert len(held) == 3000 and len(used) == 57000
    held_keys = {d.tobytes() for d in resize_digits(held)}
    assert all(d.tobytes() in held_keys for d in val._digits.reshape(-1, 32, 32))
    train_keys = {d.tobytes() for d in used}
    assert not any(d.tobytes() in train_keys for d in held)  # no held-out digit image is drawn in training


def test_pendulum_val_is_its_own_set_and_trainval_is_train_then_val():
    val, train = get_dataset("pendulum", "val", num_sequences=3), get_dataset("pendulum", "train", num_sequences=3)
    both = get_dataset("pendulum", "trainval", num_sequences=3)
    assert len(both) == 3 + 1000
    assert torch.equal(both[1][0], train[1][0]) and torch.equal(both[3][0], val[0][0])
    assert not torch.equal(val[0][0], train[0][0])


def test_mmnist_single_digit(data_dirs, mnist_root):
    ds = get_dataset("mmnist", "test", root=mnist_root, mnist=data_dirs.mnist, num_digits=1,
                     num_sequences=5, seq_len=12)
    x, labels = ds[2]
    assert x.shape == (12, 1, 64, 64) and set(labels) == {"digit0"}
    assert (x.sum((1, 2, 3)) > 20).all()  # a digit is visible in every frame


def test_mnist_bad_paths(tmp_path):
    with pytest.raises(DataError, match="--mnist"):
        get_dataset("smmnist", mnist=tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read MNIST"):
        get_dataset("smmnist", mnist=bad)


def test_pendulum_is_deterministic_labelled_and_damped():
    ds = get_dataset("pendulum", "train", seq_len=60, num_sequences=50)
    x, labels = ds[3]
    assert torch.equal(x, ds[3][0]) and x.shape == (60, 1, 64, 64)
    assert set(labels) == {"length", "angle", "damping"}
    from data.pendulum import DAMPINGS, simulate
    swing = simulate(20.0, 1.0, DAMPINGS[1], 200)
    assert np.abs(swing[100:]).max() < 0.8 * np.abs(swing[:100]).max()
    assert not torch.equal(get_dataset("pendulum", "test", num_sequences=5)[0][0],
                           get_dataset("pendulum", "train", num_sequences=5)[0][0])


def _write_video(folder, n_frames, size=64, mode="L"):
    folder.mkdir(parents=True)
    for k in range(n_frames):  # frame k has brightness 10*k: natural order is checkable
        Image.new(mode, (size, size), 10 * k if mode == "L" else (10 * k,) * 3).save(folder / f"image-{k}.png")


def test_kth_natural_order_split_by_person_and_errors(tmp_path):
    # persons 1-20 are training data (SVG / SRVP), 21-25 test
    for person, action in [(1, "boxing"), (3, "walking"), (20, "handwaving"), (21, "running")]:
        _write_video(tmp_path / "kth" / action / f"person{person:02d}_{action}_d1", 12)
    splits = {s: get_dataset("kth", s, kth=tmp_path / "kth", seq_len=12) for s in ("train", "val", "test", "trainval")}
    persons = {s: sorted(lab["person"] for lab in ds.labels) for s, ds in splits.items()}
    assert persons["test"] == [21] and persons["trainval"] == [1, 3, 20]
    assert len(persons["val"]) == 1 and sorted(persons["train"] + persons["val"]) == [1, 3, 20]
    test = splits["test"]
    x, labels = test[0]
    assert labels == {"action": 4, "person": 21} and x.shape == (12, 1, 64, 64)
    assert torch.allclose(x[:, 0, 0, 0] * 255, torch.arange(12.0) * 10)  # image-2 before image-10
    with pytest.raises(DataError, match="seq_len=13"):
        get_dataset("kth", "train", kth=tmp_path / "kth", seq_len=13)
    with pytest.raises(DataError, match="--kth"):
        get_dataset("kth", kth=tmp_path / "nothing")
    (tmp_path / "kth" / "running" / "person21_running_d1" / "image-5.png").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(DataError, match="truncated"):
        get_dataset("kth", "test", kth=tmp_path / "kth", seq_len=12)[0]


def test_bair_frame_folders(tmp_path):
    for split, n in [("train", 40), ("test", 1)]:
        for k in range(n):
            _write_video(tmp_path / "bair" / split / f"traj_{k}" / "0", 30 if split == "test" else 2, mode="RGB")
    ds = get_dataset("bair", "test", bair=tmp_path / "bair", seq_len=30)
    x, _ = ds[0]
    assert len(ds) == 1 and x.shape == (30, 3, 64, 64)
    # val: a seeded 5% of the train/ trajectories, disjoint from the rest
    folders = {s: set(map(str, get_dataset("bair", s, bair=tmp_path / "bair", seq_len=2).videos))
               for s in ("train", "val", "trainval")}
    assert len(folders["val"]) == 2 and len(folders["train"]) == 38
    assert not folders["train"] & folders["val"] and folders["train"] | folders["val"] == folders["trainval"]
    with pytest.raises(DataError, match="--bair"):
        get_dataset("bair", bair=tmp_path / "missing")


def test_mug_npz_crop_resize_relabel_and_subject_split(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    videos = rng.integers(0, 255, size=(n, 6, 112, 112, 3), dtype=np.uint8)
    labels = np.stack([np.arange(n) % 10, np.arange(n) % 9], 1)  # 10 subjects, 9 actions
    names = np.array(["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise", "x", "y"])
    np.savez(tmp_path / "mug.npz", videos=videos, labels=labels, action_names=names)
    train = get_dataset("mug", "train", mug=tmp_path / "mug.npz")
    test = get_dataset("mug", "test", mug=tmp_path / "mug.npz")
    val = get_dataset("mug", "val", mug=tmp_path / "mug.npz")
    subjects = {s: set(d.labels[:, 0]) for s, d in (("train", train), ("test", test), ("val", val))}
    assert len(subjects["test"]) == 2 and len(subjects["val"]) == 1 and len(subjects["train"]) == 7
    assert not subjects["train"] & subjects["test"] and not subjects["val"] & (subjects["train"] | subjects["test"])
    x, lab = train[0]
    assert x.shape == (6, 3, 64, 64) and 0 <= x.min() and x.max() <= 1
    kept = [lab["action"] for lab in (train[i][1] for i in range(len(train)))]
    assert set(kept) <= set(range(6))
    assert len(train) + len(val) + len(test) == sum(1 for a in labels[:, 1] if a in (0, 1, 2, 3, 5, 6))
    sad = next(i for i in range(len(train)) if train.labels[i, 1] == 5)
    assert train[sad][1]["action"] == 4  # 'sadness' relabelled after dropping 'neutral'
    np.savez(tmp_path / "nonames.npz", videos=videos, labels=labels)
    with pytest.raises(DataError, match="mug_actions"):
        get_dataset("mug", mug=tmp_path / "nonames.npz")
    with pytest.raises(DataError, match="--mug"):
        get_dataset("mug", mug=tmp_path / "absent.npz")
