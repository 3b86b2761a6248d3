"""DSA (Li & Mandt 2018) as a configuration of the family: sites, its objective written out, the
judge protocols' generations, and the runner / evaluate / damage path of ``--model dsa``."""
import json
import subprocess
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceMeanField_ELBO

from models.dsa import DSAConfig
from tests_helpers import run_main
from models.dsa import DSARun as DSA

REPO = Path(__file__).resolve().parents[1]
TINY_FLAGS = ["--f-dim", "4", "--z-dim", "3", "--g-dim", "8", "--nf", "4", "--rnn-dim", "8", "--batch-size", "2",
              "--steps", "2", "--eval-sequences", "4", "--num-workers", "0", "--no-progress"]


def tiny(**kw):
    torch.manual_seed(0)
    return DSA(DSAConfig(**{"f_dim": 4, "z_dim": 3, "g_dim": 8, "nf": 4, "rnn_dim": 8, **kw}))


def frames(b, t):
    return torch.rand(b, t, 3, 64, 64, generator=torch.Generator().manual_seed(b * 10 + t))


@pytest.mark.parametrize("posterior", ["full", "factorised"])
def test_sites_and_one_svi_step(posterior):
    api = tiny(posterior=posterior)
    x = frames(3, 4)
    guide_trace = poutine.trace(api.guide).get_trace(x, factors=api.factors())
    trace = poutine.trace(poutine.replay(api.model, guide_trace)).get_trace(x, factors=api.factors())
    latent = [n for n, s in trace.nodes.items()
              if s["type"] == "sample" and not s["is_observed"] and not poutine.util.site_is_subsample(s)]
    assert latent == ["identity", "z_1", "z_2", "z_3", "z_4"]
    assert trace.nodes["identity"]["value"].shape == (3, 4) and trace.nodes["z_2"]["value"].shape == (3, 3)
    assert trace.nodes["obs"]["fn"].event_shape == (4, 3, 64, 64)
    svi = pyro.infer.SVI(api.model, api.guide, pyro.optim.Adam({"lr": 1e-3}), TraceMeanField_ELBO())
    assert torch.isfinite(torch.tensor(svi.step(x, factors=api.factors())))


def test_the_objective_is_dsas_elbo_written_out():
    """-ELBO = -log p(x | z, f) + KL(q(f) || N(0, I)) + sum_t KL(q(z_t) || p(z_t | z_<t)), the KLs in
    closed form along the guide's sample, as DSA's objective."""
    api = tiny()
    x = frames(2, 3)
    pyro.set_rng_seed(1)
    loss = TraceMeanField_ELBO().differentiable_loss(api.model, api.guide, x, factors=api.factors())
    pyro.set_rng_seed(1)
    guide_trace = poutine.trace(api.guide).get_trace(x, factors=api.factors())
    nets = api.nets
    h = nets.features(x)
    f_loc, f_scale = nets.static_posterior(h)
    f = guide_trace.nodes["identity"]["value"]
    z = torch.stack([guide_trace.nodes[f"z_{k}"]["value"] for k in (1, 2, 3)], 1)
    z_loc, z_scale = nets.frame_posterior(h, f)
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(f_loc, f_scale),
                                           torch.distributions.Normal(0.0, 1.0)).sum()
    z_prev, state = torch.zeros(2, 3), None
    for k in range(3):
        p_loc, p_scale, state = nets.prior_step(z_prev, state)
        kl = kl + torch.distributions.kl_divergence(torch.distributions.Normal(z_loc[:, k], z_scale[:, k]),
                                                    torch.distributions.Normal(p_loc, p_scale)).sum()
        z_prev = z[:, k]
    nll = torch.nn.functional.binary_cross_entropy_with_logits(nets.decode_logits(z, f), x, reduction="sum")
    assert float(loss.detach()) == pytest.approx(float((nll + kl).detach()), rel=1e-5)


