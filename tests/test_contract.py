"""The model contract: layers that hold, no branch on a model's name outside its module, plain Pyro
SVI for every pair, old import paths that still work, and a model defined outside the library
through every command."""
import ast
import json
from pathlib import Path

import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

from models import registry
from tests_helpers import run_main

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vdsm", "models", "guides", "experiments", "data")
# what each layer may not import (docs/own_model.md, "Layers")
FORBIDDEN = {"vdsm": {"models", "guides", "experiments"}, "models": {"guides", "experiments"},
             "guides": {"experiments"}, "data": {"models", "guides", "experiments"}}
# the modules of the registered models (each may branch on its own names)
MODEL_MODULES = {spec.run_cls.__module__.replace(".", "/") + ".py" for spec in registry.MODELS}


def _modules():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text())


def _imports(rel, tree):
    """Every module ``rel`` imports, at the top or inside a function, as absolute dotted names."""
    package = rel.rsplit("/", 1)[0].replace("/", ".")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                yield ".".join(base + ([node.module] if node.module else []))
            else:
                yield node.module


def test_no_layer_imports_a_layer_above_it():
    broken = [f"{rel} imports {name}" for rel, tree in _modules() for name in _imports(rel, tree)
              if name.split(".")[0] in FORBIDDEN.get(rel.split("/")[0], set())]
    assert not broken, broken


def _cycles(edges):
    """The import circles of a graph {module: {modules it imports}}, each as a path back to its start."""
    state, cycles = {}, []

    def visit(m, path):
        state[m] = "open"
        for n in sorted(edges.get(m, ())):
            if state.get(n) == "open":
                cycles.append(path[path.index(n):] + [n])
            elif n not in state:
                visit(n, path + [n])
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    return cycles


