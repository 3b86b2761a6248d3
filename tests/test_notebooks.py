"""Every notebook runs headless, top to bottom, on a tiny model."""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, data_dirs, monkeypatch, tmp_path):
    monkeypatch.setenv("SPRITES_LAYERS", str(data_dirs.sprites))
    monkeypatch.setenv("MNIST", str(data_dirs.mnist))
    monkeypatch.setenv("VDSM_DATA_ROOT", str(tmp_path / "data_root"))   # caches of generated data
    monkeypatch.delenv("VDSM_RUN_DIR", raising=False)
    monkeypatch.delenv("SVG_RUN_DIR", raising=False)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parents[1])}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the grids were drawn


def test_the_notebooks_are_committed_with_their_pictures():
    """A visitor reads them without running them: the committed files hold the outputs of a real run."""
    assert {p.name for p in NOTEBOOKS} >= {"action_transfer.ipynb", "svg_prediction.ipynb"}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
        assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3, path.name
        assert not [o for o in outputs if o.get("output_type") == "error"], path.name
