"""Datasets: ``get_dataset(name, split, root, **options)``; items are ``(frames [T, C, H, W] in [0, 1], labels)``."""
import functools
import inspect

from .bair import BAIR
from .common import SPLITS, DataError, check_split, data_root
from .human36m import Human36M
from .kth import KTH
from .moving_mnist import MovingMNIST
from .mug import MUG
from .pendulum import Pendulum
from .sprites import Sprites
from .sprites_dsa import SpritesDSA
from .videos import VideoFolder
from . import videos as _videos

__all__ = ["get_dataset", "DATASETS", "FOLDER_OPTIONS", "SPLITS", "DataError", "data_root", "DATASET_OPTIONS",
           "model_fields"]


#: Every dataset ``get_dataset`` builds: name -> class (or a partial of one).
DATASETS = {
    "sprites": Sprites,
    "sprites-dsa": SpritesDSA,
    "smmnist": MovingMNIST,
    "mmnist": functools.partial(MovingMNIST, deterministic=True),
    "smmnist-svg": functools.partial(MovingMNIST, rules="clamp"),
    "mmnist-svg": functools.partial(MovingMNIST, deterministic=True, rules="clamp"),
    "pendulum": Pendulum,
    "mug": MUG,
    "kth": KTH,
    "bair": BAIR,
    "human36m": Human36M,
    "videos": VideoFolder,
}

#: The option (and command-line flag, with dashes) that names each dataset's raw-data folder or
#: file; datasets without one are generated.
FOLDER_OPTIONS = {"sprites": "sprites_layers", "sprites-dsa": "lpc_layers", "smmnist": "mnist", "mmnist": "mnist",
                  "smmnist-svg": "mnist", "mmnist-svg": "mnist",
                  "mug": "mug", "kth": "kth", "bair": "bair",
                  "human36m": "human36m", "videos": "videos"}

#: Options of a dataset beyond its data folder: {dataset: {dest: (type, default, help)}}. They are flags
#: of experiments.run for that dataset only; the run records their values in config.json
#: ("data_options") and every later command reads them from there.
DATASET_OPTIONS = {"videos": _videos.OPTIONS}
# Model config fields a dataset sizes from its options (the user's videos: the channels).
_MODEL_FIELDS = {"videos": _videos.model_fields}


def model_fields(name, options):
    """The model config fields dataset ``name`` sets from its ``options`` ({} for the benchmarks)."""
    return _MODEL_FIELDS[name](options) if name in _MODEL_FIELDS else {}

def get_dataset(name, split="train", root=None, **options):
    """Build dataset ``name`` (one of ``DATASETS``) for ``split``.

    Splits (``SPLITS``): "train" (the training data minus "val": what training uses), "val"
    (held out of the training data, for monitoring and tuning), "test" (the published test
    split, for final reports), "trainval" (train + val). Each dataset module documents how
    its val split is carved; val never overlaps test.

    ``root`` is the data root for downloads and caches (default ``$VDSM_DATA_ROOT`` or
    ``./data_cache``); ``options`` go to the dataset (e.g. ``sprites_layers``, ``seq_len``).
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    check_split(split)
    factory = DATASETS[name]
    accepted = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise DataError(f"dataset {name!r} takes no option {', '.join(unknown)}: it takes "
                            f"{', '.join(k for k in accepted if k not in ('split', 'root'))}")
    return factory(split, root, **options)
