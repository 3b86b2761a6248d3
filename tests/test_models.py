import dataclasses
import math
import re

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
from tests_helpers import MeanGuide
from vdsm.annealing import Schedule
from models.vdsm import VDSMRun as VDSM
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


def _lstm_cell_by_hand(x, h, c, rnn, layer):
    """One step of layer ``layer`` of ``rnn`` written out (PyTorch's gate order i, f, g, o)."""
    w_ih, w_hh = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")
    b = getattr(rnn, f"bias_ih_l{layer}") + getattr(rnn, f"bias_hh_l{layer}")
    i, f, g, o = (x @ w_ih.T + h @ w_hh.T + b).chunk(4, -1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def test_release_stage2_guide_lstm_feeds_each_output_back_from_states_linear_in_d():
    """The release's VDSM_Seq.guide: dec_inp_0 learned, dec_inp <- LSTM(dec_inp, (h, c)) at every step,
    h_0 = linear(d) and c_0 = linear(d) without tanh, no dropout, q(d)'s mean under LeakyReLU(0.01)."""
    torch.manual_seed(0)
    config = dataclasses.replace(TINY, guide_release_lstm=True)
    guide = VDSMStage2Guide(config)  # in training mode: dropout, were there any, would act
    other = dataclasses.replace(TINY, guide_release_lstm=False)   # the library's LSTM of the cpu presets
    assert guide.rnn.dropout == 0 and VDSMStage2Guide(other).rnn.dropout == TINY.rnn_dropout
    with torch.no_grad():
        guide.rnn_input.normal_()
    b, t, n, layers = 3, 4, config.rnn_dim, config.rnn_layers
    d = torch.randn(b, config.dynamics_dim)
    state = guide.d_to_state(d)
    h, c = list(state[:, :layers * n].reshape(b, layers, n).unbind(1)), list(state[:, layers * n:].reshape(b, layers, n).unbind(1))
    step_input, outputs = guide.rnn_input.expand(b, n), []
    for _ in range(t):
        for layer in range(layers):
            h[layer], c[layer] = _lstm_cell_by_hand(step_input if layer == 0 else h[layer - 1], h[layer], c[layer],
                                                    guide.rnn, layer)
        step_input = h[-1]
        outputs.append(step_input)
    assert torch.allclose(guide.frame_states(d, t), torch.stack(outputs, 1), atol=1e-6)
    library = VDSMStage2Guide(other)
    library.load_state_dict(guide.state_dict())  # the same weights: the form of the LSTM's inputs differs
    assert not torch.allclose(library.frame_states(d, t), guide.frame_states(d, t), atol=1e-3)
    for g, slope in ((guide, 0.01), (library, 0.2)):
        with torch.no_grad():
            g.d_loc.weight.zero_()
            g.d_loc.bias.fill_(-1.0)
        loc, _ = g.dynamics_params(torch.randn(b, t, config.z_dim))
        assert torch.allclose(loc, torch.full_like(loc, -slope))


def test_residual_stage2_guide_centres_q_z_on_the_shown_pose():
    torch.manual_seed(0)
    x, d = frames(4, 3), torch.randn(4, TINY.dynamics_dim)
    config = dataclasses.replace(TINY, guide_pose_input=0.5, guide_pose_residual=True)
    plain = VDSMStage2Guide(dataclasses.replace(config, guide_pose_residual=False)).eval()
    residual = VDSMStage2Guide(config).eval()
    residual.load_state_dict(plain.state_dict())  # same networks: only the added pose differs
    poses = residual.encoder.encode_sequences(x)[0]
    assert torch.allclose(_first_pose_mean(residual, x, d), _first_pose_mean(plain, x, d) + poses[:, 0], atol=1e-6)
    residual.show_poses_in_eval = False  # nothing shown, nothing added
    plain.show_poses_in_eval = False
    assert torch.allclose(_first_pose_mean(residual, x, d), _first_pose_mean(plain, x, d))
    with pytest.raises(ValueError, match="guide_pose_input"):
        dataclasses.replace(TINY, guide_pose_residual=True).check()


def test_overshooting_scores_each_later_pose_under_the_open_loop_rollout():
    torch.manual_seed(0)
    model = VDSMStage2Model(dataclasses.replace(TINY, overshooting=2.0))
    zs, d = torch.randn(3, 4, TINY.z_dim, requires_grad=True), torch.randn(3, TINY.dynamics_dim)

    def rollout(z, k):  # k transitions at their means, then the distribution of the next step
        for _ in range(k - 1):
            z = model.trans(z, d)[0]
        return torch.distributions.Normal(*model.trans(z, d))

    by_hand = sum(rollout(zs[:, s], k).log_prob(zs[:, s + k]).sum(-1)
                  for k in (2, 3) for s in range(4 - k))  # z_1 -> z_3, z_2 -> z_4, z_1 -> z_4
    log_prob = model.frame_prior.overshooting_log_prob(model, zs, d)
    assert log_prob.shape == (3,)
    assert torch.allclose(log_prob, by_hand, atol=1e-5)
    log_prob.sum().backward()
    assert zs.grad is None  # the posterior poses are held fixed, as in PlaNet
    assert model.trans.proposal[0].weight.grad.abs().sum() > 0


def test_overshooting_adds_its_weighted_term_to_the_stage2_elbo():
    torch.manual_seed(0)
    x = frames(2, 4)
    plain, guide = VDSMStage2Model(TINY), VDSMStage2Guide(TINY)
    overshooting = VDSMStage2Model(dataclasses.replace(TINY, overshooting=2.0))
    overshooting.load_state_dict(plain.state_dict())
    guide_trace = poutine.trace(guide).get_trace(x, factors=FACTORS)
    traces = [poutine.trace(poutine.replay(m, trace=guide_trace)).get_trace(x, factors=FACTORS)
              for m in (plain, overshooting)]
    assert "overshooting" not in traces[0].nodes
    zs = torch.stack([guide_trace.nodes[f"z_{k}"]["value"] for k in range(1, 5)], 1)
    expected = FACTORS["z"] * 2.0 / 3 * overshooting.frame_prior.overshooting_log_prob(
        overshooting, zs, guide_trace.nodes["dynamics"]["value"]).sum()
    assert torch.allclose(traces[1].log_prob_sum() - traces[0].log_prob_sum(), expected, rtol=1e-4)
    with pytest.raises(ValueError, match="overshooting=-1"):
        dataclasses.replace(TINY, overshooting=-1.0).check()


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


def test_train_stage_logs_its_step_time_and_expected_end_then_again_from_the_later_steps(caplog):
    vdsm = VDSM(TINY)
    with caplog.at_level("INFO", logger="vdsm.train"):
        train_stage(vdsm.model1, vdsm.guide1, _batches(2, 3), schedule=Schedule(), device="cpu", tag="stage1",
                    options=TrainOptions(steps=10, progress=False, report_after=2))
    lines = [r.getMessage() for r in caplog.records if "s/step" in r.getMessage()]
    assert len(lines) == 2, lines
    assert re.fullmatch(r"stage1: \d+\.\d{3} s/step over its first 2 steps; 8 steps left, ends about \d\d:\d\d "
                        r"\(in \d+\.\d min\)", lines[0])
    # the second estimate times the steps after the first report only (a warm-up's cheap steps left out)
    assert re.fullmatch(r"stage1: \d+\.\d{3} s/step over steps 3-8; 2 steps left, ends about .*", lines[1])
    caplog.clear()
    with caplog.at_level("INFO", logger="vdsm.train"):   # a stage that ends first: one line
        train_stage(vdsm.model1, vdsm.guide1, _batches(2, 3), schedule=Schedule(), device="cpu", tag="stage1",
                    options=TrainOptions(steps=5, progress=False, report_after=2))
    assert len([r for r in caplog.records if "s/step" in r.getMessage()]) == 1


def test_autonormal_guide_refuses_a_batch_of_another_size_with_one_line():
    from guides.common import GuideError

    vdsm = VDSM(TINY)
    vdsm.use_guide2("guides.examples:autonormal_identity", batch_size=3, seq_len=4)
    vdsm.has_stage2 = True
    vdsm.eval()
    assert vdsm.reconstruct(frames(3, 4)).shape == (3, 4, 3, 64, 64)  # the size it was fitted at
    with pytest.raises(GuideError, match="not amortised") as err:
        vdsm.reconstruct(frames(5, 4))
    assert "batch size 3" in str(err.value).splitlines()[0]  # (Pyro appends the trace's shapes below)


def _fixed_batches(x):
    while True:
        yield x


def test_a_guide_made_only_of_pyro_params_trains_and_resumes_exactly(tmp_path):
    """train_stage optimises Pyro param sites (not only nn.Module parameters) and its checkpoints
    restore them: an interrupted run continues with the same losses."""
    from guides.examples import PyroParamStage1Guide
    from vdsm.checkpoint import CheckpointManager

    x = frames(4, 3)
    opts = dict(schedule=Schedule(), device="cpu")

    def train(steps, folder, resume=None, schedule_steps=None):
        pyro.clear_param_store()
        torch.manual_seed(0)
        vdsm = VDSM(TINY)
        guide = PyroParamStage1Guide(TINY, seq_len=3)
        assert not list(guide.parameters())  # nothing for an nn.Module optimiser to find
        manager = CheckpointManager(folder, "stage1", every_steps=5, keep_last=5)
        saved = manager.load_newest() if resume else None
        stats = train_stage(vdsm.model1, guide, _fixed_batches(x), checkpoints=manager, resume=saved,
                            options=TrainOptions(steps=steps, lr=3e-2, progress=False, schedule_steps=schedule_steps),
                            **opts)
        return stats, {k: v.detach().clone() for k, v in pyro.get_param_store().items()}

    full, values = train(30, tmp_path / "full")
    assert full["trained_tensors"] == 4 + len(list(VDSM(TINY).model1.parameters()))
    assert not torch.allclose(values["identity_loc"], torch.zeros_like(values["identity_loc"]))   # moved
    assert not torch.allclose(values["z_scale"], torch.ones_like(values["z_scale"]))
    assert sum(full["losses"][-5:]) < sum(full["losses"][:5])                                    # learned
    train(10, tmp_path / "cut", schedule_steps=30)   # the same schedule, stopped at step 10
    resumed, resumed_values = train(30, tmp_path / "cut", resume=True)
    assert resumed["losses"] == pytest.approx(full["losses"][10:], rel=1e-5)
    for name, value in values.items():
        assert torch.allclose(resumed_values[name], value, rtol=1e-5, atol=1e-6), name


def test_clipping_bounds_the_gradient_of_the_per_frame_loss_whatever_the_batch():
    def one_step(x, clip):
        torch.manual_seed(0)
        vdsm = VDSM(TINY)
        stats = train_stage(vdsm.model1, MeanGuide(vdsm.guide1), _fixed_batches(x), schedule=Schedule(), device="cpu",
                            options=TrainOptions(steps=1, clip_norm=clip, progress=False))
        params = [p for m in (vdsm.model1, vdsm.guide1) for p in m.parameters() if p.grad is not None]
        applied = torch.sqrt(sum(p.grad.pow(2).sum() for p in params)).item()
        return stats, applied

    x = frames(2, 3)
    free, summed = one_step(x, 0.0)
    per_frame = free["grad_norms_per_frame"][0]
    assert free["clipped_steps"] == 0 and per_frame == pytest.approx(summed / 6, rel=1e-4)
    doubled, _ = one_step(torch.cat([x, x]), 0.0)   # twice the frames: twice the summed gradient, same per frame
    assert doubled["grad_norms_per_frame"][0] == pytest.approx(per_frame, rel=1e-4)
    clipped, applied = one_step(x, per_frame / 4)
    assert clipped["clipped_steps"] == 1 and applied == pytest.approx(summed / 4, rel=1e-4)
    loose, applied = one_step(x, per_frame * 2)
    assert loose["clipped_steps"] == 0 and applied == pytest.approx(summed, rel=1e-4)


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


def _sensitive_vdsm_and_sprites(data_dirs):
    """A tiny VDSM whose outputs depend visibly on its inputs (weights N(0, 0.2); at PyTorch's
    init an untrained net barely reacts), and three batches of real, different Sprites sequences."""
    import data

    torch.manual_seed(0)
    vdsm = VDSM(TINY).eval()
    with torch.no_grad():
        for net in (vdsm.model1, vdsm.guide1, vdsm.model2, vdsm.guide2):
            for p in net.parameters():
                p.normal_(0, 0.2)
    ds = data.get_dataset("sprites", "val", sprites_layers=data_dirs.sprites, seq_len=4)
    a, b, c = (torch.stack([ds[i][0] for i in idx]) for idx in ([0, 13, 26], [100, 204, 311], [400, 505, 609]))
    return vdsm, a, b, c


def test_swap_identity_draws_the_poses_of_one_sequence_with_the_identity_of_another(data_dirs):
    """Stage 1 written out with the networks: poses of a (encoder means), identity of b (mean over
    b's frames), decoded at the schedule's temperature."""
    vdsm, a, b, _ = _sensitive_vdsm_and_sprites(data_dirs)
    z_a, _, _, _ = vdsm.guide1.encoder.encode_sequences(a)
    _, _, id_b, _ = vdsm.guide1.encoder.encode_sequences(b)
    mix = torch.softmax(vdsm.factors()["temp_id"] * id_b, -1)
    expected = torch.sigmoid(vdsm.model1.decoder(z_a, mix))

    def gap(frames_):
        return (frames_ - expected).abs().max()

    assert gap(vdsm.swap_identity(a, b)) < 1e-6
    # the roles the other way round, the identity of a, the poses of b: all visibly different
    assert min(gap(vdsm.swap_identity(b, a)), gap(vdsm.swap_identity(a, a)), gap(vdsm.swap_identity(b, b))) > 1e-3
    # the same through the public pieces, and halfway between two identities is its own mixture
    assert torch.allclose(vdsm.identities(b), id_b, atol=1e-6)
    assert gap(vdsm.with_identity(a, id_b)) < 1e-6
    _, _, id_a, _ = vdsm.guide1.encoder.encode_sequences(a)
    half = (id_a + id_b) / 2
    halfway = torch.sigmoid(vdsm.model1.decoder(z_a, torch.softmax(vdsm.factors()["temp_id"] * half, -1)))
    assert (vdsm.with_identity(a, half) - halfway).abs().max() < 1e-6


def test_transfer_action_keeps_dynamics_and_first_pose_of_one_sequence_and_the_identity_of_another(data_dirs):
    """Stage 2 written out: d and z_1 at the guide's means for a, later poses the transition's means
    from d, the identity of b."""
    vdsm, a, b, c = _sensitive_vdsm_and_sprites(data_dirs)
    vdsm.has_stage2 = True
    guide, t = vdsm.guide2, a.shape[1]
    z_means, _, _, _ = guide.encoder.encode_sequences(a)
    d = guide.dynamics_params(z_means)[0]
    h, context = guide.frame_states(d, t), guide.combiner_context(d, z_means)
    poses = [guide.combiner(guide.z_q_0.expand(len(a), TINY.z_dim), h[:, 0], context[:, 0])[0]]
    for _ in range(t - 1):
        poses.append(vdsm.model2.trans(poses[-1], d)[0])
    _, _, id_b, _ = guide.encoder.encode_sequences(b)
    mix = torch.softmax(vdsm.factors()["temp_id"] * id_b, -1)
    expected = torch.sigmoid(vdsm.model2.decoder(torch.stack(poses, 1), mix))

    def gap(frames_):
        return (frames_ - expected).abs().max()

    assert gap(vdsm.transfer_action(a, b)) < 1e-6
    assert gap(vdsm.transfer_action(b, a)) > 1e-3 and gap(vdsm.transfer_action(a, c)) > 1e-3
    assert gap(vdsm.transfer_action(c, b)) > 1e-5   # another action source (its d matters less at this init)


def test_loaded_runs_are_in_eval_mode_and_seeded_calls_repeat_exactly(tmp_path):
    """VDSM.load gives eval mode (no dropout, no random shown draw in the stage-2 guide), so two
    calls of any API method with the same seed give equal frames."""
    import json

    config = dataclasses.replace(TINY, rnn_dropout=0.5, guide_pose_input=0.5)
    vdsm = VDSM(config)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    from vdsm import __version__

    (run / "config.json").write_text(json.dumps({"vdsm_version": __version__, "model": config.to_dict(), "stage2": {
        "schedule": dataclasses.asdict(Schedule()), "batch_size": 2, "seq_len": 4}}))
    for stage, (model, guide) in (("stage1", (vdsm.model1, vdsm.guide1)), ("stage2", (vdsm.model2, vdsm.guide2))):
        torch.save({"model": model.state_dict(), "guide": guide.state_dict(), "step": 1}, run / "checkpoints" / f"{stage}.pt")
    loaded = VDSM.load(run)
    modules = [m for net in (loaded.model1, loaded.guide1, loaded.model2, loaded.guide2) for m in net.modules()]
    assert loaded.has_stage2 and not any(m.training for m in modules)
    a, b = frames(3, 4), frames(3, 4)
    calls = {"reconstruct": lambda: loaded.reconstruct(a), "generate": lambda: loaded.generate(3, 4),
             "swap_identity": lambda: loaded.swap_identity(a, b), "transfer_action": lambda: loaded.transfer_action(a, b),
             "fix_dynamics": lambda: loaded.fix_dynamics(a), "fix_identity": lambda: loaded.fix_identity(a),
             "predict": lambda: loaded.predict(a[:, :2], 3)}
    for name, call in calls.items():
        torch.manual_seed(7)
        first = call()
        torch.manual_seed(7)
        assert torch.equal(first, call()), name
    torch.manual_seed(8)
    assert not torch.equal(loaded.generate(3, 4), calls["generate"]())  # the seed matters


def test_vdsm_predicts_futures_from_the_learned_transition():
    torch.manual_seed(0)
    vdsm = VDSM(TINY).eval()
    x = frames(2, 3)
    with pytest.raises(ValueError, match="stage-2"):
        vdsm.predict(x, 2)
    vdsm.has_stage2 = True
    draws = vdsm.predict(x, 4, n_samples=3)
    assert draws.shape == (3, 2, 7, *x.shape[2:]) and torch.equal(draws[:, :, :3], x.expand(3, -1, -1, -1, -1, -1))
    assert not torch.equal(draws[0, :, 3:], draws[1, :, 3:])      # futures drawn from the transition
    # the identity and dynamics come from the past frames: other frames, other futures
    other = frames(2, 3)
    torch.manual_seed(1)
    mine = vdsm.predict(x, 4)
    torch.manual_seed(1)
    assert not torch.equal(mine[:, 3:], vdsm.predict(other, 4)[:, 3:])
    torch.manual_seed(1)
    assert torch.equal(mine, vdsm.predict(x, 4))


def test_reference_guide_inputs_hide_the_frame_poses_from_the_stage2_guide():
    torch.manual_seed(0)
    vdsm = VDSM(dataclasses.replace(TINY, guide_pose_input=0.5)).eval()
    vdsm.has_stage2 = True
    assert vdsm.shows_poses
    a, b = frames(2, 3), frames(2, 3)
    d = torch.randn(2, TINY.dynamics_dim)
    assert not torch.equal(_first_pose_mean(vdsm.guide2, a, d), _first_pose_mean(vdsm.guide2, b, d))
    with vdsm.reference_guide_inputs():  # as the reference guide: poses from d alone
        assert torch.equal(_first_pose_mean(vdsm.guide2, a, d), _first_pose_mean(vdsm.guide2, b, d))
    assert vdsm.guide2.show_poses_in_eval  # restored


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
