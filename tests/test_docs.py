"""The documentation: the docs site builds without a warning and covers the public API, the model pages
list the sites the models sample, the README stays a landing page, and every document the code cites
is in the repository."""
import importlib
import posixpath
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pyro import poutine

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS))
from api_pages import public_modules  # noqa: E402

# the pages the site promises (issue #56), without their suffix
PAGES = ["index", "getting_started", "models/index", "models/vdsm", "models/svg", "models/srvp", "models/dsa",
         "models/cdsvae", "models/dbse", "models/spyl", "own_model", "own_guide", "own_videos", "long_runs", "evaluation",
         "datasets", "papers", "results", "journal", "changelog", "notebooks/action_transfer",
         "notebooks/svg_prediction", "api/index"]
# files the commands write into a run folder: named in the code, never part of the repository
RUN_FOLDER_DOCUMENTS = {"fragility.md", "disentanglement.md", "disentanglement_val.md"}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site as a user builds it, with every warning an error (-W), all of them listed (--keep-going)."""
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS),
                            str(out)], capture_output=True, text=True, cwd=ROOT)
    assert built.returncode == 0, built.stderr[-4000:]
    return out


def test_the_docs_build_without_a_warning_and_have_every_page(site):
    missing = [page for page in PAGES if not (site / f"{page}.html").is_file()]
    assert not missing
    notebook = (site / "notebooks" / "action_transfer.html").read_text()
    assert "<img" in notebook   # rendered with the stored outputs, not executed
    assert "Departs from the paper" in (site / "models" / "vdsm.html").read_text()   # the generated preset tables


def _documented_names(site):
    from sphinx.util.inventory import InventoryFile

    with open(site / "objects.inv", "rb") as f:
        inventory = InventoryFile.load(f, "", posixpath.join)
    entries = inventory.data if hasattr(inventory, "data") else inventory
    return {name for kind in entries.values() for name in kind}


def test_the_api_reference_covers_every_public_name(site):
    """Every name in the ``__all__`` of every public module of vdsm, models, guides and data has an entry,
    in that module or, for a package's re-export, in the module that defines it."""
    documented = _documented_names(site)
    modules = {name: importlib.import_module(name)
               for package in ("vdsm", "models", "guides", "data") for name in public_modules(ROOT, package)}
    missing = []
    for name, module in modules.items():
        for public in getattr(module, "__all__", ()):
            value = getattr(module, public)
            homes = [other for other, m in modules.items() if getattr(m, public, None) is value]
            if not any(f"{home}.{public}" in documented for home in [name, *homes]):
                missing.append(f"{name}.{public}")
    assert not missing
    assert len(documented) > 500


def test_the_scan_of_the_reference_finds_what_is_missing(site):
    assert "models.registry.load_run" in _documented_names(site)
    assert "models.registry.no_such_name" not in _documented_names(site)


# ---------------------------------------------------------------- model pages

def _tiny_pairs():
    from test_contract import _tiny_runs

    runs = _tiny_runs()
    return {"vdsm": {"stage 1": runs["vdsm stage1"], "stage 2": runs["vdsm stage2"]}, "svg": {"": runs["svg-lp"]},
            "srvp": {"": runs["srvp"]}, "dsa": {"": runs["dsa"]}, "cdsvae": {"": runs["cdsvae"]},
            "dbse": {"": runs["dbse"]}, "spyl": {"": runs["spyl"]}}


def _documented_sites(page):
    """{table key: {site: kind}} of the "Sample sites" tables of a model page ("" when there is one)."""
    tables, key = {}, None
    for line in (DOCS / "models" / f"{page}.md").read_text().splitlines():
        if line.startswith("#"):
            key = line.split("Sample sites", 1)[1].lstrip(": ").strip() if "Sample sites" in line else None
        elif key is not None and line.startswith("| `"):
            name, kind = [cell.strip() for cell in line.strip("|").split("|")[:2]]
            tables.setdefault(key, {})[name.strip("`")] = kind
    return tables


