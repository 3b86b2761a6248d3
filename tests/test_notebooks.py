"""Every notebook runs headless, top to bottom, on a tiny model."""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, data_dirs, monkeypatch):
    monkeypatch.setenv("SPRITES_LAYERS", str(data_dirs.sprites))
    monkeypatch.delenv("VDSM_RUN_DIR", raising=False)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parents[1])}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the grids were drawn


def test_there_is_a_notebook():
    assert any(p.name == "action_transfer.ipynb" for p in NOTEBOOKS)
