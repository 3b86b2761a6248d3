"""Shared fixtures: data folders (../shared/data when present, else the project's downloaders)."""
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pyro
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


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


@pytest.fixture(scope="session")
def vdsm_run(tmp_path_factory, data_dirs):
    """One tiny VDSM run on Sprites (both stages, fitted priors of 4 components), trained once through
    the shell as a user would (``python -m experiments.run``) and read by every test that only reads
    a run: ``.path``, ``.stdout``, ``.stderr``. A test that writes into a run copies it first
    (``tests_helpers.copy_run``)."""
    from tests_helpers import SHARED_RUN_FLAGS

    out = tmp_path_factory.mktemp("shared_run") / "tiny"
    result = subprocess.run([sys.executable, "-m", "experiments.run", "--dataset", "sprites", "--sprites-layers",
                             str(data_dirs.sprites), "--out", str(out), *SHARED_RUN_FLAGS],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return SimpleNamespace(path=out, stdout=result.stdout, stderr=result.stderr)


@pytest.fixture(scope="session")
def svg_run(tmp_path_factory, data_dirs):
    """One tiny SVG-LP run on Stochastic Moving MNIST and its data root: ``(run folder, root)``."""
    from tests_helpers import SVG_TINY, run_main

    out = tmp_path_factory.mktemp("svg") / "run"
    root = out.parent / "root"
    code, _, err = run_main("run", ["--dataset", "smmnist", "--model", "svg-lp", "--mnist", data_dirs.mnist,
                                    "--data-root", root, "--out", out, *SVG_TINY])
    assert code == 0, err
    return out, root


@pytest.fixture(scope="session")
def judge_root(tmp_path_factory):
    """A data root whose judge cache (``judges/``) every test that scores a Sprites run with
    ``--judge-steps 3`` shares: the judge is trained and scored on val and test once per session."""
    return tmp_path_factory.mktemp("judge_root")


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Tests never download: torch.hub's weight downloads fail as they do offline (an evaluation then
    skips LPIPS with its one-line note; tests that score LPIPS pass ``--lpips-backbone``), so a clone
    on a machine with internet does not fetch AlexNet's 233 MB from the test suite."""
    def offline(url, *args, **kwargs):
        raise OSError(f"the tests do not download ({url})")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)


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
