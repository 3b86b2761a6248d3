import dataclasses
import math

import pyro
import pyro.optim
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO

from guides import VDSMStage1Guide, VDSMStage2Guide
from guides.examples import autonormal_identity, mean_field
from models import VDSMConfig, VDSMStage1Model, VDSMStage2Model
from tests_helpers import check_elbo_under_bf16_autocast
from vdsm.annealing import Schedule
from vdsm.api import VDSM
from vdsm.nets import MixtureOfExpertsDecoder
from vdsm.train import TrainOptions, train_stage

TINY = VDSMConfig(nc=3, z_dim=6, n_experts=4, encoder_widths=(4, 4, 8, 8), encoder_features=16,
                  decoder_widths=(16, 8, 8, 4), dynamics_dim=5, trans_dim=8, rnn_dim=8, rnn_layers=2, rnn_dropout=0.1)
FACTORS = Schedule().factors(0.3)
PAIRS = [(VDSMStage1Model, VDSMStage1Guide), (VDSMStage2Model, VDSMStage2Guide)]


def frames(b, t, nc=3):
    return torch.rand(b, t, nc, 64, 64)


def registered(module):
    """Model/guide callable that registers the module's parameters with Pyro's param store (for SVI)."""
    def fn(*args, **kwargs):
        pyro.module(type(module).__name__, module)
        return module(*args, **kwargs)
    return fn


@pytest.mark.parametrize("model_cls,guide_cls", PAIRS)
@pytest.mark.parametrize("emission", ["bernoulli", "normal", "laplace"])
def test_one_svi_step_under_validation(model_cls, guide_cls, emission):
    config = VDSMConfig(**{**TINY.to_dict(), "emission": emission})
    model, guide = model_cls(config), guide_cls(config)
    svi = SVI(registered(model), registered(guide), pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    x = frames(3, 5)
    before = [p.detach().clone() for p in model.parameters()]
    loss = svi.step(x, factors=FACTORS)
    assert torch.isfinite(torch.tensor(loss))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    guide_trace = poutine.trace(guide).get_trace(x, factors=FACTORS)
    trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, factors=FACTORS)
    trace.compute_log_prob()
    assert trace.nodes["identity"]["value"].shape == (3, 4)
    assert trace.nodes["obs"]["fn"].mean.shape == (3, 5, 3, 64, 64)
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and name != "sequences":
            assert site["log_prob"].shape == (3,), name  # one batch plate, everything else is event
    if model_cls is VDSMStage1Model:
        assert trace.nodes["z"]["value"].shape == (3, 5, 6)
    else:
        assert trace.nodes["dynamics"]["value"].shape == (3, 5)
        assert [n for n in trace.nodes if n.startswith("z_")] == [f"z_{t}" for t in range(1, 6)]


@pytest.mark.parametrize("model_cls,guide_cls", PAIRS)
def test_sites_do_not_depend_on_batch_size(model_cls, guide_cls):
    model, guide = model_cls(TINY), guide_cls(TINY)

    def sites(b):
        x = frames(b, 4)
        g = poutine.trace(guide).get_trace(x, factors=FACTORS)
        m = poutine.trace(poutine.replay(model, trace=g)).get_trace(x, factors=FACTORS)
        return [n for n, s in m.nodes.items() if s["type"] == "sample"], \
               [n for n, s in g.nodes.items() if s["type"] == "sample"]

    assert sites(2) == sites(7)


def test_annealing_scales_model_and_guide_sites_alike():
    model, guide = VDSMStage2Model(TINY), VDSMStage2Guide(TINY)
    factors = {"temp_id": 3.0, "identity": 0.25, "dynamics": 0.5, "z": 2.0}
    x = frames(2, 3)
    g = poutine.trace(guide).get_trace(x, factors=factors)
    m = poutine.trace(poutine.replay(model, trace=g)).get_trace(x, factors=factors)
    for name, want in [("identity", 0.25), ("dynamics", 0.5), ("z_1", 2.0), ("z_3", 2.0)]:
        assert g.nodes[name]["scale"] == want and m.nodes[name]["scale"] == want
    assert m.nodes["obs"]["scale"] == 1.0


def test_grouped_decoder_equals_a_loop_over_sequences():
    dec = MixtureOfExpertsDecoder(z_dim=5, n_experts=3, nc=2, widths=(8, 6, 4, 4))
    z, mix = torch.randn(4, 3, 5), torch.softmax(torch.randn(4, 3), -1)
    batched = dec(z, mix)
    assert batched.shape == (4, 3, 2, 64, 64)
    for b in range(4):
        assert torch.allclose(batched[b], _decode_one_sequence(dec, z[b], mix[b]), atol=1e-5)


