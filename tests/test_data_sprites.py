import numpy as np
import pytest
import torch
from PIL import Image

import data
from data import DataError, get_dataset
from data.sprites import DIRECTIONS


def sheet(folder, sub, k):
    return np.asarray(Image.open(folder / sub / f"{k}.png").convert("RGBA")).astype(np.float64)


def cell(arr, row, col):
    return arr[row * 64:(row + 1) * 64, col * 64:(col + 1) * 64]


def expected_frame(sheets, row, col, background_alpha):
    """Straight-alpha 'over' compositing computed independently of the library (float math)."""
    rgb = np.zeros((64, 64, 3))
    alpha = np.full((64, 64, 1), background_alpha / 255.0)
    for s in sheets:
        c = cell(s, row, col)
        a = c[..., 3:] / 255.0
        out_a = a + alpha * (1 - a)
        rgb = np.where(out_a > 0, (c[..., :3] * a + rgb * alpha * (1 - a)) / np.maximum(out_a, 1e-12), 0)
        alpha = out_a
    return rgb


@pytest.fixture(scope="module")
def sprites_train(data_dirs):
    return get_dataset("sprites", "train", sprites_layers=data_dirs.sprites)


def test_split_sizes_and_disjoint_characters(data_dirs, sprites_train):
    splits = {s: get_dataset("sprites", s, sprites_layers=data_dirs.sprites) for s in ("val", "test", "trainval")}
    assert len(sprites_train) == 8100 and len(splits["val"]) == 900 and len(splits["test"]) == 2664
    assert len(splits["trainval"]) == 9000  # the benchmark's training set
    order = np.random.RandomState(423).permutation(1296)
    assert list(sprites_train.characters) == list(order[:900])        # the documented carve-out
    assert list(splits["val"].characters) == list(order[900:1000])
    assert set(splits["trainval"].characters) == set(order[:1000])
    assert set(splits["test"].characters) == set(order[1000:])


