"""SRVP: sites, the ELBO against a written-out version of the release's loss, prediction, training."""
import math

import pyro
import pytest
import torch
from pyro import poutine

from guides.srvp import SRVPGuide
from models.srvp import SRVPConfig, SRVPModel, SRVPNets
from vdsm.annealing import ConstantFactors
from vdsm.train import TrainOptions, train_stage

D = torch.distributions


def tiny(**kw):
    base = dict(nf=4, nh=8, ny=3, z_dim=2, content_dim=6, nt_inf=2, n_past=2, rnn_dim=5, y_hidden=7, mlp_hidden=9)
    return SRVPConfig(**{**base, **kw})


def pair(config):
    pyro.clear_param_store()
    nets = SRVPNets(config)
    return nets, SRVPModel(nets), SRVPGuide(nets)


def frames(b, t, nc=1, seed=0):
    return torch.rand(b, t, nc, 64, 64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("b", [2, 5])
def test_sites_do_not_grow_with_the_batch(b):
    nets, model, guide = pair(tiny())
    x = frames(b, 4)
    tr = poutine.trace(guide).get_trace(x, factors={"z": 1.0})
    mtr = poutine.trace(poutine.replay(model, tr)).get_trace(x, factors={"z": 1.0})
    sites = [n for n, s in mtr.nodes.items() if s["type"] == "sample"]
    assert sites == ["sequences", "y_1", "z_2", "z_3", "z_4", "l2_res", "obs"]
    assert [n for n, s in tr.nodes.items() if s["type"] == "sample"] == ["sequences", "y_1", "z_2", "z_3", "z_4"]
    assert mtr.nodes["obs"]["fn"].batch_shape == (b,)


def written_out_loss(nets, x, y1, zs, content_frames, skip_frame):
    """The release's loss per sequence (mean over the batch), frame by frame, for given draws y_1 and
    z_2..z_T: NLL + KL(q(y_1) || N(0, I)) + beta_z sum_t KL(q(z_t) || p(z_t | y_{t-1})) + l2_res sum
    over Euler sub-steps of ||dt f||_2. Independent of the model code: its own loops, heads, KLs."""
    c = nets.config
    b, t = x.shape[:2]
    codes, levels = zip(*(nets.encoder(x[:, k]) for k in range(t)))
    h = torch.stack(codes, 1)

    def head(params):
        loc, raw = params.chunk(2, -1)
        return D.Normal(loc, torch.nn.functional.softplus(raw) + 1e-8)

    w = nets.content_out(sum(nets.content_in(h[torch.arange(b), content_frames[:, j]]) for j in range(c.nt_inf)))
    q_y = head(nets.y_inf(torch.cat([h[:, k] for k in range(c.nt_inf)], -1)))
    kl = D.kl_divergence(q_y, D.Normal(0.0, 1.0)).sum(-1)
    state, outs = None, []
    for k in range(t):
        o, state = nets.z_lstm(h[:, k:k + 1], state)
        outs.append(o[:, 0])
    y, ys, l2 = y1, [y1], 0.0
    for k in range(1, t):
        q_z, p_z = head(nets.z_out(outs[k])), head(nets.prior(y))
        kl = kl + c.beta_z * D.kl_divergence(q_z, p_z).sum(-1)
        for _ in range(c.n_euler_steps):
            dy = nets.residual(torch.cat([y, zs[k - 1]], -1)) / c.n_euler_steps
            y, l2 = y + dy, l2 + dy.norm(dim=-1)
        ys.append(y)
    nll = 0.0
    for k in range(t):
        g = torch.cat([w, ys[k]], -1)
        if c.skipco:
            skips = [torch.stack([levels[int(skip_frame[i])][j][i] for i in range(b)]) for j in range(len(levels[0]))]
            mean = nets.decoder(g, skips=skips)
        else:
            mean = nets.decoder(g)
        nll = nll - D.Normal(mean, c.emission_scale).log_prob(x[:, k]).flatten(1).sum(-1)
    return (nll + kl + c.l2_res * l2).mean()


@pytest.mark.parametrize("config", [tiny(), tiny(arch="vgg", skipco=True, n_euler_steps=2, res_gain=1.2,
                                                 emission_scale=0.2, beta_z=1.0)], ids=["dcgan", "vgg-skips-euler2"])
def test_elbo_equals_the_reference_loss_for_a_fixed_draw(config, monkeypatch):
    torch.set_default_dtype(torch.float64)
    try:
        nets, model, guide = pair(config)
        nets.eval()  # BatchNorm on running statistics: per-frame and whole-sequence calls agree
        b, t = 3, 5
        x = frames(b, t).double()
        content, skip = torch.tensor([[0, 3], [4, 1], [2, 2 + 1]]), torch.tensor([4, 0, 2])
        monkeypatch.setattr(nets, "training_frames", lambda *_: (content, skip))
        tr = poutine.trace(guide).get_trace(x, factors={"z": 1.0})
        loss = model.elbo().differentiable_loss(model, poutine.replay(guide, trace=tr), x, factors={"z": 1.0})
        zs = [tr.nodes[f"z_{k}"]["value"] for k in range(2, t + 1)]
        want = written_out_loss(nets, x, tr.nodes["y_1"]["value"], zs, content, skip)
        assert torch.allclose(loss, b * want, rtol=1e-9), (loss.item(), b * want.item())
        # and the gradients agree (what Adam sees)
        g1 = torch.autograd.grad(loss, list(nets.parameters()), allow_unused=True, retain_graph=True)
        g2 = torch.autograd.grad(b * written_out_loss(nets, x, tr.nodes["y_1"]["value"], zs, content, skip),
                                 list(nets.parameters()), allow_unused=True)
        for a, c in zip(g1, g2):
            if a is not None and c is not None:
                assert torch.allclose(a, c, rtol=1e-6, atol=1e-9)
    finally:
        torch.set_default_dtype(torch.float32)


def test_training_draws_content_frames_from_the_whole_sequence():
    nets = SRVPNets(tiny(nt_inf=3))
    content, skip = nets.training_frames(64, 6, "cpu")
    assert content.shape == (64, 3) and skip.shape == (64,)
    assert all(len(set(row.tolist())) == 3 for row in content)       # distinct frames per sequence
    assert set(content.flatten().tolist()) == set(range(6)) and set(skip.tolist()) == set(range(6))


@pytest.mark.parametrize("config", [tiny(), tiny(arch="vgg", skipco=True)], ids=["dcgan", "vgg-skips"])
def test_predict_keeps_the_past_and_draws_different_futures(config):
    nets, model, guide = pair(config)
    nets.eval()
    x = frames(2, 2)
    torch.manual_seed(0)
    a = model.predict(x, n_future=3, guide=guide)
    b = model.predict(x, n_future=3, guide=guide)
    torch.manual_seed(0)
    again = model.predict(x, n_future=3, guide=guide)
    assert a.shape == (2, 5, 1, 64, 64) and torch.equal(a[:, :2], x)
    assert torch.equal(a, again) and not torch.equal(a[:, 2:], b[:, 2:])  # init decodes ~0.5: tiny gaps
    assert 0 <= a.min() and a.max() <= 1


def test_predicted_futures_follow_the_models_prior_and_the_past_the_posterior():
    # predict runs the model under Pyro handlers: every z the residual dynamics receive is, standardised
    # by the distribution it should come from, N(0, 1): q(z_t | x_<=t) for the conditioning frames, the
    # model's prior p(z_t | y_{t-1}) at the y it reached for the future ones
    nets, model, guide = pair(tiny(nt_inf=1, n_past=2))
    nets.eval()
    x = frames(1, 2).expand(4000, -1, -1, -1, -1)
    steps, real = [], nets.step
    nets.step = lambda y, z: steps.append((y, z)) or real(y, z)
    try:
        torch.manual_seed(0)
        model.predict(x, n_future=2, guide=guide)
    finally:
        nets.step = real
    assert len(steps) == 3                       # z_2 (past), z_3 and z_4 (future)
    post_loc, post_scale = nets.q_z(nets.encode(x)[0])
    nets.forget()
    standardised = [(steps[0][1] - post_loc[:, 0]) / post_scale[:, 0]]
    for y, z in steps[1:]:
        loc, scale = nets.p_z(y)
        standardised.append((z - loc) / scale)
    for e in standardised:
        assert e.mean().abs() < 0.02 and (e.std() - 1).abs() < 0.02
        assert (e.abs() > 1.96).float().mean().sub(0.05).abs() < 0.01   # the tails of a normal, not only its moments
    assert steps[2][1].std(0).min() > 0          # the future is drawn, not the prior's mean


def test_predict_uses_the_last_conditioning_frames_for_content_and_y_from_the_first():
    # w depends only on the last nt_inf conditioning frames: changing an earlier frame changes y_1's
    # inference (first nt_inf frames), not w
    nets, model, guide = pair(tiny(nt_inf=2, n_past=4))
    nets.eval()
    x = frames(2, 4)
    h, _ = nets.encode(x)
    nets.forget()
    w = nets.content(h, torch.tensor([[2, 3], [2, 3]]))
    seen = {}
    real = nets.content
    nets.content = lambda h_, f: seen.setdefault("frames", f) is None or real(h_, f)
    try:
        model.predict(x, n_future=1, guide=guide)
    finally:
        nets.content = real
    assert seen["frames"].tolist() == [[2, 3], [2, 3]]
    assert w.shape == (2, 6)


def test_a_few_steps_lower_the_loss():
    # a square on black: learnable, so the loss above the Gaussian constant must fall a lot
    torch.manual_seed(0)
    nets, model, guide = pair(tiny(emission_scale=0.2))
    x = torch.zeros(4, 4, 1, 64, 64)
    x[..., 16:40, 20:44] = 1.0
    stats = train_stage(model, guide, iter([x] * 30), options=TrainOptions(steps=30, lr=1e-2, progress=False),
                        schedule=ConstantFactors(), device="cpu")
    const = 64 * 64 * (0.5 * math.log(2 * math.pi) + math.log(0.2))  # per frame
    first, last = (sum(stats["losses"][k] for k in ks) / 5 - const for ks in (range(5), range(25, 30)))
    assert last < 0.3 * first


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="nt_inf"):
        tiny(nt_inf=3, n_past=2).check()
    with pytest.raises(ValueError, match="arch"):
        tiny(arch="resnet").check()