def _decode_one_sequence(dec, z, mix):
    """The decoder written out for one sequence: mixed weights, then (with FiLM) the affine maps."""
    code = mix.log() - mix.log().mean()
    h = torch.cat([z, mix.expand(z.shape[0], -1)], -1)[:, :, None, None]
    for k, (w, bias) in enumerate(zip(dec.weights, dec.biases)):
        stride = 1 if k == 0 else 2  # 1x1 -> 4x4, then doubling to 64x64
        h = F.conv_transpose2d(h, torch.einsum("e,eiohw->iohw", mix, w), mix @ bias, stride=stride,
                               padding=0 if stride == 1 else 1)
        if k < len(dec.weights) - 1:
            h = F.leaky_relu(h, 0.2)
            if dec.film is not None:
                gain, shift = dec.film[k](code).chunk(2)
                h = h * (1 + gain)[:, None, None] + shift[:, None, None]
    return h


def test_identity_film_starts_as_the_reference_and_modulates_each_sequence_by_its_mixture():
    torch.manual_seed(0)
    dec = MixtureOfExpertsDecoder(z_dim=5, n_experts=3, nc=2, widths=(8, 6, 4, 4), identity_film=True)
    reference = MixtureOfExpertsDecoder(z_dim=5, n_experts=3, nc=2, widths=(8, 6, 4, 4))
    reference.load_state_dict({k: v for k, v in dec.state_dict().items() if not k.startswith("film")})
    z, mix = torch.randn(4, 3, 5), torch.softmax(torch.randn(4, 3), -1)
    assert torch.equal(dec(z, mix), reference(z, mix))  # zero-initialised maps
    with torch.no_grad():
        for layer in dec.film:
            layer.weight.normal_()
        batched = dec(z, mix)
        for b in range(4):
            assert torch.allclose(batched[b], _decode_one_sequence(dec, z[b], mix[b]), atol=1e-4)
        assert not torch.allclose(batched, reference(z, mix), atol=1e-3)


def _first_pose_mean(guide, x, d):
    """Mean of q(z_1 | x) with the dynamics site fixed to ``d`` (same random draws on every call)."""
    torch.manual_seed(1)
    trace = poutine.trace(poutine.condition(guide, data={"dynamics": d})).get_trace(x, factors=FACTORS)
    return trace.nodes["z_1"]["fn"].mean


def test_stage2_guide_shows_frame_poses_to_the_combiner_only_with_guide_pose_input():
    torch.manual_seed(0)
    x_a, x_b, d = frames(32, 3), frames(32, 3), torch.randn(32, TINY.dynamics_dim)
    reference = VDSMStage2Guide(TINY)  # poses from d alone: with d fixed, q(z_1) ignores the frames
    assert torch.equal(_first_pose_mean(reference, x_a, d), _first_pose_mean(reference, x_b, d))
    guide = VDSMStage2Guide(dataclasses.replace(TINY, guide_pose_input=0.5))
    moved = (_first_pose_mean(guide, x_a, d) - _first_pose_mean(guide, x_b, d)).abs().amax(-1) > 1e-6
    assert 4 <= moved.sum() <= 28  # training: shown to about half of the sequences
    guide.eval()
    moved = (_first_pose_mean(guide, x_a, d) - _first_pose_mean(guide, x_b, d)).abs().amax(-1) > 1e-6
    assert moved.all()  # evaluation: always shown


def _batches(b, t):
    while True:
        yield frames(b, t)


def test_train_stage_follows_the_schedules_learning_rate():
    vdsm = VDSM(TINY)
    stats = train_stage(vdsm.model1, vdsm.guide1, _batches(2, 3), schedule=Schedule(lr_decay_frac=0.5, lr_end=0.1),
                        device="cpu", options=TrainOptions(steps=4, lr=1e-3, progress=False))
    assert stats["last_lr"] == pytest.approx(1e-3 * 0.55)     # last step at progress 3/4: halfway down
    stats = train_stage(vdsm.model1, vdsm.guide1, _batches(2, 3), schedule=Schedule(), device="cpu",
                        options=TrainOptions(steps=2, lr=1e-3, progress=False))
    assert stats["last_lr"] == 1e-3


@pytest.mark.parametrize("factory", [mean_field, autonormal_identity])
def test_custom_stage2_guides_train_with_the_library_loop(factory):
    vdsm = VDSM(TINY)
    vdsm.use_guide2(f"guides.examples:{factory.__name__}")
    vdsm.model1.decoder.requires_grad_(False)
    vdsm.guide1.encoder.requires_grad_(False)
    stats = train_stage(vdsm.model2, vdsm.guide2, _batches(3, 4), schedule=Schedule(), device="cpu",
                        options=TrainOptions(steps=3, lr=1e-2, progress=False))
    assert stats["skipped_steps"] == 0 and stats["final_loss_per_frame"] > 0
    trained = [p for m in (vdsm.model2, vdsm.guide2) for p in m.parameters() if p.requires_grad]
    assert trained and all(p.grad is not None for p in trained)
    assert stats["trained_tensors"] == len({id(p) for p in trained})  # lazily created ones included
    assert all(p.grad is None for p in vdsm.guide1.encoder.parameters())  # frozen stage-1 encoder


