"""Sprites as built by DSA (yatindandi) and used by VDSM: 7 x 4 x 5 x 6 = 840 characters.

Rules from docs/datasets.md, "How the two Sprites variants are drawn": layers body, pants, shirt, hair drawn on a
transparent canvas, alpha dropped (black background), 1/255 scaling; nine sequences per
character in DSA's order with DSA's frame lists. By default the slash rows are DSA's
off-by-one rows 14, 15, 16 (exactly the data VDSM trained on); ``corrected_slash=True``
uses the true slash rows 13, 14, 15.
"""
import numpy as np

from .common import carve, check_split, data_root, given_folder
from .download import download_file
from .layered import LayeredSprites

__all__ = ["SpritesDSA", "LPC_FILES"]

BODIES = ("light", "dark", "dark2", "darkelf", "darkelf2", "tanned", "tanned2")
SHIRTS = ("brown", "teal", "maroon", "white")
PANTS = ("magenta", "red", "teal", "white", "robe_skirt")
HAIRS = ("green", "blue", "pink", "raven", "white", "dark_blonde")
ACTIONS = ("walk", "spellcast", "slash")
NUM_CHARACTERS = len(BODIES) * len(SHIRTS) * len(PANTS) * len(HAIRS)

_WALK, _SPELL, _SLASH = list(range(8)), [0, 1, 2, 3, 4, 5, 6, 6], [0, 1, 2, 3, 4, 5, 5, 5]


def sequences(corrected_slash=False):
    slash_rows = (13, 14, 15) if corrected_slash else (14, 15, 16)
    return ([(r, _WALK) for r in (9, 10, 11)] + [(r, _SPELL) for r in (1, 2, 3)]
            + [(r, _SLASH) for r in slash_rows])


# local name -> (path in makrohn/Universal-LPC-spritesheet @ 29c1d69, sha256)
LPC_BASE_URL = ("https://raw.githubusercontent.com/makrohn/Universal-LPC-spritesheet/"
                "29c1d69d0608e53decf1b4378f93c6d2b0d9443f")
#: Local name -> (path in makrohn/Universal-LPC-spritesheet @ 29c1d69, sha256).
LPC_FILES = {
    "body/light.png": ("body/male/light.png", "46824de9eaac7018007126db40c4e9607aa40621ec32d66ed330aa81c6f3b253"),
    "body/dark.png": ("body/male/dark.png", "98ac7ae944b0ea3892b540268c977d1481b5dff7cf752a6c9b05ae2d09b7f4a4"),
    "body/dark2.png": ("body/male/dark2.png", "9085ccbdef51c52f2e05cea0be5de6de33c29f7d493f3931551d7be17000709a"),
    "body/darkelf.png": ("body/male/darkelf.png", "92f6048e7a7d4721b9b29b72b292880e61f1fe6130be39519f85f9eb3917f773"),
    "body/darkelf2.png": ("body/male/darkelf2.png", "8f63788e3e471f01c96ec9d22bdbb06eacbd0fb24b9583923a7a5cc4727bd28a"),
    "body/tanned.png": ("body/male/tanned.png", "81535d51ab36edef6acd439ae04430db988f47cd43bc6186a55170a3f6175221"),
    "body/tanned2.png": ("body/male/tanned2.png", "7fb9ff8ab46cb515546225d081b6c1f48fc11f564465608ab722b128c0977624"),
    "shirt/brown.png": ("torso/shirts/longsleeve/male/brown_longsleeve.png", "7f5c88b01e354758ad46bcd4bf069f8f6c143179e0fbc5b8697eb3ee20f0a350"),
    "shirt/teal.png": ("torso/shirts/longsleeve/male/teal_longsleeve.png", "8f11e716c675b8f06ccf93419de4acdaeb5742d96befd41599daaa69f5e3e9df"),
    "shirt/maroon.png": ("torso/shirts/longsleeve/male/maroon_longsleeve.png", "1c0cf18531edf671f46b53fb8bd9a6376f5138d28ca87cdb4fc7ecfb54110ec0"),
    "shirt/white.png": ("torso/shirts/longsleeve/male/white_longsleeve.png", "e98c66f189d37c384e80b74c7d8ea8d7e932f77fdccd1a5fba7d7c156d98e857"),
    "pants/magenta.png": ("legs/pants/male/magenta_pants_male.png", "45328b67f82414f56a0594407c57d074cb739699462c70fe3326cb967af09889"),
    "pants/red.png": ("legs/pants/male/red_pants_male.png", "c6399cf195f5f7ffd6aea8c087fa5a80dd3563aba141d96b12d090c05e884415"),
    "pants/teal.png": ("legs/pants/male/teal_pants_male.png", "cb92435ee80104612d08b5db85609074fa0090e521fe464917f44e90031e4ee2"),
    "pants/white.png": ("legs/pants/male/white_pants_male.png", "f5431342b24748d77327c8f7a8d3296e7553a774839aa211c19e18ef193a9c72"),
    "pants/robe_skirt.png": ("legs/skirt/male/robe_skirt_male.png", "d4195e3e9ffe87b92f9be0fe53b61adeac57dcfdbcdcb0cafcc11cd7ce709d07"),
    # DSA's hair colours are the pre-rename files (docs/datasets.md, "Hair colours").
    "hair/green.png": ("hair/male/plain/green2.png", "8fa092a0cc9bfab20f16220b5a8f957fb58e1cee62f2f1551997c34f05b13185"),
    "hair/blue.png": ("hair/male/plain/blue2.png", "5ce3240abb45237bca5f06626c372b1b843dc93628b47153bc5385218529f124"),
    "hair/pink.png": ("hair/male/plain/pink2.png", "85f4cd39524a74c2c035b42eceacc32a094a22a36b417a5ea5bc306f3f11b629"),
    "hair/raven.png": ("hair/male/plain/raven2.png", "ced3ef47b3a9bf5b5241deaeeafe21d15eda3d238dd66aa0ad3ea2cf1254b607"),
    "hair/white.png": ("hair/male/plain/white-blonde2.png", "3992e76cab992c32fdebbf8f36db7f2e2dc6bcc6b9d4fb74e3c4b02590bd3be8"),
    "hair/dark_blonde.png": ("hair/male/plain/dark-blonde.png", "813c2686140e4c9cbb435d2d6f238eb127d64bd2b1c279ab5f1db841ea3053db"),
    "AUTHORS.txt": ("AUTHORS.txt", "86d26cd6ca38d45dbfa23f7d5d7bc5cd2ebbdea1be1fce693eab2905ddc0fddf"),
    "cc-by-sa-3.0.txt": ("cc-by-sa-3.0.txt", "f199af7e90e29e197a4be87b9a6d585a29ff5eae2b977503e590c4bd8fe6e8b3"),
    "gpl-3.0.txt": ("gpl-3.0.txt", "8ceb4b9ee5adedde47b31e975c1d90c73ad27b6b165a1dcd80c7c545eb65b903"),
}


