import math

import pyro
import pyro.optim
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO

from guides import SVGGuide
from models import SVGConfig, SVGModel, SVGNets

FACTORS = {"z": 1.0}


def tiny(**changes):
    base = dict(nc=1, nf=4, g_dim=8, z_dim=3, rnn_dim=8, n_past=3)
    base.update(changes)
    return SVGConfig(**base)


def pair(config):
    nets = SVGNets(config)
    return nets, SVGModel(nets), SVGGuide(nets)


def registered(module, name):
    def fn(*args, **kwargs):
        pyro.module(name, module)
        return module(*args, **kwargs)
    return fn


@pytest.mark.parametrize("learned_prior", [True, False])
@pytest.mark.parametrize("arch", ["dcgan", "vgg"])
def test_one_svi_step_and_shapes(learned_prior, arch):
    nets, model, guide = pair(tiny(learned_prior=learned_prior, arch=arch, nc=3 if arch == "vgg" else 1))
    x = torch.rand(3, 5, nets.config.nc, 64, 64)
    svi = SVI(registered(model, "svg"), registered(guide, "svg"), pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    assert math.isfinite(svi.step(x, factors=FACTORS))
    g = poutine.trace(guide).get_trace(x, factors=FACTORS)
    m = poutine.trace(poutine.replay(model, trace=g)).get_trace(x, factors=FACTORS)
    m.compute_log_prob()
    assert m.nodes["z"]["value"].shape == (3, 4, 3)
    assert m.nodes["obs"]["fn"].mean.shape == (3, 4, nets.config.nc, 64, 64)
    assert m.nodes["z"]["log_prob"].shape == (3,) and m.nodes["obs"]["log_prob"].shape == (3,)
    assert m.nodes["z"]["scale"] == pytest.approx(1e-4 * nets.config.nc * 64 * 64)


def test_sites_do_not_depend_on_batch_size():
    nets, model, guide = pair(tiny())

    def sites(b):
        x = torch.rand(b, 6, 1, 64, 64)
        g = poutine.trace(guide).get_trace(x, factors=FACTORS)
        m = poutine.trace(poutine.replay(model, trace=g)).get_trace(x, factors=FACTORS)
        return [n for n, s in m.nodes.items() if s["type"] == "sample"]

    assert sites(2) == sites(7) == ["sequences", "z", "obs"]


def reference_loss(nets, x, z):
    """The reference objective, frame by frame as the original code computes it (eval-mode BN)."""
    c = nets.config
    b, t = x.shape[:2]
    mse = kld = 0.0
    post = prior = pred = None
    skip = None
    for i in range(1, t):
        h, sk = nets.encoder(x[:, i - 1])
        h_target, _ = nets.encoder(x[:, i])
        if c.last_frame_skip or i < c.n_past:
            skip = sk
        (mu, sigma), post = nets.posterior(h_target[:, None], post)
        (mu_p, sigma_p), prior = nets.prior(h[:, None], prior)
        g, pred = nets.predictor(torch.cat([h, z[:, i - 1]], -1)[:, None], pred)
        x_pred = nets.decoder(g[:, 0], skip)
        mse = mse + F.mse_loss(x_pred, x[:, i])
        logvar, logvar_p = 2 * sigma.log(), 2 * sigma_p.log()
        kl = (logvar_p - logvar) / 2 + (logvar.exp() + (mu - mu_p) ** 2) / (2 * logvar_p.exp()) - 0.5
        kld = kld + kl.sum() / b
    return mse + c.beta * kld


def test_elbo_equals_the_reference_objective():
    """The loss training minimises (``vdsm.train.ELBOLoss``, with the estimator it picks for SVG)
    equals B * C * H * W * the reference loss + a constant, for the same draw of z."""
    from vdsm.train import ELBOLoss

    torch.manual_seed(0)
    nets, model, guide = pair(tiny(n_past=3))
    nets.eval()  # batch statistics differ between one call and per-frame calls; running ones do not
    x = torch.rand(4, 6, 1, 64, 64)
    torch.manual_seed(1)
    z = poutine.trace(guide).get_trace(x, factors=FACTORS).nodes["z"]["value"]
    torch.manual_seed(1)  # the ELBO draws the same z: its loss is -log p(x | z) + beta * D * analytic KL
    loss = ELBOLoss(model, guide)
    assert isinstance(loss.elbo, TraceMeanField_ELBO)
    ours = loss(x, FACTORS)
    d = x[0, 0].numel()
    n_pixels = x[:, 1:].numel()
    const = n_pixels * math.log(nets.config.emission_scale * math.sqrt(2 * math.pi))
    ref = reference_loss(nets, x, z)
    assert ours.item() == pytest.approx((4 * d * ref + const).item(), rel=1e-5)


def test_networks_start_from_the_references_initialisation():
    nets = SVGNets(tiny(nf=16, g_dim=32, rnn_dim=32))
    convs = [m for m in nets.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear))]
    norms = [m for m in nets.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert abs(weights.std().item() - 0.02) < 0.001 and abs(weights.mean().item()) < 0.001
    assert all(m.bias is None or not m.bias.any() for m in convs + norms)
    gains = torch.cat([m.weight for m in norms])
    assert abs(gains.mean().item() - 1) < 0.005 and abs(gains.std().item() - 0.02) < 0.005


def test_nf_sets_the_vgg_widths():
    for nf in (8, 16):
        nets = SVGNets(tiny(arch="vgg", nf=nf))
        assert [b[0][0].out_channels for b in nets.encoder.blocks] == [nf, 2 * nf, 4 * nf, 8 * nf]
        assert nets.decoder.last[1].in_channels == nf
        x = torch.rand(2, 3, 1, 64, 64)
        h, skips = nets.encode(x)
        assert h.shape == (2, 3, nets.config.g_dim) and skips[0][0].shape == (2, nf, 64, 64)
        assert nets.decoder(h[:, 0], skips[0]).shape == (2, 1, 64, 64)


def test_kth_and_bair_paper_presets_are_the_reference_commands():
    from experiments.configs import load_preset
    kth = load_preset("kth", "paper", model="svg-lp")
    assert {k: kth["model"][k] for k in ("arch", "g_dim", "z_dim", "beta", "n_past", "nc", "posterior_rnn_layers",
                                         "predictor_rnn_layers", "last_frame_skip")} == {
        "arch": "vgg", "g_dim": 128, "z_dim": 24, "beta": 1e-6, "n_past": 10, "nc": 1, "posterior_rnn_layers": 2,
        "predictor_rnn_layers": 2, "last_frame_skip": False}
    assert (kth["train"]["lr"], kth["train"]["n_future"], kth["train"]["batch_size"]) == (8e-4, 10, 100)
    bair = load_preset("bair", "paper", model="svg-lp")
    assert (bair["model"]["z_dim"], bair["model"]["n_past"], bair["model"]["nc"], bair["train"]["batch_size"]) == (
        64, 2, 3, 100)


@pytest.mark.parametrize("learned_prior", [True, False])
def test_predict_with_a_latent_wider_than_the_encoding(learned_prior):
    nets, model, guide = pair(tiny(n_past=2, z_dim=12, g_dim=8, learned_prior=learned_prior))
    nets.eval()
    assert model.predict(torch.rand(2, 2, 1, 64, 64), n_future=3, guide=guide).shape == (2, 5, 1, 64, 64)


def test_predict_keeps_the_past_and_generates_the_future():
    nets, model, guide = pair(tiny(n_past=3))
    nets.eval()
    past = torch.rand(2, 3, 1, 64, 64)
    out = model.predict(past, n_future=4, guide=guide)
    assert out.shape == (2, 7, 1, 64, 64)
    assert torch.equal(out[:, :3], past)
    assert 0 <= out.min() and out.max() <= 1
    again = model.predict(past, n_future=4, guide=guide)
    assert not torch.equal(out[:, 3:], again[:, 3:])  # futures are sampled


def test_predicted_futures_follow_the_models_prior_and_the_past_the_posterior():
    # predict runs the model under Pyro handlers: each z the frame predictor receives, standardised by
    # the distribution it should come from, is N(0, 1): the posterior LSTM's for the conditioning
    # frames, the learned prior's (at the encoding of the previous prediction) for the future ones
    nets, model, guide = pair(tiny(n_past=2))
    nets.eval()
    with torch.no_grad():  # prior and posterior far apart and far from N(0, I): a draw from the wrong one fails
        nets.prior.loc.bias.fill_(3.0), nets.prior.log_var.bias.fill_(-2.0), nets.posterior.loc.bias.fill_(-3.0)
    calls = {"prior": [], "posterior": [], "predictor": []}
    for name, seen in calls.items():
        getattr(nets, name).register_forward_hook(lambda module, args, out, seen=seen: seen.append((args, out)))
    torch.manual_seed(0)
    model.predict(torch.rand(1, 2, 1, 64, 64).expand(4000, -1, -1, -1, -1), n_future=2, guide=guide)
    z_dim = nets.config.z_dim
    zs = [args[0][..., -z_dim:] for args, _ in calls["predictor"]]
    assert [z.shape[1] for z in zs] == [1, 1, 1]         # z_2 (past), z_3 and z_4 (future)
    priors = [out[0] for _, out in calls["prior"]]        # the past's, then one per future frame
    (post_loc, post_scale), _ = calls["posterior"][0][1]
    standardised = [(zs[0] - post_loc) / post_scale]
    standardised += [(z - loc) / scale for z, (loc, scale) in zip(zs[1:], priors[1:])]
    for e in standardised:
        assert e.mean().abs() < 0.02 and (e.std() - 1).abs() < 0.02
        assert (e.abs() > 1.96).float().mean().sub(0.05).abs() < 0.01
    assert zs[2].std(0).min() > 0


@pytest.mark.parametrize("learned_prior", [True, False])
def test_the_transition_scores_a_sequence_at_once_as_stepped_frame_by_frame(learned_prior):
    """Teacher forcing: one call of the hook over the frames (site "z") gives the prior, log-density
    and predictor outputs of the same hook stepped frame by frame with the observed codes."""
    nets, model, guide = pair(tiny(learned_prior=learned_prior))
    nets.eval()
    x = torch.rand(2, 5, 1, 64, 64)
    z = poutine.trace(guide).get_trace(x, factors=FACTORS).nodes["z"]["value"]
    with torch.no_grad():
        state = model.initial_state(2, None, x, x)
        h = state["codes"]
        at_once = poutine.trace(poutine.condition(model.transition, data={"z": z})).get_trace(state, slice(1, 5))
        g_at_once = at_once.nodes["_RETURN"]["value"][1]
        state, g_steps, log_prob = {"prior": None, "predictor": None}, [], 0.0
        for k in range(1, 5):
            state["codes"] = h[:, k - 1:k]
            step = poutine.trace(poutine.condition(model.transition, data={f"z_{k}": z[:, k - 1:k]})).get_trace(state, k)
            state, g = step.nodes["_RETURN"]["value"]
            g_steps.append(g)
            log_prob = log_prob + step.nodes[f"z_{k}"]["fn"].log_prob(z[:, k - 1:k])
    assert torch.allclose(at_once.nodes["z"]["fn"].log_prob(z), log_prob, atol=1e-4)
    assert torch.allclose(g_at_once, torch.cat(g_steps, 1), atol=1e-5)


def test_sequence_lstm_one_call_equals_stepping():
    nets, _, _ = pair(tiny())
    nets.eval()
    inputs = torch.randn(2, 5, 8)
    (loc, scale), _ = nets.posterior(inputs)
    state, steps = None, []
    for t in range(5):
        (l, _), state = nets.posterior(inputs[:, t:t + 1], state)
        steps.append(l)
    assert torch.allclose(loc, torch.cat(steps, 1), atol=1e-6)


def test_the_same_batch_can_be_evaluated_and_stepped_twice():
    nets, model, guide = pair(tiny())
    x = torch.rand(2, 5, 1, 64, 64)
    elbo = Trace_ELBO()
    for _ in range(2):  # the frame encoding is shared within one evaluation, never across two
        loss = elbo.differentiable_loss(model, guide, x, factors=FACTORS)
        loss.backward()


def _concatenating_unet(dec, g, skips, arch):
    """The decoders as SVG writes them: each stage runs on cat([h, skip])."""
    up = (lambda h: F.interpolate(h, scale_factor=2, mode="nearest")) if arch == "vgg" else (lambda h: h)
    h = up(dec.inp(g[:, :, None, None]))
    for block, skip in zip(dec.blocks, reversed(skips[1:])):
        h = up(block(torch.cat([h, skip], 1)))
    last = dec.out if arch == "dcgan" else dec.last
    return torch.sigmoid(last(torch.cat([h, skips[0]], 1)))


@pytest.mark.parametrize("arch", ["dcgan", "vgg"])
def test_split_skip_decoder_equals_the_concatenating_unet_with_gradients(arch):
    torch.manual_seed(0)
    nets = SVGNets(tiny(arch=arch, g_dim=16)).double()  # float64: equal up to rounding, nothing hidden
    x = torch.rand(4, 1, 1, 64, 64, dtype=torch.float64)
    _, skips = nets.encode(x)
    g = torch.randn(4, 16, dtype=torch.float64)
    ours = nets.decoder(g, skips[0])
    grads = torch.autograd.grad(ours.square().sum(), list(nets.decoder.parameters()))
    theirs = _concatenating_unet(nets.decoder, g, skips[0], arch)
    expected = torch.autograd.grad(theirs.square().sum(), list(nets.decoder.parameters()))
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)
    ours_flat, theirs_flat = torch.cat([a.flatten() for a in grads]), torch.cat([b.flatten() for b in expected])
    assert (ours_flat - theirs_flat).norm() <= 1e-9 * theirs_flat.norm()