def _traced_sites(build, nc):
    torch.manual_seed(0)
    run = build()
    model, guide = run.pair()
    x = torch.rand(2, 4, nc, 64, 64)
    guide_trace = poutine.trace(guide).get_trace(x, factors=run.factors())
    trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, factors=run.factors())
    sites = {}
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or name == "sequences":
            continue
        kind = ("factor" if type(site["fn"]).__name__ == "Unit" else "observed") if site["is_observed"] else "latent"
        sites[re.sub(r"^z_\d+$", "z_t", name)] = kind
    return sites


@pytest.mark.parametrize("page", ["vdsm", "svg", "srvp", "dsa", "cdsvae", "dbse", "spyl"])
def test_each_model_page_lists_the_sites_its_model_samples(page):
    """What a custom guide must sample: the page's table against a trace of the model (z_1..z_T as z_t)."""
    documented = _documented_sites(page)
    pairs = _tiny_pairs()[page]
    assert set(documented) == set(pairs)
    for key, (build, nc) in pairs.items():
        assert documented[key] == _traced_sites(build, nc), key


def test_the_site_tables_are_read_as_written():
    tables = _documented_sites("vdsm")
    assert tables["stage 2"]["dynamics"] == "latent" and "dynamics" not in tables["stage 1"]


# ---------------------------------------------------------------- README, BENCHMARKS, citations

def test_the_readme_is_a_landing_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    first = "\n".join(lines[:40])
    for what in ('pip install -e ".[test]"', "python -m pytest", "python -m experiments.run --dataset sprites",
                 "minutes"):
        assert what in first, what
    dated = [line for line in lines if re.search(r"\b20\d\d-\d\d-\d\d\b", line)]
    assert not dated   # dated measurements belong to BENCHMARKS.md, beside their results


def test_benchmarks_holds_the_current_results_only():
    text = (ROOT / "BENCHMARKS.md").read_text()
    assert len(text.splitlines()) <= 400
    assert "docs/journal.md" in text and (ROOT / "CHANGELOG.md").is_file()


def _links(path):
    """Relative link targets of a Markdown file, anchors dropped."""
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
        if not re.match(r"[a-z]+://", target) and not target.startswith("#"):
            yield target.split("#")[0]


def test_the_links_of_the_readme_and_the_docs_resolve():
    pages = [ROOT / "README.md", ROOT / "BENCHMARKS.md", ROOT / "CHANGELOG.md", *DOCS.glob("*.md"),
             *(DOCS / "models").glob("*.md")]
    broken = [f"{page.relative_to(ROOT)}: {target}" for page in pages for target in _links(page)
              if not (page.parent / target).exists()]
    assert not broken


def _cited_documents():
    """(file, document, quoted section or None) for every document named in the library's code,
    presets and tests."""
    files = [p for package in ("vdsm", "models", "guides", "data", "experiments", "tests")
             for p in (ROOT / package).rglob("*") if p.suffix in (".py", ".json")]
    for path in files:
        text = path.read_text()
        for match in re.finditer(r"([\w./-]+\.md)\b(?:, \"([^\"]+)\")?", text):
            yield path.relative_to(ROOT).as_posix(), match.group(1), match.group(2)
        for word in ("REFERENCE", "DESIGN"):   # the shared documents beside the clone
            if word in text and path.name != "test_docs.py":
                yield path.relative_to(ROOT).as_posix(), word, None


def test_every_document_the_code_cites_is_in_the_repository():
    unresolved = []
    for path, document, section in _cited_documents():
        if document in RUN_FOLDER_DOCUMENTS:
            continue
        target = ROOT / document
        if not target.is_file():
            unresolved.append(f"{path}: {document}")
        elif section and section.split(" ...")[0] not in target.read_text():
            unresolved.append(f"{path}: {document}, {section!r}")
    assert not unresolved


def test_the_citation_scan_finds_citations():
    cited = {(document, section) for _, document, section in _cited_documents()}
    assert ("docs/papers.md", "Evaluation protocols") in cited
    assert ("docs/datasets.md", "How the two Sprites variants are drawn") in cited
