"""Sprites, the standard benchmark of Li & Mandt (ICML 2018): 1296 characters, 9000/2664 sequences.

Layers, order, frame lists, 1/256 scaling and the seeded split follow
docs/datasets.md, "How the two Sprites variants are drawn" (the recipe of YingzhenLi/Sprites).

Splits: the benchmark's 1000 training characters are ``order[:1000]`` of numpy's legacy
permutation of the 1296 characters with seed 423, its 296 test characters ``order[1000:]``.
This library holds the last 100 training characters out as "val" (``order[900:1000]``, 900
sequences): "train" is ``order[:900]`` (8100 sequences), "trainval" all 1000 (the benchmark's
9000 training sequences), "test" unchanged (2664).
"""
import numpy as np

from .common import check_split, data_root, given_folder
from .download import fetch_files
from .layered import LayeredSprites

__all__ = ["Sprites", "ACTIONS", "DIRECTIONS", "sprites_layers_dir", "SPRITES_FILES"]

#: The benchmark's actions, in its file order.
ACTIONS = ("walk", "spellcast", "slash")
#: The benchmark's directions, in its file order (nine classes: action x direction).
DIRECTIONS = ("front", "left", "right")
ATTRIBUTES = {"body": "body", "bottom": "bottomwear", "top": "topwear", "hair": "hair"}
NUM_CLASSES = 6
NUM_TRAIN_CHARACTERS = 1000
NUM_VAL_CHARACTERS = 100   # the last ones of the training characters
SPLIT_SEED = 423

# sheet row per (action, direction) and sheet column per output frame
_ROWS = {"walk": {"front": 10, "left": 9, "right": 11},
         "spellcast": {"front": 2, "left": 1, "right": 3},
         "slash": {"front": 14, "left": 13, "right": 15}}
_COLUMNS = {"walk": [8, 1, 2, 3, 4, 5, 6, 7],
            "spellcast": [0, 1, 2, 3, 4, 5, 4, 6],
            "slash": [0, 1, 2, 3, 4, 5, 4, 0]}
SEQUENCES = [(_ROWS[a][d], _COLUMNS[a]) for a in ACTIONS for d in DIRECTIONS]

BASE_URL = "https://raw.githubusercontent.com/YingzhenLi/Sprites/3ce4048c5227802bd8f1888e293fd3afdba91c0c"
#: The benchmark's layer sheets (path below ``BASE_URL``) with their sha256, checked after every download.
SPRITES_FILES = {
    "body/0.png": "27d1ac78db37c42f35a20d15c42705efc5e58d47c236cc01423879d4f797f151",
    "body/1.png": "1535e9228357b884df80f777a0d1dac10ac35e550e4d8d077105ccad014a1460",
    "body/2.png": "7c241033b4897501cb3721b6c3a9ebfa94b13db10a539edbd9bcc3e0c2a4bcb9",
    "body/3.png": "055f5aa33fc112d8444b42fce2cf50608a9fbbf2466c54ceaa46c777589a717a",
    "body/4.png": "57f3b9c510482379aba9a32fc0de7d48e9cbe3dc40f2447283547f773b77ca72",
    "body/5.png": "91e49453aeab5ebbb4fd2b48253812895dcfb4cb1829b84e24425c66de8f04ff",
    "bottomwear/0.png": "4ec356c488e272fde2d2d0d722b12a80217871e41161d43ba784caf243969ec2",
    "bottomwear/1.png": "0674312eaa4ab548f8bb31ef95d7dbd46b41555758cec51bd6c3e9fac9a0f936",
    "bottomwear/2.png": "3b464feb0d20ff34b0ca2a6d1fd00766ad86e2229c3d56ff91379fe27588a893",
    "bottomwear/3.png": "b366e84ea0519d06cf693f51e0ee2f9ac32b3132d27c75dfdc4b6f52fca072de",
    "bottomwear/4.png": "4ed7e7702e4f50b9692c0043be04b7296a108d85ea97230fb50d13c150d98771",
    "bottomwear/5.png": "a5c5e7e33f13fe5ad37b5836a5a74fb0d2094a0877c2146961b88688ff85840d",
    "topwear/0.png": "b917edcf2b3c35d51ef57a6fad67557c5edf048785bea29db09a640d09ac9a90",
    "topwear/1.png": "e33c6cb31ed1268a2c0dc73b665b1c9b9420e22baf3321880222bdb22682368b",
    "topwear/2.png": "2b9b8fefa08894b7ea536cd62b86d494aefe6e54495c5c1d83460827b13b6448",
    "topwear/3.png": "807f5b628592f6747e2814be9435963069dba6c360577168c02f57bbe903433d",
    "topwear/4.png": "b51b17878503877e179ce4f9231713bf2b2d2d666c3ec9ee29f4e784469867a2",
    "topwear/5.png": "1b6049d43f83ebfda857cc405d1936ac9fd80be480fa6ad239024a6a75ad0372",
    "hair/0.png": "e4007b0635a239ad16cdebfe90759349ccc73dfc6836c9d19625714be185f43d",
    "hair/1.png": "fa6369f84d3310705df6d8ca8c9d515a7d211e73d2826c50a9cb5bb285652c66",
    "hair/2.png": "1b8046752be7233e829ebe9b11048e171d8d181ee6f68e07042b34f57bb8af0d",
    "hair/3.png": "333783285c5fd94ff434ae5000d2da39aac7940269f173119eaa70d34c8acfa1",
    "hair/4.png": "24df8e9b291cbd444f6c4d12d35b3d43d909cd13f04e6401e0fd8ab10216d5a2",
    "hair/5.png": "4dd471cc20e0b1cf71adcaab01c88598767e5cfe680adacdf560ca91574f17ae",
    "shoes/1.png": "d56a561616a20a12030d2d40a52eeec63e6d048871bf3b6994221869362151f1",
    # The art is CC-BY-SA-3.0 / GPL-3.0: the license texts travel with it.
    "CC-BY-SA-3.0-LICENSE": "f199af7e90e29e197a4be87b9a6d585a29ff5eae2b977503e590c4bd8fe6e8b3",
    "GNU-GPL-3.0-LICENSE": "8ceb4b9ee5adedde47b31e975c1d90c73ad27b6b165a1dcd80c7c545eb65b903",
}


