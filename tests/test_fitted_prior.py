"""The identity prior fitted after training: EM, the size chosen on val, and the runs that use it."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pyro import poutine

from vdsm.fitted_prior import DiagonalMixture, fit_mixture_chosen_on_val, fit_mixture

REPO = Path(__file__).resolve().parents[1]


def clusters(n_per, centres, spread, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([c + spread * torch.randn(n_per, centres.shape[1], generator=g) for c in centres])


CENTRES = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def test_em_finds_separated_clusters_and_the_log_density_matches_the_distribution():
    x = clusters(200, CENTRES, 0.05, seed=0)
    mixture, train_ll = fit_mixture(x, 4, min_scale=1e-3)
    found = sorted(mixture.loc.tolist())
    assert torch.allclose(torch.tensor(found), torch.tensor(sorted(CENTRES.tolist())), atol=0.02)
    assert torch.allclose(mixture.scale, torch.full_like(mixture.scale, 0.05), atol=0.01)
    assert torch.allclose(mixture.logits.exp(), torch.full((4,), 0.25), atol=0.01)
    reference = mixture.distribution(len(x)).log_prob(x)   # pyro's MixtureSameFamily, built from [N, K, D]
    assert torch.allclose(mixture.log_prob(x).float(), reference, atol=1e-3)
    assert train_ll == pytest.approx(float(reference.mean()), abs=1e-3)
    # the scale floor: a component is never narrower than the posterior of one sequence
    tight, _ = fit_mixture(x, 4, min_scale=0.2)
    assert float(tight.scale.min()) >= 0.2 - 1e-6


def test_the_mixture_size_is_chosen_by_the_val_likelihood():
    train, val = clusters(100, CENTRES, 0.05, seed=1), clusters(30, CENTRES, 0.05, seed=2)
    mixture, tried = fit_mixture_chosen_on_val(train, val, min_scale=1e-3, max_components=64)
    assert [row["components"] for row in tried] == [1, 4, 16, 64]
    best = max(tried, key=lambda row: row["val_loglik"])
    assert mixture.loc.shape[0] == best["components"]
    assert tried[1]["val_loglik"] > tried[0]["val_loglik"] + 1   # four clusters beat one Gaussian
    # one training point per cluster: a large mixture overfits train and val says so
    few, tried = fit_mixture_chosen_on_val(CENTRES, clusters(30, CENTRES, 0.3, seed=3), min_scale=0.3, max_components=4)
    assert [row["components"] for row in tried] == [1, 4]


def test_state_round_trip_and_device_move():
    mixture, _ = fit_mixture(clusters(50, CENTRES, 0.1, seed=4), 4, min_scale=1e-3)
    back = DiagonalMixture.from_state_dict(mixture.state_dict()).to("cpu")
    x = torch.rand(5, 3)
    assert torch.equal(back.log_prob(x), mixture.log_prob(x))


def test_a_run_with_a_fitted_identity_prior_draws_identities_from_it(vdsm_run, judge_root, tmp_path, data_dirs):
    """--identity-prior-components: the runner fits the mixture after training, VDSM.load uses it
    for every identity drawn from the prior; fit_prior does the same for a run trained without it."""
    from tests_helpers import copy_run, run_main
    from models.vdsm import VDSMRun as VDSM

    run = copy_run(vdsm_run.path, tmp_path / "run")   # trained with 4 components for both fitted priors
    summary = json.loads((run / "metrics.json").read_text())["identity_prior"]
    assert [row["components"] for row in summary["tried"]] == [1, 4] and summary["components"] in (1, 4)
    assert summary["train_sequences"] > summary["val_sequences"] > 0
    vdsm = VDSM.load(run)
    mixture = vdsm.model2.identity_mixture
    assert mixture is not None and vdsm.model1.identity_mixture is mixture
    trace = poutine.trace(vdsm.model2).get_trace(None, factors=vdsm.factors(), batch_size=3, seq_len=4)
    site = trace.nodes["identity"]
    assert site["fn"].batch_shape == (3,) and site["fn"].event_shape == (vdsm.config.n_experts,)
    assert torch.allclose(site["fn"].log_prob(site["value"]), mixture.distribution(3).log_prob(site["value"]))
    # new dynamics and first poses come jointly from the dynamics mixture: what fix_identity and generate decode
    dyn = json.loads((run / "metrics.json").read_text())["dynamics_prior"]
    assert dyn["components"] in (1, 4) and vdsm.dynamics_mixture.loc.shape[1] == vdsm.config.dynamics_dim + vdsm.config.z_dim
    x = torch.rand(3, 4, 3, 64, 64)
    torch.manual_seed(5)
    drawn = vdsm.dynamics_mixture.sample(3)
    expected = vdsm.decode({"identity": vdsm.identities(x), "dynamics": drawn[:, :vdsm.config.dynamics_dim],
                             "z_1": drawn[:, vdsm.config.dynamics_dim:]}, 3, 4)
    torch.manual_seed(5)
    assert torch.allclose(vdsm.fix_identity(x), expected, atol=1e-6)
    assert vdsm.fitted_priors == ["identity", "dynamics"]
    code, _, err = run_main("evaluate", ["--run", run, "--judge-steps", "3", "--batch-size", "6", "--repeats", "1",
                                         "--data-root", judge_root, "--sprites-layers", data_dirs.sprites])
    assert code == 0, err
    assert "Departure from the published protocol: prior samples draw identity and dynamics" in \
        (run / "disentanglement.md").read_text()
    # without the file, identities come from the Gaussian prior again
    (run / "checkpoints" / "identity_prior.pt").unlink()
    assert VDSM.load(run).model2.identity_mixture is None
    code, stdout, err = run_main("fit_prior", ["--run", run, "--sprites-layers", data_dirs.sprites,
                                               "--max-components", "1"])
    assert code == 0, err
    assert "identity: kept 1 components" in stdout and "dynamics: kept 1 components" in stdout
    assert VDSM.load(run).model2.identity_mixture.loc.shape == (1, vdsm.config.n_experts)


def test_fit_prior_from_the_shell_refuses_bad_input_in_one_line(vdsm_run):
    bad = subprocess.run([sys.executable, "-m", "experiments.fit_prior", "--run", str(vdsm_run.path),
                          "--max-components", "0"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--max-components" in bad.stderr