SRVP_TINY = ["--nf", "4", "--nh", "8", "--ny", "3", "--z-dim", "2", "--content-dim", "6", "--rnn-dim", "5",
             "--y-hidden", "7", "--mlp-hidden", "9", "--batch-size", "2", "--n-future", "3", "--eval-samples", "2",
             "--eval-sequences", "3", "--num-workers", "0", "--no-progress"]


def test_srvp_trains_resumes_and_evaluates_through_the_runner(tmp_path, data_dirs, capsys, alexnet_features):
    import json

    from experiments.evaluate import main as evaluate_main
    from experiments.run import main
    from vdsm.checkpoint import load_checkpoint

    out, root = tmp_path / "run", tmp_path / "root"
    common = ["--dataset", "smmnist", "--model", "srvp", "--mnist", str(data_dirs.mnist), "--data-root", str(root)]
    assert main([*common, "--out", str(out), "--steps", "2", *SRVP_TINY]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model_name"] == "srvp" and config["model"]["nt_inf"] == 5 and config["model"]["ny"] == 3
    assert config["train"]["lr_decay_frac"] == 0.3 and config["train"]["clip_norm"] == 1000
    assert any("clip_norm 1000" in d for d in config["departs_from_paper"])
    for name in ("checkpoints/srvp.pt", "futures.gif", "metrics.json"):
        assert (out / name).exists(), name
    assert json.loads((out / "metrics.json").read_text())["quick_prediction"]["split"] == "val"
    # --resume --steps 4 extends the run; the saved step count grows
    assert main([*common, "--resume", str(out), "--steps", "4", "--no-progress", "--num-workers", "0"]) == 0
    assert load_checkpoint(out / "checkpoints" / "srvp.pt", "cpu")["step"] == 4
    # the prediction protocol on the test split, through the same code path as SVG
    assert evaluate_main(["--run", str(out), "--mnist", str(data_dirs.mnist), "--data-root", str(root), "--samples",
                          "2", "--max-sequences", "4", "--no-progress", "--lpips-backbone", str(alexnet_features)]) == 0
    summary = json.loads((out / "metrics.json").read_text())["prediction"]
    assert summary["n_past"] == 5 and summary["n_future"] == 20 and summary["test_sequences"] == 4
    assert 0 < summary["ssim"] <= 1 and summary["psnr"] > 0


@pytest.mark.parametrize("flags, named", [(["--n-experts", "3"], "--n-experts"), (["--g-dim", "3"], "--g-dim"),
                                          (["--guide2", "a:b"], "--guide2"), (["--nt-inf", "9"], "nt_inf")])
def test_srvp_refuses_flags_of_other_models_and_bad_sizes(tmp_path, data_dirs, capsys, flags, named):
    from experiments.run import main

    out = tmp_path / "run"
    code = main(["--dataset", "smmnist", "--model", "srvp", "--mnist", str(data_dirs.mnist), "--data-root",
                 str(tmp_path / "root"), "--out", str(out), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and named in err[0]
    assert not out.exists()


def test_srvp_flags_are_refused_for_svg_and_vdsm(tmp_path, data_dirs, capsys):
    from experiments.run import main

    for model in ("svg-lp", "vdsm"):
        assert main(["--dataset", "smmnist", "--model", model, "--mnist", str(data_dirs.mnist), "--out",
                     str(tmp_path / model), "--ny", "4"]) == 2
        err = capsys.readouterr().err
        assert "--ny" in err and "srvp" in err
        assert not (tmp_path / model).exists()


def test_srvp_paper_presets_are_the_reference_table():
    from experiments.configs import load_preset

    def row(dataset):
        c = load_preset(dataset, "paper", model="srvp")
        m, t = c["model"], c["train"]
        return (m["ny"], m["z_dim"], m["beta_z"], m["n_euler_steps"], m["res_gain"], m["arch"], m["skipco"], m["nt_inf"],
                m["n_past"], m["emission_scale"], t["batch_size"], m["n_past"] + t["n_future"], t["steps"], t["lr"])

    assert row("smmnist") == (20, 20, 2.0, 1, 1.41, "dcgan", False, 5, 5, 1.0, 128, 15, 1100000, 3e-4)
    assert row("kth") == (50, 50, 1.0, 2, 1.2, "vgg", True, 3, 10, 0.2, 100, 20, 200000, 3e-4)
    assert row("bair") == (50, 50, 1.0, 2, 1.41, "vgg", True, 2, 2, 0.71, 192, 12, 1500000, 3e-4)
    assert row("human36m") == (50, 50, 1.0, 2, 1.2, "vgg", True, 3, 8, 0.2, 100, 16, 350000, 3e-4)
    kth = load_preset("kth", "paper", model="srvp")["train"]
    assert kth["lr_decay_frac"] == 0.25   # 150k constant, then 50k of linear decay to 0


def test_the_learning_rate_is_constant_then_decays_linearly_to_zero():
    s = ConstantFactors(0.25)
    assert [s.lr_factor(p) for p in (0.0, 0.5, 0.75)] == [1.0, 1.0, 1.0]
    assert s.lr_factor(0.875) == pytest.approx(0.5) and s.lr_factor(1.0) == 0.0
    assert ConstantFactors().lr_factor(0.99) == 1.0


@pytest.mark.parametrize("name", ["svg", "srvp"])
def test_prediction_apis_share_predict_with_samples_and_reconstruct(name):
    from test_svg import tiny as tiny_svg
    from models.srvp import SRVPRun as SRVP
    from models.svg import SVGRun as SVG

    torch.manual_seed(0)
    api = (SVG(tiny_svg(n_past=2)) if name == "svg" else SRVP(tiny())).eval()
    x = frames(3, 5)
    draws = api.predict(x[:, :2], 3, n_samples=4)
    assert draws.shape == (4, 3, 5, 1, 64, 64)
    assert torch.equal(draws[:, :, :2], x[:, :2].expand(4, -1, -1, -1, -1, -1))
    assert not torch.equal(draws[0, :, 2:], draws[1, :, 2:])   # independent futures
    torch.manual_seed(3)
    recon = api.reconstruct(x)
    torch.manual_seed(3)
    assert torch.equal(recon, api.reconstruct(x)) and recon.shape == x.shape
    assert 0 <= float(recon.min()) and float(recon.max()) <= 1
    if name == "svg":   # SVG conditions on its first frame: it is the input's
        assert torch.equal(recon[:, 0], x[:, 0]) and not torch.equal(recon[:, 1], x[:, 1])
    else:   # every latent at its posterior mean: the sequence seen decides the frames
        torch.manual_seed(3)
        assert not torch.equal(recon, api.reconstruct(frames(3, 5, seed=1)))


def _srvp_one_step(rank, world_size, batch_size, init_file, out_file):
    """One training step of a tiny SRVP through ``train_stage``, in a process of ``world_size``.

    Deterministic so that ranks and one process see the same function: latents at their means,
    the content frames fixed (the first nt_inf, skip frame 0), BatchNorm on running statistics
    (under DDP, batch statistics are per process)."""
    import torch.distributed as dist

    from tests_helpers import MeanGuide
    from test_reliability import _Frames
    from vdsm.batches import ResumableBatches

    if world_size > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        nets, model, guide = pair(tiny(nc=3))
        nets.eval()
        nets.training_frames = lambda b, t, device: (torch.arange(2).expand(b, 2), torch.zeros(b, dtype=torch.long))
        batches = ResumableBatches(_Frames(), batch_size, rank=rank, world_size=world_size)
        train_stage(model, MeanGuide(guide), batches, schedule=ConstantFactors(), device="cpu",
                    options=TrainOptions(steps=1, lr=1e-2, progress=False))
    finally:
        torch.set_default_dtype(default)
    if rank == 0:
        torch.save({k: v.clone() for k, v in nets.state_dict().items()}, out_file)
    if world_size > 1:
        dist.destroy_process_group()


def test_two_gloo_processes_train_srvp_as_one_process_on_the_combined_batch(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_srvp_one_step, args=(2, 2, str(tmp_path / "init"), str(tmp_path / "ddp.pt")), nprocs=2, join=True)
    _srvp_one_step(0, 1, 4, None, str(tmp_path / "single.pt"))
    ddp, single = torch.load(tmp_path / "ddp.pt"), torch.load(tmp_path / "single.pt")
    torch.manual_seed(0)
    initial = SRVPNets(tiny(nc=3)).state_dict()
    assert any(not torch.allclose(single[k].double(), v.double()) for k, v in initial.items())  # the step moved them
    for k in single:
        assert torch.allclose(ddp[k], single[k], atol=1e-9, rtol=1e-8), k


def test_the_defaults_and_presets_have_the_releases_layers_and_the_flags_turn_them_off():
    """The release's DCGAN64Encoder has no BatchNorm in its first block and its residual MLP's biases
    start at 0: the defaults and every preset build those; ``encoder_first_batchnorm`` and
    ``residual_zero_bias`` give the other layers."""
    from experiments.configs import load_model_preset
    from models.registry import get

    for dataset, preset in [("smmnist", "cpu")] + [(d, "paper") for d in ("smmnist", "mmnist", "kth", "bair", "human36m")]:
        model = load_model_preset(get("srvp"), dataset, preset)["model"]
        assert model["encoder_first_batchnorm"] is False and model["residual_zero_bias"] is True
    nets = SRVPNets(tiny())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in nets.encoder.blocks[0].modules())
    assert all(layer.bias.abs().max() == 0 for layer in nets.residual if isinstance(layer, torch.nn.Linear))
    other = SRVPNets(tiny(encoder_first_batchnorm=True, residual_zero_bias=False))
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in other.encoder.blocks[0].modules())
    assert any(layer.bias.abs().max() > 0 for layer in other.residual if isinstance(layer, torch.nn.Linear))
