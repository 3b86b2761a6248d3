"""The API reference's pages, written by ``conf.py`` before each build so that a new module has its
section without anyone remembering to add it: one page per package (vdsm's two subpackages apart), a
section per public module, each documenting the module's ``__all__``."""
from pathlib import Path

# the packages of the reference, in the order of its index
PACKAGES = ("vdsm", "models", "guides", "data", "experiments")
# one page each, with one line on what it holds; a module goes to the page of its longest prefix
PAGES = {
    "vdsm": "the model-agnostic core: training, annealing, checkpoints, run folders",
    "vdsm.nets": "plain networks (no Pyro inside): encoders, decoders, recurrent cells",
    "vdsm.metrics": "judges, disentanglement and prediction metrics, Frechet distances",
    "models": "the family, each model's module and spec, the registry",
    "guides": "the guides, importable on their own",
    "data": "the datasets and their downloaders",
    "experiments": "the commands (``python -m experiments.<name>``) and their building blocks",
}


def public_modules(root, package):
    """Dotted names of ``package``'s modules below ``root``, private ones (``_x``) left out."""
    names = []
    for path in sorted((Path(root) / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not any(part.startswith("_") for part in parts):
            names.append(".".join(parts))
    return names


def page_of(module):
    return max((page for page in PAGES if module == page or module.startswith(page + ".")), key=len)


def write_api_pages(root, out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.rst"):
        old.unlink()
    pages = {page: [] for page in PAGES}
    for package in PACKAGES:
        for module in public_modules(root, package):
            pages[page_of(module)].append(module)
    index = ["API reference", "=============", "",
             "Generated from the docstrings of every public module: each documents the names in its ``__all__``.",
             "", ".. toctree::", "   :maxdepth: 2", ""] + [f"   {page}" for page in pages] + [""]
    (out / "index.rst").write_text("\n".join(index))
    for page, modules in pages.items():
        title = f"``{page}``: {PAGES[page]}"
        lines = [title, "=" * len(title), ""]
        for module in modules:
            heading = f"``{module}``"
            lines += [heading, "-" * len(heading), "", f".. automodule:: {module}", ""]
        (out / f"{page}.rst").write_text("\n".join(lines))