def test_decode_shares_skip_halves_but_equals_frame_by_frame_decoding():
    torch.manual_seed(0)
    nets = SVGNets(tiny(n_past=3)).eval()  # running BN statistics: results independent of call grouping
    x = torch.rand(2, 7, 1, 64, 64)
    h, skips = nets.encode(x)
    assert len(skips) == 7 and skips[3][0].shape[0] == 2
    sources = nets.skip_sources(7)
    assert sources == [0, 1, 1, 1, 1, 1]     # frames from n_past on reuse the last conditioning frame's skips
    g = torch.randn(2, 6, nets.config.g_dim)
    frame_by_frame = torch.stack([nets.decoder(g[:, k], skips[s]) for k, s in enumerate(sources)], 1)
    torch.testing.assert_close(nets.decode(g, skips, sources), frame_by_frame, rtol=1e-4, atol=1e-5)
    # and the encoder's per-step calls agree with one call on all frames
    h_all, _ = nets.encoder(x.flatten(0, 1))
    torch.testing.assert_close(h, h_all.reshape(2, 7, -1), rtol=1e-4, atol=1e-5)


def test_the_presets_frame_predictor_has_no_batchnorm_as_the_release():
    """The SVG release's lstm output is linear -> tanh (its BatchNorm commented out): the default and
    every preset build that; ``predictor_batchnorm`` adds the BatchNorm."""
    from experiments.configs import load_model_preset
    from models.registry import get

    for dataset in ("smmnist", "mmnist", "kth", "bair"):
        for preset in ("paper", "cpu"):
            for name in ("svg-lp", "svg-fp"):
                assert load_model_preset(get(name), dataset, preset)["model"]["predictor_batchnorm"] is False
    nets, _, _ = pair(tiny())
    assert nets.predictor.norm is None
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in nets.modules())
    assert isinstance(pair(tiny(predictor_batchnorm=True))[0].predictor.norm, torch.nn.BatchNorm1d)