def test_api_methods_are_batched_and_shaped():
    vdsm = VDSM(TINY).eval()
    vdsm.has_stage2 = True
    a, b = frames(3, 4), frames(3, 4)
    for out in (vdsm.reconstruct(a), vdsm.swap_identity(a, b), vdsm.transfer_action(a, b), vdsm.generate(3, 4)):
        assert out.shape == (3, 4, 3, 64, 64) and 0 <= out.min() and out.max() <= 1
    # swapping identity with itself is the reconstruction
    assert torch.allclose(vdsm.swap_identity(a, a), vdsm.reconstruct(a), atol=1e-6)


@pytest.mark.parametrize("model_cls,guide_cls", PAIRS)
def test_bf16_autocast_keeps_every_log_prob_in_fp32(model_cls, guide_cls):
    model, guide = model_cls(TINY), guide_cls(TINY)
    check_elbo_under_bf16_autocast(model, guide, frames(2, 4), FACTORS, model.parameters())


def test_identity_scale_max_bounds_the_guides_identity_scale():
    def identity_scale(config):
        torch.manual_seed(0)
        guide = VDSMStage1Guide(config)
        torch.nn.init.constant_(guide.encoder.id_scale_layer.bias, 5.0)  # softplus ~5: far above the bound
        trace = poutine.trace(guide).get_trace(frames(4, 3), factors=FACTORS)
        return trace.nodes["identity"]["fn"].base_dist.scale

    assert identity_scale(TINY).min() > 1.0  # the reference's scale is unbounded
    bounded = identity_scale(VDSMConfig(**{**TINY.to_dict(), "identity_scale_max": 0.01}))
    assert bounded.max() < 0.01 and bounded.min() > 0.009  # smooth: near the bound when the raw scale is large
    with pytest.raises(ValueError, match="identity_scale_max"):
        VDSMConfig(**{**TINY.to_dict(), "identity_scale_max": -1.0}).check()


def test_learned_dynamics_prior_starts_as_the_reference_and_the_elbo_fits_it_to_the_posterior_dynamics():
    torch.manual_seed(0)
    config = dataclasses.replace(TINY, learned_dynamics_prior=True)
    model, guide = VDSMStage2Model(config), VDSMStage2Guide(config)
    d = torch.randn(3, config.dynamics_dim)
    assert torch.allclose(model.dynamics_prior(3, d).log_prob(d), VDSMStage2Model(TINY).dynamics_prior(3, d).log_prob(d))
    with torch.no_grad():  # every sequence's q(d) = N(0.3, 0.5^2), far from the reference prior N(0, 0.2^2)
        guide.d_loc.weight.zero_(), guide.d_loc.bias.fill_(0.3)
        guide.d_scale.weight.zero_(), guide.d_scale.bias.fill_(math.log(math.expm1(0.5)))
    for net in (model, guide):
        net.requires_grad_(False)
    prior = [model.dynamics_loc.requires_grad_(), model.dynamics_log_scale.requires_grad_()]
    optim, x = torch.optim.Adam(prior, lr=0.05), frames(16, 2)
    for _ in range(100):  # only the prior learns: its optimum is the aggregate posterior of d
        optim.zero_grad()
        Trace_ELBO().differentiable_loss(model, guide, x, factors=FACTORS).backward()
        optim.step()
    assert torch.allclose(model.dynamics_loc, torch.full_like(model.dynamics_loc, 0.3), atol=0.1)
    assert torch.allclose(model.dynamics_log_scale.exp(), torch.full_like(model.dynamics_loc, 0.5), atol=0.1)


def test_learned_identity_loc_is_the_prior_mean_and_gets_a_gradient_from_the_identity_kl():
    config = VDSMConfig(**{**TINY.to_dict(), "learned_identity_loc": True})
    model, guide = VDSMStage1Model(config), VDSMStage1Guide(config)
    assert VDSMStage1Model(TINY).identity_loc is None  # the reference: a fixed zero mean
    with torch.no_grad():
        model.identity_loc.fill_(0.3)
    assert torch.equal(model.static_prior(2, torch.zeros(1)).mean, torch.full((2, config.n_experts), 0.3))
    loss = Trace_ELBO().differentiable_loss(model, guide, frames(3, 2), factors=FACTORS)
    (grad,) = torch.autograd.grad(loss, [model.identity_loc])
    assert grad.abs().sum() > 0