def sprites_layers_dir(layers=None, root=None, download=True):
    """Folder with the layer sheets: ``layers``, ``$SPRITES_LAYERS``, or a checksummed download."""
    folder = given_folder(layers, "SPRITES_LAYERS", ("Sprites layer folder", "--sprites-layers",
                                                     "body/, bottomwear/, topwear/, hair/, shoes/"))
    if folder is not None:
        return folder
    folder = data_root(root) / "sprites_layers"
    if download:
        fetch_files(BASE_URL, SPRITES_FILES, folder)
    return folder


def split_characters(split):
    """Character ids of a split (see the module docstring): numpy's legacy RNG, seed 423."""
    order = np.random.RandomState(SPLIT_SEED).permutation(NUM_CLASSES ** 4)
    first_val = NUM_TRAIN_CHARACTERS - NUM_VAL_CHARACTERS
    return {"train": order[:first_val], "val": order[first_val:NUM_TRAIN_CHARACTERS],
            "trainval": order[:NUM_TRAIN_CHARACTERS], "test": order[NUM_TRAIN_CHARACTERS:]}[check_split(split)]


def _sequence_labels(sequence):
    action_type, direction = divmod(sequence, len(DIRECTIONS))
    return {"action": sequence, "action_type": action_type, "direction": direction}


def Sprites(split="train", root=None, *, sprites_layers=None, seq_len=None, random_window=False,
            pair_actions=False, download=True):
    """The Sprites benchmark as a dataset of ``(frames [T, 3, 64, 64] in [0, 1), labels)``.

    ``split``: "train" (900 characters), "val" (100), "trainval" (1000), "test" (296).

    Labels: ``body, bottom, top, hair`` (6 classes each), ``action`` (9 = 3 actions x 3
    directions, ``action_type * 3 + direction``), ``action_type``, ``direction``, ``character``.

    :param sprites_layers: folder of layer sheets (default ``$SPRITES_LAYERS`` or download).
    :param seq_len: frames per sequence, 1..8 (default 8).
    :param random_window: ``seq_len`` consecutive frames from a random start (default: the first).
    :param pair_actions: VDSM stage-1 items: two sequences of one character, concatenated.
    """
    characters = split_characters(split)
    folder = sprites_layers_dir(sprites_layers, root, download)
    attribute_layers = {label: [folder / sub / f"{k}.png" for k in range(NUM_CLASSES)]
                        for label, sub in ATTRIBUTES.items()}
    return LayeredSprites(
        attribute_layers, [folder / "shoes" / "1.png"], SEQUENCES, characters,
        background=(0, 0, 0, 255), scale=1.0 / 256.0, sequence_labels=_sequence_labels,
        seq_len=seq_len, random_window=random_window, pair_actions=pair_actions,
        option_hint=": pass the layer folder with --sprites-layers or $SPRITES_LAYERS")
