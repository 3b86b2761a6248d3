"""Every notebook runs headless, top to bottom, on a tiny model."""
import tempfile
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from tests_helpers import copy_run

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# the environment variable each notebook reads its run folder from, and the shared run it gets in tests
RUN_VARIABLES = {"action_transfer": ("VDSM_RUN_DIR", "vdsm_run"), "svg_prediction": ("SVG_RUN_DIR", "svg_run")}


def shared_run_path(request, fixture):
    value = request.getfixturevalue(fixture)
    return value.path if fixture == "vdsm_run" else value[0]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, data_dirs, monkeypatch, tmp_path, request):
    """On a copy of the session's shared tiny run (the notebook writes a GIF into its run folder)."""
    variable, fixture = RUN_VARIABLES[path.stem]
    monkeypatch.setenv(variable, str(copy_run(shared_run_path(request, fixture), tmp_path / "run")))
    monkeypatch.setenv("SPRITES_LAYERS", str(data_dirs.sprites))
    monkeypatch.setenv("MNIST", str(data_dirs.mnist))
    monkeypatch.setenv("VDSM_DATA_ROOT", str(tmp_path / "data_root"))   # caches of generated data
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parents[1])}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the grids were drawn


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_the_tiny_run_a_notebook_trains_without_a_run_folder_is_a_valid_command(path, monkeypatch):
    """The executed notebooks read the shared runs; the cell that trains a tiny run when no folder is
    given runs here up to its ``experiments.run.main`` call, whose flags must parse and configure."""
    import experiments.run as runner

    cell = next(c.source for c in nbformat.read(path, as_version=4).cells if "if RUN_DIR is None" in c.source)
    lines = cell.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("if RUN_DIR is None"))
    end = next((i for i in range(start + 1, len(lines)) if lines[i] and not lines[i][0].isspace()), len(lines))
    calls = []
    monkeypatch.setattr(runner, "main", lambda argv: calls.append(argv) or 0)
    exec("\n".join(lines[start:end]), {"RUN_DIR": None, "SPRITES_LAYERS": None, "MNIST": None, "Path": Path,
                                       "tempfile": tempfile})
    assert len(calls) == 1
    args = runner.build_parser().parse_args(calls[0])
    args.given = runner.given_flags(args)
    runner.check_flags(args, args.given)
    config = runner.prepare(args, torch.device("cpu"))[1]
    assert config["model"] and not Path(args.out).exists()


def test_the_notebooks_are_committed_with_their_pictures():
    """A visitor reads them without running them: the committed files hold the outputs of a real run."""
    assert {p.name for p in NOTEBOOKS} >= {"action_transfer.ipynb", "svg_prediction.ipynb"}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
        assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3, path.name
        assert not [o for o in outputs if o.get("output_type") == "error"], path.name
