import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from data import DataError, get_dataset
from data.moving_mnist import simulate_positions
from data.srvp_trajectories import release_set_plan, trajectory

# The SRVP release's stored Moving MNIST test sets (github.com/edouardelasalles/srvp at 05661fa,
# preprocessing/mmnist/make_test_set.py with --seq_len 25, and --deterministic --seq_len 100, run on
# 2026-12-03 on the MNIST test digits of ../shared/data/mnist written as torchvision's MNIST files):
# SHA-256 of its top-left corners (latents[..., :2] as int16 [N, T, 2 digits, 2]), of its digit
# images (uint8 [5000, 2, 28, 28]) and of the uint8 frames of its first 16 sequences [16, T, 64, 64].
RELEASE_SETS = {
    False: (25, "acb534ec347bdf427c827c743d292de39d994eab2f83834789843edd9c860711",
            "cc35665e125b87958e70444cd6ca325d8046b89aaafff38f3718553975a6331a"),
    True: (100, "0e8578e31156f78a2aafe73c14fea53438e8a97e5053d10ba89d199e71e40732",
           "df94699d78b3772bebd0c80010618d77dfd8a39424d6da7531362afc7ee80b5c"),
}
RELEASE_DIGITS = "b4e23e71b2fbcf4e9ecfef6857e15fd7d8b4d3e80f021d285256d4a889ff8a73"


def _sha(array):
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    return tmp_path_factory.mktemp("mnist_root")


@pytest.mark.parametrize("deterministic", [False, True])
def test_the_test_set_is_the_srvp_releases_sequence_for_sequence(data_dirs, mnist_root, deterministic):
    seq_len, corners_sha, frames_sha = RELEASE_SETS[deterministic]
    test = get_dataset("mmnist" if deterministic else "smmnist", "test", root=mnist_root, mnist=data_dirs.mnist)
    assert len(test) == 5000 and test.seq_len == seq_len
    assert _sha(test._positions.astype(np.int16)) == corners_sha
    assert _sha(test._digits.astype(np.uint8)) == RELEASE_DIGITS
    frames = torch.stack([test[i][0] for i in range(16)])          # [16, T, 1, 64, 64] in [0, 1]
    assert _sha((frames[:, :, 0] * 255).round().to(torch.uint8).numpy()) == frames_sha
    assert test[0][1] == {"digit0": int(test._labels[0, 0]), "digit1": int(test._labels[0, 1])}
    first = get_dataset("mmnist" if deterministic else "smmnist", "test", root=mnist_root, mnist="/nonexistent.npz",
                        num_sequences=10)
    assert len(first) == 10 and torch.equal(first[9][0], test[9][0])  # its first N, from the cache


def test_srvp_deterministic_sets_of_any_length_are_prefixes_of_the_100_frame_set():
    """No random number is drawn at a deterministic bounce: the T-frame set is the first T frames."""
    index, corners = release_set_plan(200, 100, True)
    short_index, short = release_set_plan(200, 25, True)
    assert np.array_equal(index, short_index) and np.array_equal(corners[:, :25], short)
    assert not np.array_equal(release_set_plan(200, 25, False)[1], short)   # the stochastic one redraws


@pytest.mark.parametrize("deterministic", [False, True])
def test_srvp_trajectories_follow_the_release_rules(deterministic):
    rng = np.random.RandomState(3)
    steps, corners_seen = set(), set()
    for _ in range(200):
        corners = trajectory(rng, 40, deterministic)
        assert corners.min() >= 0 and corners.max() <= 36      # a 28-pixel digit in a 64-pixel frame
        corners_seen |= {int(corners.min()), int(corners.max())}
        step = np.diff(corners, axis=0)
        assert np.abs(step).max() <= 4 + 1                      # speed <= 4 (plus rounding after a bounce)
        free = (corners[:-1] > 4) & (corners[:-1] < 32)          # far from the borders: no bounce in the step
        for a in range(2):
            speeds = set(step[free[:, a], a].tolist())
            steps.add(len(speeds))
            if deterministic:
                assert len(speeds) <= 2                         # one speed, reversed at most once
    assert corners_seen >= {0, 36}
    assert (max(steps) > 2) != deterministic                    # the stochastic version redraws speeds


@pytest.mark.parametrize("name", ["smmnist", "smmnist-svg", "mmnist"])
def test_smmnist_train_items(data_dirs, name):
    ds = get_dataset(name, "train", mnist=data_dirs.mnist, seq_len=30, num_sequences=10)
    x, labels = ds[0]
    assert x.shape == (30, 1, 64, 64) and 0 <= x.min() and x.max() <= 1
    assert set(labels) == {"digit0", "digit1"} and all(0 <= v <= 9 for v in labels.values())
    again = ds[0][0]
    assert torch.equal(x, again)  # reproducible within an epoch ...
    ds.epoch = 1
    assert not torch.equal(x, ds[0][0])  # ... and new in the next one


def test_svg_style_test_set_is_fixed_and_cached(data_dirs, mnist_root):
    a = get_dataset("smmnist-svg", "test", root=mnist_root, mnist=data_dirs.mnist, num_sequences=20)
    files = list(mnist_root.glob("smmnist-svg_test_*.npz"))
    assert len(files) == 1
    b = get_dataset("smmnist-svg", "test", root=mnist_root, mnist="/nonexistent.npz", num_sequences=20)
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


@pytest.mark.parametrize("name,size", [("smmnist", 28), ("smmnist-svg", 32)])
def test_smmnist_val_is_fixed_and_built_from_held_out_training_digits(data_dirs, mnist_root, name, size):
    from data.moving_mnist import MovingMNIST, resize_digits
    val = get_dataset(name, "val", root=mnist_root, mnist=data_dirs.mnist, num_sequences=30, seq_len=4)
    assert len(val) == 30 and list(mnist_root.glob(f"{name}_val_*.npz"))
    assert torch.equal(val[3][0], get_dataset(name, "val", root=mnist_root, mnist="/nonexistent.npz",
                                              num_sequences=30, seq_len=4)[3][0])
    held, _ = MovingMNIST._digits_of("val", data_dirs.mnist, None, False)
    used, _ = MovingMNIST._digits_of("train", data_dirs.mnist, None, False)
    assert len(held) == 3000 and len(used) == 57000
    held_keys = {d.tobytes() for d in (resize_digits(held) if size == 32 else held)}
    assert all(d.tobytes() in held_keys for d in val._digits.reshape(-1, size, size))
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
