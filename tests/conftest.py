"""Shared fixtures: data folders (../shared/data when present, else the project's downloaders)."""
import os
from pathlib import Path
from types import SimpleNamespace

import pyro
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def data_dirs(tmp_path_factory):
    """Folders of the raw test data: ``sprites``, ``lpc`` layer sheets and the ``mnist`` npz/folder.

    Prefers ``../shared/data`` beside the clone; otherwise downloads once (checksummed)
    into ``$VDSM_DATA_ROOT`` or a session temp folder.
    """
    if SHARED_DATA.is_dir():
        return SimpleNamespace(sprites=SHARED_DATA / "sprites", lpc=SHARED_DATA / "lpc",
                               mnist=SHARED_DATA / "mnist" / "mnist.npz")
    from data.mnist import load_mnist
    from data.sprites import sprites_layers_dir
    from data.sprites_dsa import lpc_layers_dir

    root = Path(os.environ.get("VDSM_DATA_ROOT") or tmp_path_factory.mktemp("data_root"))
    load_mnist("test", root=root)  # torchvision's downloader
    return SimpleNamespace(sprites=sprites_layers_dir(root=root), lpc=lpc_layers_dir(root=root),
                           mnist=root / "mnist")


@pytest.fixture(autouse=True)
def clean_pyro():
    pyro.clear_param_store()
    pyro.enable_validation(True)
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="session")
def alexnet_features(tmp_path_factory):
    """A randomly initialised torchvision AlexNet's ``features`` weights as a state-dict file: what
    ``--lpips-backbone`` reads, without downloading the ImageNet weights."""
    import torch
    import torchvision

    torch.manual_seed(0)
    state = {k: v for k, v in torchvision.models.alexnet().state_dict().items() if k.startswith("features.")}
    path = tmp_path_factory.mktemp("alexnet") / "alexnet_features.pth"
    torch.save(state, path)
    return path