def _branches(rel, tree, names):
    """Comparisons in ``tree`` with a model's name as a constant: ``config["model_name"] == "dsa"``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            constants = [n.value for o in [node.left, *node.comparators] for n in ast.walk(o) if isinstance(n, ast.Constant)]
            if names.intersection(c for c in constants if isinstance(c, str)):
                found.append(f"{rel}:{node.lineno}")
    return found


def test_the_scans_find_what_they_look_for():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    snippet = ast.parse('if config.get("model_name") == "dsa":\n    pass\nelif model in ("vdsm", "x"):\n    pass\n')
    assert _branches("x.py", snippet, {"dsa", "vdsm"}) == ["x.py:1", "x.py:3"]


def test_no_import_circle_between_modules():
    graph = {}
    for rel, tree in _modules():
        name = rel[:-3].replace("/", ".").removesuffix(".__init__")
        graph[name] = {i for i in _imports(rel, tree) if i and i.split(".")[0] in PACKAGES}
    names = set(graph)
    edges = {m: {i if i in names else i.rsplit(".", 1)[0] for i in deps} & names - {m} for m, deps in graph.items()}
    # inside one package, its __init__ importing its own modules (which import each other) is not a circle
    cycles = [c for c in _cycles(edges) if len({x.split(".")[0] for x in c}) > 1 or not any(x in PACKAGES for x in c)]
    assert not cycles, cycles


def test_no_branch_on_a_model_name_outside_its_module():
    names = set(registry.NAMES)
    branches = [b for rel, tree in _modules() if rel not in MODEL_MODULES for b in _branches(rel, tree, names)]
    assert not branches, branches


def test_the_runner_is_a_thin_command():
    assert len((ROOT / "experiments" / "run.py").read_text().splitlines()) < 200
    assert not (ROOT / "experiments" / "run_svg.py").exists() and not (ROOT / "experiments" / "run_dsa.py").exists()


def test_importing_the_core_imports_no_model():
    import subprocess
    import sys

    code = ("import sys, vdsm.train, vdsm.checkpoint, vdsm.metrics.frechet, vdsm.metrics.protocol; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('models', 'guides', 'experiments')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- plain Pyro


def _tiny_runs():
    from models.cdsvae import CDSVAEConfig, CDSVAERun
    from models.dbse import DBSEConfig, DBSERun
    from models.spyl import SPYLConfig, SPYLRun
    from models.dsa import DSAConfig, DSARun
    from models.srvp import SRVPConfig, SRVPRun
    from models.svg import SVGConfig, SVGRun
    from models.vdsm import VDSMConfig, VDSMRun

    vdsm = dict(z_dim=4, n_experts=3, encoder_widths=(4, 4, 4, 4), encoder_features=8, decoder_widths=(8, 8, 4, 4),
                dynamics_dim=3, trans_dim=4, rnn_dim=8, rnn_layers=1)
    return {
        "vdsm stage1": (lambda: VDSMRun(VDSMConfig(**vdsm)).use_stage("stage1"), 3),
        "vdsm stage2": (lambda: VDSMRun(VDSMConfig(**vdsm)).use_stage("stage2"), 3),
        "svg-lp": (lambda: SVGRun(SVGConfig(nf=4, g_dim=8, z_dim=2, rnn_dim=8, n_past=2)), 1),
        "svg-fp": (lambda: SVGRun(SVGConfig(nf=4, g_dim=8, z_dim=2, rnn_dim=8, n_past=2, learned_prior=False)), 1),
        "srvp": (lambda: SRVPRun(SRVPConfig(nf=4, nh=8, ny=3, z_dim=2, content_dim=6, rnn_dim=5, y_hidden=7,
                                            mlp_hidden=9, nt_inf=2, n_past=2)), 1),
        "dsa": (lambda: DSARun(DSAConfig(f_dim=4, z_dim=3, g_dim=8, nf=4, rnn_dim=8)), 3),
        "cdsvae": (lambda: CDSVAERun(CDSVAEConfig(f_dim=4, z_dim=3, g_dim=8, nf=4, rnn_dim=8)), 3),
        "dbse": (lambda: DBSERun(DBSEConfig(f_dim=4, z_dim=3, g_dim=8, nf=4, rnn_dim=8)), 3),
        "spyl": (lambda: SPYLRun(SPYLConfig(f_dim=4, z_dim=3, g_dim=8, nf=4, rnn_dim=8, bank_factor=2)), 3),
    }


@pytest.mark.parametrize("name", list(_tiny_runs()))
def test_every_pair_trains_under_a_plain_pyro_svi_loop(name):
    """``pyro.infer.SVI`` with ``pyro.optim.Adam``, nothing of the library's loop: the loss falls and
    every parameter that gets a gradient moves (stage 2 does not read the stage-1 encoder's scales)."""
    build, nc = _tiny_runs()[name]
    torch.manual_seed(0)
    run = build()
    model, guide = run.pair()
    x = torch.rand(4, 5, nc, 64, 64)
    factors = run.factors()
    elbo = getattr(model, "elbo", Trace_ELBO)()
    elbo.differentiable_loss(model, guide, x, factors=factors).backward()
    used = {n: p.detach().clone() for m in (model, guide) for n, p in m.named_parameters()
            if p.grad is not None and p.grad.abs().sum() > 0}
    for m in (model, guide):
        m.zero_grad()
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 3e-3}), elbo)
    torch.manual_seed(1)
    losses = [svi.step(x, factors=factors) for _ in range(60)]
    moved = {n for m in (model, guide) for n, p in m.named_parameters() if n in used and not torch.equal(p, used[n])}
    assert set(used) == moved, sorted(set(used) - moved)
    assert sum(losses[-10:]) < sum(losses[:10])


def test_a_second_run_in_the_process_keeps_its_own_weights():
    """Pyro's param store keeps module parameters by name; building and training a second run of the
    same model must not put the first one's weights into it (or the reverse)."""
    build, nc = _tiny_runs()["dsa"]
    x = torch.rand(2, 5, nc, 64, 64)
    first, second = build(), build()
    for run in (first, second):
        SVI(run.model, run.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO()).step(x, factors=run.factors())
    a, b = first.nets.prior_out.weight, second.nets.prior_out.weight
    assert not torch.equal(a, b)
    store = pyro.get_param_store()
    assert store.param_name(b) is not None and store.param_name(a) is None


# ---------------------------------------------------------------- one transition hook


def _family_members():
    import importlib

    from models.family import StateSpaceVideoModel

    for module in MODEL_MODULES | {"tests/dsa_markov.py"}:
        importlib.import_module(Path(module).stem if module.startswith("tests/") else module[:-3].replace("/", "."))
    modules = {m[:-3].replace("/", ".") for m in MODEL_MODULES} | {"dsa_markov"}
    found, todo = set(), [StateSpaceVideoModel]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.add(sub)
            todo.append(sub)
    return {member for member in found if member.__module__ in modules}  # not the tests' throwaway classes


