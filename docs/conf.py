"""Sphinx configuration of the docs site: Markdown pages (MyST), the two notebooks rendered with their
stored outputs (myst-nb, never executed here), and an API reference generated from the docstrings.

Build: ``python -m sphinx -W -b html docs docs/_build/html`` (``tests/test_docs.py`` does it, failing on
any warning).
"""
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS))

import vdsm  # noqa: E402
from api_pages import write_api_pages  # noqa: E402
from preset_pages import write_preset_pages  # noqa: E402

project = "vdsm"
author = "the vdsm authors"
release = vdsm.__version__
version = release

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.mathjax"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "benchmarks", "images", "_generated"]
html_theme = "furo"
html_title = f"vdsm {release}"
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "off"   # the notebooks are committed with their outputs (tests/test_notebooks.py)
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"

# Generated before Sphinx reads the sources: the API pages, the presets' tables (included by the model
# pages) and the notebooks, copied in (Sphinx reads only files below docs/). All three are ignored by git.
write_api_pages(ROOT, DOCS / "api")
write_preset_pages(DOCS / "_generated" / "presets")
notebooks = DOCS / "notebooks"
notebooks.mkdir(exist_ok=True)
for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
    shutil.copyfile(path, notebooks / path.name)
