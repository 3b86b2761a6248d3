"""DBSE (Berman et al. 2024) as a member of the family: sites, the objective written out as the release's
run_sprites.py computes it, what each posterior reads, and ``--model dbse`` through run, resume, evaluate
and damage."""
import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceMeanField_ELBO

from models.dbse import DBSEConfig, DBSERun
from tests_helpers import frames, release_kls, run_main, train_resume_evaluate_damage

TINY = {"f_dim": 4, "z_dim": 3, "g_dim": 8, "nf": 4, "rnn_dim": 8}
TINY_FLAGS = ["--f-dim", "4", "--z-dim", "3", "--g-dim", "8", "--nf", "4", "--rnn-dim", "8", "--batch-size", "3",
              "--eval-sequences", "4", "--num-workers", "0", "--no-progress"]


def tiny(**kw):
    torch.manual_seed(0)
    return DBSERun(DBSEConfig(**{**TINY, **kw}))


def test_sites_and_shapes_do_not_depend_on_the_batch_size_and_one_svi_step_trains():
    run = tiny()
    names = {}
    for b in (2, 5):
        x = frames(b, 4)
        guide_trace = poutine.trace(run.guide).get_trace(x, factors=run.factors())
        trace = poutine.trace(poutine.replay(run.model, guide_trace)).get_trace(x, factors=run.factors())
        names[b] = [(n, s["is_observed"]) for n, s in trace.nodes.items()
                    if s["type"] == "sample" and not poutine.util.site_is_subsample(s)]
        assert trace.nodes["identity"]["value"].shape == (b, 4) and trace.nodes["z_4"]["value"].shape == (b, 3)
        assert trace.nodes["first_frame"]["fn"].batch_shape == (b,)
        assert [f.name for f in trace.nodes["first_frame"]["cond_indep_stack"]] == ["sequences"]
    assert names[2] == names[5]
    assert [n for n, observed in names[2] if not observed] == ["identity", "z_1", "z_2", "z_3", "z_4"]
    svi = pyro.infer.SVI(run.model, run.guide, pyro.optim.Adam({"lr": 1e-3}), TraceMeanField_ELBO())
    assert math.isfinite(svi.step(frames(3, 4), factors=run.factors()))


def _release_loss(nets, x, f, z, c):
    """The release's batch loss (run_sprites.py ``train``), written as it computes it, on the guide's draws
    f and z: 5 x SSE(sequence) / B + 1 x SSE(frame 1 decoded again) / B + KL_f / B + KL_z / B."""
    b = x.shape[0]
    recon_seq = torch.sigmoid(nets.decode_logits(z, f))
    recon_frame = torch.sigmoid(nets.decode_logits(z[:, :1], f))[:, 0]
    l_recon = ((recon_seq - x) ** 2).sum()
    l_recon_frame = ((recon_frame - x[:, 0]) ** 2).sum()
    kld_f, kld_z = release_kls(nets, x, z)
    return (5 * l_recon + 1 * l_recon_frame + kld_f + kld_z) / b, l_recon_frame / b


def test_the_objective_is_the_releases_loss_written_out():
    """What training optimises (TraceMeanField_ELBO's loss) is B times the release's batch loss, plus the
    normalising constant of the Normal of scale sqrt(1/10) the release's 5 x L2 is, for one draw of the
    latents; the factor site holds B times the release's frame-1 term."""
    run = tiny()
    c, x = run.nets.config, frames(4, 3)
    b = x.shape[0]
    pyro.set_rng_seed(1)
    loss = TraceMeanField_ELBO().differentiable_loss(run.model, run.guide, x, factors=run.factors()).detach()
    pyro.set_rng_seed(1)
    guide_trace = poutine.trace(run.guide).get_trace(x, factors=run.factors())
    f = guide_trace.nodes["identity"]["value"]
    z = torch.stack([guide_trace.nodes[f"z_{k}"]["value"] for k in (1, 2, 3)], 1)
    constant = x.numel() * 0.5 * math.log(2 * math.pi * 0.1)   # per pixel: log (sqrt(1/10) sqrt(2 pi))
    with torch.no_grad():
        expected, frame_term = _release_loss(run.nets, x, f, z, c)
    assert float(loss - constant) == pytest.approx(float(b * expected), rel=1e-5)
    trace = poutine.trace(poutine.replay(run.model, guide_trace)).get_trace(x, factors=run.factors())
    assert float(-trace.nodes["first_frame"]["fn"].log_factor.sum().detach()) == pytest.approx(b * float(frame_term), rel=1e-5)
    assert float(frame_term) > 1.0   # the term is there to be checked
    plain = tiny(weight_first_frame=0.0)
    assert "first_frame" not in poutine.trace(plain.model).get_trace(x, factors=plain.factors()).nodes


def test_the_static_posterior_reads_the_first_frame_and_the_dynamics_its_differences():
    run = tiny(init_std=0.0)   # PyTorch's initialisation: inputs reach the outputs visibly
    run.nets.eval()   # BatchNorm on running statistics: each sequence's posterior is its own
    x = frames(3, 4)
    moved = x.clone()
    moved[:, 1:] = frames(3, 3)
    with torch.no_grad():
        s, _, z, _ = run.nets.posterior(x)
        s_moved, _, z_moved, _ = run.nets.posterior(moved)
        again = run.nets.posterior(x.clone())
    assert torch.equal(s, s_moved) and not torch.allclose(z[:, 1:], z_moved[:, 1:])
    assert torch.equal(z, again[2])   # the paper's zero difference at frame 1: deterministic
    noisy = tiny(first_difference="noise", init_std=0.0)
    noisy.nets.eval()
    with torch.no_grad():
        first, second = noisy.nets.posterior(x)[2], noisy.nets.posterior(x)[2]
    assert not torch.allclose(first, second)   # the release's fresh noise, in evaluation too


def test_its_initialisation_is_the_releases():
    nets = tiny().nets
    linear = nets.static_out.weight.detach()
    assert float(linear.std()) == pytest.approx(0.01, rel=0.2) and float(nets.static_out.bias.detach().abs().max()) == 0
    default = tiny(init_std=0.0).nets.static_out.weight.detach()
    assert float(default.std()) > 0.05   # PyTorch's uniform(+-1/sqrt(fan_in)) for fan_in 8


def test_dbse_runs_resumes_evaluates_and_damages_from_the_command_line(tmp_path, data_dirs, judge_root):
    config, stats, _ = train_resume_evaluate_damage("dbse", TINY_FLAGS, tmp_path, data_dirs, judge_root)
    assert config["model_name"] == "dbse" and config["preset"] == "cpu" and config["model"]["first_difference"] == "zero"
    assert "first_frame" in stats["final_terms_per_frame"]


def test_its_options_are_flags_refused_for_other_models(tmp_path):
    code, _, err = run_main("run", ["--dataset", "sprites", "--model", "dsa", "--first-difference", "noise",
                                    "--out", tmp_path / "x"])
    assert code == 2 and "--first-difference only applies to --model dbse" in err and "Traceback" not in err
    code, _, err = run_main("run", ["--dataset", "sprites", "--model", "dbse", "--first-difference", "pixels",
                                    "--out", tmp_path / "y"])
    assert code == 2 and "first_difference='pixels'" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
