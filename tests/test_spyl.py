"""SPYL (Naiman, Berman & Azencot 2023) as a member of the family: sites, the objective against the
release's train.py and sample_and_predict.py written out, the warm-up, and ``--model spyl`` through run,
resume, evaluate and damage."""
import json
import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceMeanField_ELBO

from models.cdsvae import mi_penalty
from models.spyl import SPEC, SPYLConfig, SPYLFactors, SPYLRun, farthest_by_kl, sample_and_predict_nce
from tests_helpers import frames, release_kls, run_main, train_resume_evaluate_damage
from vdsm import __version__
from vdsm.checkpoint import CheckpointError

TINY = {"f_dim": 4, "z_dim": 3, "g_dim": 8, "nf": 4, "rnn_dim": 8, "bank_factor": 2, "mws_dataset_size": 50}
TINY_FLAGS = ["--f-dim", "4", "--z-dim", "3", "--g-dim", "8", "--nf", "4", "--rnn-dim", "8", "--bank-factor", "2",
              "--batch-size", "3", "--eval-sequences", "4", "--num-workers", "0", "--no-progress"]
TERMS = ("mi_sd", "static_nce", "dynamics_nce")


def tiny(**kw):
    torch.manual_seed(0)
    return SPYLRun(SPYLConfig(**{**TINY, **kw}))


def test_sites_and_shapes_do_not_depend_on_the_batch_size_and_one_svi_step_trains():
    run = tiny()
    names = {}
    for b in (2, 5):
        x = frames(b, 4)
        guide_trace = poutine.trace(run.guide).get_trace(x, factors=run.factors())
        trace = poutine.trace(poutine.replay(run.model, guide_trace)).get_trace(x, factors=run.factors())
        names[b] = [(n, s["is_observed"]) for n, s in trace.nodes.items()
                    if s["type"] == "sample" and not poutine.util.site_is_subsample(s)]
        for term in TERMS:   # one value per sequence, in the plate
            assert trace.nodes[term]["fn"].batch_shape == (b,), term
        assert trace.nodes["identity"]["scale"] == 5.0 and guide_trace.nodes["identity"]["scale"] == 5.0
    assert names[2] == names[5]
    assert [n for n, observed in names[2] if not observed] == ["identity", "z_1", "z_2", "z_3", "z_4"]
    svi = pyro.infer.SVI(run.model, run.guide, pyro.optim.Adam({"lr": 1e-3}), TraceMeanField_ELBO())
    assert math.isfinite(svi.step(frames(3, 4), factors=run.factors()))


def test_the_contrastive_pieces_are_the_releases_written_out():
    """``sample_and_predict_nce`` is the release's ``contrastive_loss(tau=0.5, normalize=True)`` per
    sequence, and ``farthest_by_kl`` its ``kl_contrast`` with ``neg_mode="soft"``."""
    g = torch.Generator().manual_seed(0)
    b, n, d, cneg = 4, 8, 5, 3
    anchor, positive, bank = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g), torch.randn(n, d, generator=g)
    logvar, bank_logvar = torch.randn(b, d, generator=g) * 0.3, torch.randn(n, d, generator=g) * 0.3

    v_var = logvar.exp()[:, None]   # kl_contrast, as written
    klf = 0.5 * torch.sum(bank_logvar - logvar[:, None] + ((v_var + (anchor[:, None] - bank) ** 2) / bank_logvar.exp()) - 1,
                          dim=-1)
    negatives = bank[torch.argsort(klf, dim=-1, descending=True)[:, :cneg]]
    assert torch.equal(farthest_by_kl(anchor, (0.5 * logvar).exp(), bank, (0.5 * bank_logvar).exp(), cneg), negatives)

    tau, xn = 0.5, negatives.transpose(0, 1)   # contrastive_loss.forward, as written
    numerator = torch.exp(torch.sum(anchor * positive, dim=-1) / (anchor.norm(dim=1) * positive.norm(dim=1)) / tau)
    denominator = torch.exp(torch.sum(anchor * xn, dim=-1) / (anchor.norm(dim=1) * xn.norm(dim=-1)) / tau).sum(dim=0)
    release = torch.mean(-torch.log(numerator / (numerator + denominator)))
    assert float(sample_and_predict_nce(anchor, positive, negatives, tau).mean()) == pytest.approx(float(release), rel=1e-5)