def test_generations_keep_what_the_protocols_fix():
    """reconstruct: every latent at its posterior mean; fix_dynamics: z_1..z_T of x, f from the
    prior; fix_identity: f of x, z_1..z_T from the LSTM prior; transfer: z of A, f of B."""
    api = tiny().eval()
    a, b = frames(2, 4), frames(2, 4) * 0.5
    nets = api.nets

    def means(x):
        h = nets.features(x)
        f, _ = nets.static_posterior(h)
        return nets.frame_posterior(h, f)[0], f

    with torch.no_grad():
        z_a, f_a = means(a)
        z_b, f_b = means(b)

        def decoded(z, f):
            return torch.sigmoid(nets.decode_logits(z, f))

        assert (api.reconstruct(a) - decoded(z_a, f_a)).abs().max() < 1e-5
        assert (api.transfer_action(a, b) - decoded(z_a, f_b)).abs().max() < 1e-5
        drawn_f = torch.randn(2, 4)
        api.model.static_prior = lambda batch, ref: dist.Delta(drawn_f).to_event(1)   # a known prior draw
        assert (api.fix_dynamics(a) - decoded(z_a, drawn_f)).abs().max() < 1e-5
        del api.model.static_prior
        path = torch.randn(2, 4, 3)
        api.model.transition = lambda state, t: (None, api.model.frame_site(t, path[:, t - 1], torch.full((2, 3), 1e-6)))
        assert (api.fix_identity(a) - decoded(path, f_a)).abs().max() < 1e-3
        torch.manual_seed(0)
        first = api.fix_identity(a)
        torch.manual_seed(0)
        assert torch.equal(first, api.fix_identity(a))


def test_dsa_runs_evaluates_and_damages_from_the_command_line(tmp_path, data_dirs, judge_root):
    run, root = tmp_path / "dsa", judge_root
    code, _, err = run_main("run", ["--dataset", "sprites", "--model", "dsa", "--sprites-layers", data_dirs.sprites,
                                    "--data-root", root, "--out", run, *TINY_FLAGS])
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())
    assert config["model_name"] == "dsa" and config["preset"] == "cpu" and config["model"]["f_dim"] == 4
    assert config["departs_from_paper"] and (run / "checkpoints" / "dsa.pt").is_file()
    for picture in ("reconstructions.png", "identity_swap.png", "action_transfer.png", "samples.gif"):
        assert (run / picture).stat().st_size > 0, picture
    assert json.loads((run / "metrics.json").read_text())["evaluation"]["split"] == "val"
    code, _, err = run_main("evaluate", ["--run", run, "--judge-steps", "3", "--batch-size", "6", "--repeats", "1",
                                         "--data-root", root, "--sprites-layers", data_dirs.sprites])
    assert code == 0, err
    protocol = json.loads((run / "metrics.json").read_text())["judge_protocol"]
    assert protocol["model"] == "dsa" and protocol["fix_dynamics"]["protocol"]
    assert set(protocol["fix_dynamics"]["prior_identity"]) == {"body", "bottom", "top", "hair"}
    assert "(sprites, test split, dsa model)" in (run / "disentanglement.md").read_text()
    code, _, err = run_main("evaluate", ["--run", run, "--samples", "3"])
    assert code == 2 and "not to this DSA run" in err
    # experiments.damage through the shell once, as a user types it
    damage = subprocess.run([sys.executable, "-m", "experiments.damage", "--run", str(run), "--judge-steps", "3",
                             "--iterations", "1", "--hits", "5", "--repeats", "1", "--sequences", "4", "--which",
                             "decoder", "--data-root", str(root), "--sprites-layers", str(data_dirs.sprites),
                             "--out", str(tmp_path / "damage"), "--no-progress"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert damage.returncode == 0, damage.stderr
    assert "| decoder |" in (tmp_path / "damage" / "fragility.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "sprites", "--f-dim", "8"], "--f-dim only applies to --model dsa"),
    (["--dataset", "sprites", "--model", "dsa", "--stage1-steps", "3"], "--stage1-steps only applies"),
    (["--dataset", "sprites", "--model", "dsa", "--n-future", "3"], "--n-future only applies"),
    (["--dataset", "sprites", "--model", "dsa", "--posterior", "lstm"], "posterior='lstm'"),
    (["--dataset", "smmnist", "--model", "dsa"], "no dsa cpu preset for dataset 'smmnist'"),
])
def test_flags_that_do_not_apply_are_refused(argv, message, tmp_path):
    code, _, err = run_main("run", [*argv, "--out", tmp_path / "x"])
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "x").exists()