def test_every_per_frame_prior_is_the_one_transition_hook():
    from models.family import IndependentNormal, StateSpaceVideoModel, Stepped, TeacherForced

    members = _family_members()
    assert {m.__name__ for m in members} >= {"VDSMStage1Model", "VDSMStage2Model", "SVGModel", "SRVPModel",
                                             "DSAModel", "MarkovDSAModel"}
    for member in members:
        old_hooks = {"learned_prior", "prior_step", "state_prior", "step"} & set(dir(member))
        assert not old_hooks, f"{member.__name__} defines {old_hooks}"
        if isinstance(member.frame_prior, (Stepped, TeacherForced)):
            assert member.transition is not StateSpaceVideoModel.transition, member.__name__
        else:
            assert isinstance(member.frame_prior, IndependentNormal), member.__name__


# ---------------------------------------------------------------- a model defined outside the library


def test_a_model_defined_in_a_test_file_runs_resumes_evaluates_and_damages(tmp_path, data_dirs, judge_root,
                                                                           monkeypatch):
    """``--model dsa_markov:SPEC`` (tests/dsa_markov.py: DSA with a Markov per-frame prior) through
    the same commands as a library model, end to end; the later commands find the run's data root
    (its caches and judge) without --data-root."""
    run = tmp_path / "markov"
    tiny = ["--f-dim", "4", "--z-dim", "3", "--g-dim", "8", "--nf", "4", "--rnn-dim", "8", "--batch-size", "2",
            "--eval-sequences", "4", "--num-workers", "0", "--no-progress"]
    common = ["--dataset", "sprites", "--model", "dsa_markov:SPEC", "--sprites-layers", data_dirs.sprites,
              "--data-root", judge_root]
    code, out, err = run_main("run", [*common, "--out", run, "--steps", "2", *tiny])
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())
    assert config["model_name"] == "dsa-markov" and config["model_spec"] == "dsa_markov:SPEC"
    assert config["data_root"] == str(Path(judge_root).resolve())
    default_root = tmp_path / "default-root"   # where a command that forgot the run's root would write
    monkeypatch.setenv("VDSM_DATA_ROOT", str(default_root))
    later = [a for a in common if a not in ("--data-root", judge_root)]
    assert (run / "checkpoints" / "dsa-markov.pt").is_file() and (run / "identity_swap.png").is_file()
    loaded = registry.load_run(run)
    assert type(loaded.model).__name__ == "MarkovDSAModel"
    state, z_2 = loaded.model.transition(torch.zeros(1, 3), 2)
    assert z_2.shape == (1, 3) and state is z_2
    # resume: extends the run from its checkpoint
    code, _, err = run_main("run", [*later, "--resume", run, "--steps", "3", *tiny])
    assert code == 0, err
    assert torch.load(run / "checkpoints" / "dsa-markov.pt", weights_only=True)["step"] == 3
    # a flag of another model is refused for it as for any model
    code, _, err = run_main("run", [*common, "--out", tmp_path / "bad", "--n-future", "3", *tiny])
    assert code == 2 and "--n-future only applies" in err
    # the judge protocols and the damage experiment read it through the registry
    code, _, err = run_main("evaluate", ["--run", run, "--sprites-layers", data_dirs.sprites, "--judge-steps", "3",
                                         "--repeats", "1", "--batch-size", "6", "--no-progress"])
    assert code == 0, err
    assert "dsa-markov model" in (run / "disentanglement.md").read_text()
    code, _, err = run_main("damage", ["--run", run, "--sprites-layers", data_dirs.sprites, "--judge-steps", "3",
                                       "--which", "transition", "--iterations", "1", "--hits", "1", "--repeats", "1",
                                       "--sequences", "4", "--no-progress"])
    assert code == 0, err
    assert json.loads((run / "damage" / "damage.json").read_text())["model"] == "dsa-markov"
    assert not default_root.exists()   # resume, evaluate and damage read the run's own data root


def test_an_unknown_model_path_is_one_line():
    code, _, err = run_main("run", ["--dataset", "sprites", "--model", "no_such_module:SPEC"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no_such_module:SPEC" in err