def test_the_objective_before_the_contrastive_terms_is_the_releases_loss_written_out():
    """During the warm-up (contrastive factor 0) what training optimises is B times the release's batch
    loss: 10 x SSE / B + 5 x KL_s / B + KL_d / B + mi_sd, plus the Normal's constant, for one draw."""
    run = tiny()
    c, x = run.nets.config, frames(4, 3)
    b = x.shape[0]
    factors = SPYLFactors({}).factors(0.0)
    assert factors["contrastive"] == 0.0 and SPYLFactors({}).factors(0.05)["contrastive"] == 1.0
    pyro.set_rng_seed(1)
    loss = TraceMeanField_ELBO().differentiable_loss(run.model, run.guide, x, factors=factors).detach()
    pyro.set_rng_seed(1)
    guide_trace = poutine.trace(run.guide).get_trace(x, factors=factors)
    trace = poutine.trace(poutine.replay(run.model, guide_trace)).get_trace(x, factors=factors)
    assert "mi_sd" in trace.nodes and not {"static_nce", "dynamics_nce"} & set(trace.nodes)
    s = guide_trace.nodes["identity"]["value"]
    d = torch.stack([guide_trace.nodes[f"z_{k}"]["value"] for k in (1, 2, 3)], 1)
    with torch.no_grad():
        s_mean, s_scale, d_mean, d_scale = run.nets.posterior(x)
        l_recon = ((torch.sigmoid(run.nets.decode_logits(d, s)) - x) ** 2).sum()
        kld_s, kld_d = release_kls(run.nets, x, d)
        mi_sd = mi_penalty(s, d, s_mean, s_scale, d_mean, d_scale, c.mws_dataset_size).mean()
    expected = 10 * l_recon / b + 5 * kld_s / b + kld_d / b + mi_sd
    constant = x.numel() * 0.5 * math.log(2 * math.pi / 20)   # per pixel: log (sqrt(1/20) sqrt(2 pi))
    assert float(loss - constant) == pytest.approx(float(b * expected), rel=1e-5)


def test_after_the_warm_up_each_contrastive_term_is_a_factor_per_sequence():
    run, x = tiny(), frames(4, 3)
    pyro.set_rng_seed(2)
    guide_trace = poutine.trace(run.guide).get_trace(x, factors=run.factors())
    trace = poutine.trace(poutine.replay(run.model, guide_trace)).get_trace(x, factors=run.factors())
    for term in ("static_nce", "dynamics_nce"):
        values = -trace.nodes[term]["fn"].log_factor.detach()
        # InfoNCE with one positive among 1 + N candidates: between 0 and far above log(1 + N) at random
        assert values.shape == (4,) and bool((values > 0).all()), term
    unweighted = tiny(weight_static_nce=0.0, weight_dynamics_nce=0.0)
    trace = poutine.trace(unweighted.model).get_trace(x, factors=unweighted.factors())
    assert not {"static_nce", "dynamics_nce"} & set(trace.nodes)


def test_spyl_runs_resumes_evaluates_and_damages_from_the_command_line(tmp_path, data_dirs, judge_root):
    config, stats, _ = train_resume_evaluate_damage("spyl", TINY_FLAGS, tmp_path, data_dirs, judge_root)
    assert config["model_name"] == "spyl" and config["train"]["identity_kl"] == 5.0
    assert set(TERMS) <= set(stats["final_terms_per_frame"])


def test_its_options_are_flags_refused_for_other_models(tmp_path):
    code, _, err = run_main("run", ["--dataset", "sprites", "--model", "cdsvae", "--bank-factor", "3",
                                    "--out", tmp_path / "x"])
    assert code == 2 and "--bank-factor only applies to --model spyl" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_the_identity_kl_key_loads_and_an_unknown_train_key_is_refused_in_one_line(tmp_path):
    config = {**SPEC.defaults(), "model_name": "spyl", "vdsm_version": __version__}
    config["train"]["kl_static"] = config["train"].pop("identity_kl")
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="unknown train key 'kl_static'"):
        SPYLRun.read_config(tmp_path)
    config["train"]["identity_kl"] = config["train"].pop("kl_static")
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert SPYLRun.read_config(tmp_path)["train"]["identity_kl"] == 5.0