@pytest.mark.parametrize("index", [0, 4, 8, 1234, 8099])
def test_labels_decode_character_and_action(sprites_train, index):
    _, labels = sprites_train[index]
    c = labels["character"]
    assert (labels["body"], labels["bottom"], labels["top"], labels["hair"]) == (
        c // 216, c // 36 % 6, c // 6 % 6, c % 6)
    assert labels["action"] == index % 9
    assert labels["action"] == labels["action_type"] * 3 + labels["direction"]


# (sequence index, frame, sheet row, sheet column): walk front frame 0 is column 8,
# spellcast left frame 6 is column 4 and frame 7 column 6, slash right frame 7 is column 0.
CELLS = [(0, 0, 10, 8), (0, 3, 10, 3), (4, 6, 1, 4), (4, 7, 1, 6), (8, 7, 15, 0), (6, 2, 14, 2), (7, 5, 13, 5)]


@pytest.mark.parametrize("sequence,frame,row,col", CELLS)
def test_frames_match_layer_sheets(data_dirs, sprites_train, sequence, frame, row, col):
    # a character wearing topwear 3, whose sheet has semi-transparent pixels in these cells
    char_pos = next(k for k, c in enumerate(sprites_train.characters) if c // 6 % 6 == 3)
    frames, labels = sprites_train[char_pos * 9 + sequence]
    f = data_dirs.sprites
    sheets = [sheet(f, "body", labels["body"]), sheet(f, "bottomwear", labels["bottom"]),
              sheet(f, "topwear", labels["top"]), sheet(f, "hair", labels["hair"]), sheet(f, "shoes", 1)]
    want = expected_frame(sheets, row, col, background_alpha=255)
    got = frames[frame].permute(1, 2, 0).numpy() * 256  # 1/256 scaling
    assert frames.shape == (8, 3, 64, 64) and frames.dtype == torch.float32
    assert np.abs(got - want).max() <= 1.0  # integer rounding of PIL's compositor
    assert (got > 0).any()


def test_pixel_scale_is_one_over_256(sprites_train):
    frames, _ = sprites_train[10]
    levels = frames * 256
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert frames.max() <= 255 / 256 and frames.min() >= 0


def test_direction_order_front_left_right(sprites_train):
    assert DIRECTIONS == ("front", "left", "right")
    _, labels = sprites_train[2]  # walk, right
    assert (labels["action_type"], labels["direction"]) == (0, 2)


def test_pair_actions_concatenates_two_actions_of_one_character(data_dirs):
    ds = get_dataset("sprites", sprites_layers=data_dirs.sprites, pair_actions=True, seq_len=6)
    plain = get_dataset("sprites", sprites_layers=data_dirs.sprites, seq_len=6)
    for i in (0, 17, 300):
        frames, labels = ds[i]
        assert frames.shape == (12, 3, 64, 64)
        assert torch.equal(frames[:6], plain[i][0])
        assert labels["action_b"] != labels["action"]
        j = i - labels["action"] + labels["action_b"]
        assert torch.equal(frames[6:], plain[j][0])


def test_random_window_keeps_consecutive_frames_from_varying_starts(data_dirs):
    full = get_dataset("sprites", sprites_layers=data_dirs.sprites)
    ds = get_dataset("sprites", sprites_layers=data_dirs.sprites, seq_len=3, random_window=True,
                     pair_actions=True)
    indices, starts = range(0, 90, 9), set()
    for i in indices:
        frames, labels = ds[i]
        assert frames.shape == (6, 3, 64, 64)
        for half, seq in ((frames[:3], i), (frames[3:], i - labels["action"] + labels["action_b"])):
            whole = full[seq][0]
            matches = [s for s in range(6) if torch.equal(whole[s:s + 3], half)]
            assert matches, "a window is not 3 consecutive frames of its sequence"
            starts.add(matches[0])
    assert len(starts) > 2                 # windows do not all start at frame 0
    first = [ds[i][0] for i in indices]
    assert all(torch.equal(ds[i][0], f) for i, f in zip(indices, first))  # fixed per (seed, epoch, index)
    ds.epoch = 1
    assert not all(torch.equal(ds[i][0], f) for i, f in zip(indices, first))


def test_dsa_variant_split_labels_and_slash_rows(data_dirs):
    train = get_dataset("sprites-dsa", "train", lpc_layers=data_dirs.lpc)
    test = get_dataset("sprites-dsa", "test", lpc_layers=data_dirs.lpc)
    val = get_dataset("sprites-dsa", "val", lpc_layers=data_dirs.lpc)
    assert len(train.characters) + len(val.characters) + len(test.characters) == 840
    assert (len(test.characters), len(val.characters)) == (84, 76)
    assert len(set(train.characters) | set(val.characters) | set(test.characters)) == 840
    frames, labels = train[9 * 5 + 7]
    assert labels["sequence"] == 7 and labels["action"] == 2
    assert set(labels) >= {"body", "shirt", "pants", "hair", "action", "sequence"}
    corrected = get_dataset("sprites-dsa", "train", lpc_layers=data_dirs.lpc, corrected_slash=True)
    # DSA's slash sequence 6 is row 14, which is the corrected order's sequence 7
    assert torch.equal(train[9 * 5 + 6][0], corrected[9 * 5 + 7][0])
    assert not torch.equal(train[9 * 5 + 8][0], corrected[9 * 5 + 8][0])
    # a cell against the sheets: body, pants, shirt, hair over a transparent canvas, 1/255
    f = data_dirs.lpc
    from data.sprites_dsa import BODIES, HAIRS, PANTS, SHIRTS
    sheets = [sheet(f, "body", BODIES[labels["body"]]), sheet(f, "pants", PANTS[labels["pants"]]),
              sheet(f, "shirt", SHIRTS[labels["shirt"]]), sheet(f, "hair", HAIRS[labels["hair"]])]
    want = expected_frame(sheets, 15, 5, background_alpha=0)
    assert np.abs(frames[6].permute(1, 2, 0).numpy() * 255 - want).max() <= 1.0


@pytest.mark.parametrize("name,options,message", [
    ("sprites", {"sprites_layers": "/nonexistent/layers"}, "--sprites-layers"),
    ("sprites-dsa", {"lpc_layers": "/nonexistent/lpc"}, "--lpc-layers"),
    ("sprites", {"seq_len": 9}, "seq_len=9"),
    ("nope", {}, "unknown dataset"),
    ("pendulum", {"split": "validation"}, "unknown split"),
])
def test_bad_input_gives_one_line_errors(data_dirs, name, options, message):
    options.setdefault("sprites_layers", data_dirs.sprites) if name == "sprites" else None
    with pytest.raises(DataError, match=message.replace("-", "\\-")) as err:
        get_dataset(name, options.pop("split", "train"), **options)
    assert "\n" not in str(err.value)


def test_truncated_layer_png_is_reported(tmp_path, data_dirs):
    import shutil
    shutil.copytree(data_dirs.sprites, tmp_path / "layers")
    png = tmp_path / "layers" / "hair" / "2.png"
    png.write_bytes(png.read_bytes()[:500])
    with pytest.raises(DataError, match="truncated"):
        data.get_dataset("sprites", sprites_layers=tmp_path / "layers")


def test_dataloader_with_workers_batches_sequences(sprites_train):
    loader = torch.utils.data.DataLoader(sprites_train, batch_size=16, num_workers=2, shuffle=True)
    x, labels = next(iter(loader))
    assert x.shape == (16, 8, 3, 64, 64) and labels["action"].shape == (16,)