def lpc_layers_dir(layers=None, root=None, download=True):
    """Folder with the LPC layers: ``layers``, ``$LPC_LAYERS``, or a checksummed download."""
    folder = given_folder(layers, "LPC_LAYERS", ("LPC layer folder", "--lpc-layers", "body/, shirt/, pants/, hair/"))
    if folder is not None:
        return folder
    folder = data_root(root) / "lpc_layers"
    if download:
        for local, (remote, digest) in LPC_FILES.items():
            download_file(f"{LPC_BASE_URL}/{remote}", folder / local, digest)
    return folder


VAL_FRACTION, VAL_SEED = 0.1, 42


def split_characters(split, holdout=0.1, seed=0):
    """Seeded character hold-out: ``holdout`` of the 840 characters are the test split (84); of
    the other 756, a seeded 10% (76, seed 42) are "val", the rest "train" (680)."""
    order = np.random.RandomState(seed).permutation(NUM_CHARACTERS)
    n_test = int(round(holdout * NUM_CHARACTERS))
    if check_split(split) == "test":
        return np.sort(order[:n_test])
    return carve(np.sort(order[n_test:]), split, VAL_FRACTION, VAL_SEED)


def _sequence_labels(sequence):
    return {"action": sequence // 3, "sequence": sequence}


def SpritesDSA(split="train", root=None, *, lpc_layers=None, seq_len=None, random_window=False,
               pair_actions=False, corrected_slash=False, holdout=0.1, split_seed=0, download=True):
    """DSA/VDSM Sprites as ``(frames [T, 3, 64, 64] in [0, 1], labels)``.

    ``split``: "train", "val", "trainval" (train + val) or "test" (see ``split_characters``).

    Labels: ``body`` (7), ``shirt`` (4), ``pants`` (5), ``hair`` (6), ``action`` (3: walk,
    spellcast, slash), ``sequence`` (0-8, DSA's order), ``character``.
    """
    characters = split_characters(split, holdout, split_seed)
    folder = lpc_layers_dir(lpc_layers, root, download)
    attribute_layers = {  # drawing order: body, pants, shirt, hair; labels keep DSA's names
        "body": [folder / "body" / f"{n}.png" for n in BODIES],
        "pants": [folder / "pants" / f"{n}.png" for n in PANTS],
        "shirt": [folder / "shirt" / f"{n}.png" for n in SHIRTS],
        "hair": [folder / "hair" / f"{n}.png" for n in HAIRS],
    }
    return LayeredSprites(
        attribute_layers, [], sequences(corrected_slash), characters,
        background=(0, 0, 0, 0), scale=1.0 / 255.0, sequence_labels=_sequence_labels,
        seq_len=seq_len, random_window=random_window, pair_actions=pair_actions,
        option_hint=": pass the layer folder with --lpc-layers or $LPC_LAYERS")
