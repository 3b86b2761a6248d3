"""C-DSVAE (Bai, Wang & Gomes 2021) as a member of the family: sites, the objective written out as
the release's train_cdsvae.py computes it, the augmentations against an oracle on Sprites, and
``--model cdsvae`` through run, resume, evaluate and damage."""
import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceMeanField_ELBO

import data
from models.cdsvae import CDSVAEConfig, CDSVAERun, recolour, shuffle_frames, simclr_view
from tests_helpers import frames, release_kls, run_main, train_resume_evaluate_damage
from vdsm.annealing import ConstantFactors
from vdsm.train import ELBOLoss, TrainOptions, train_stage
from vdsm.train_hooks import TensorBoardLog

TINY = {"f_dim": 4, "z_dim": 3, "g_dim": 8, "nf": 4, "rnn_dim": 8, "mws_dataset_size": 50}
TINY_FLAGS = ["--f-dim", "4", "--z-dim", "3", "--g-dim", "8", "--nf", "4", "--rnn-dim", "8", "--batch-size", "3",
              "--eval-sequences", "4", "--num-workers", "0", "--no-progress"]


def tiny(**kw):
    torch.manual_seed(0)
    return CDSVAERun(CDSVAEConfig(**{**TINY, **kw}))


def test_sites_and_shapes_do_not_depend_on_the_batch_size_and_one_svi_step_trains():
    run = tiny()
    names = {}
    for b in (2, 5):
        x = frames(b, 4)
        guide_trace = poutine.trace(run.guide).get_trace(x, factors=run.factors())
        trace = poutine.trace(poutine.replay(run.model, guide_trace)).get_trace(x, factors=run.factors())
        sites = [(n, s["type"], s["is_observed"]) for n, s in trace.nodes.items()
                 if s["type"] == "sample" and not poutine.util.site_is_subsample(s)]
        names[b] = sites
        assert trace.nodes["identity"]["value"].shape == (b, 4) and trace.nodes["z_3"]["value"].shape == (b, 3)
        for factor in ("content_nce", "motion_nce", "mi_fz"):   # one value per sequence, in the plate
            assert trace.nodes[factor]["fn"].batch_shape == (b,), factor
            assert [f.name for f in trace.nodes[factor]["cond_indep_stack"]] == ["sequences"]
    assert names[2] == names[5]
    assert [n for n, kind, observed in names[2] if not observed] == ["identity", "z_1", "z_2", "z_3", "z_4"]
    x = frames(3, 4)
    svi = pyro.infer.SVI(run.model, run.guide, pyro.optim.Adam({"lr": 1e-3}), TraceMeanField_ELBO())
    assert math.isfinite(svi.step(x, factors=run.factors()))


def _release_loss(nets, x, f, z, views, c):
    """The release's batch loss (train_cdsvae.py ``train``), written as it computes it, on the guide's
    draws f, z and the augmented views: L2 recon / B + KL_f / B + KL_z / B + mi_fz + 10 con_c + 10 con_m."""
    b, t = x.shape[:2]
    f_mean, f_scale, z_mean, z_scale = nets.posterior(x)
    f_logvar, z_logvar = 2 * f_scale.log(), 2 * z_scale.log()
    recon = torch.sigmoid(nets.decode_logits(z, f))
    l_recon = ((recon - x) ** 2).sum()
    kld_f, kld_z = release_kls(nets, x, z)

    def contrastive(xi, xj, tau=c.temperature):   # contrastive_loss(tau=0.5, normalize=True)
        both = torch.cat((xi, xj), 0)
        norms = both.norm(dim=1)
        sim = torch.exp(both @ both.T / (norms[:, None] * norms[None, :]) / tau)
        match = torch.exp((xi * xj).sum(-1) / (xi.norm(dim=1) * xj.norm(dim=1)) / tau)
        match = torch.cat((match, match), 0)
        return torch.mean(-torch.log(match / (sim.sum(-1) - math.exp(1 / tau))))

    con_c = contrastive(f_mean, nets.posterior(views["content"])[0])
    con_m = contrastive(z_mean.reshape(b, -1), nets.posterior(views["motion"])[2].reshape(b, -1))

    def log_density(sample, mu, logvar):
        return -0.5 * ((sample - mu) ** 2 * torch.exp(-logvar) + logvar + math.log(2 * math.pi))

    n = c.mws_dataset_size
    logq_f_tmp = log_density(f.unsqueeze(0).repeat(t, 1, 1).view(t, b, 1, -1), f_mean.unsqueeze(0).repeat(t, 1, 1).view(t, 1, b, -1),
                             f_logvar.unsqueeze(0).repeat(t, 1, 1).view(t, 1, b, -1))
    logq_z_tmp = log_density(z.transpose(0, 1).view(t, b, 1, -1), z_mean.transpose(0, 1).view(t, 1, b, -1),
                             z_logvar.transpose(0, 1).view(t, 1, b, -1))
    logq_fz_tmp = torch.cat((logq_f_tmp, logq_z_tmp), 3)
    logq_f = torch.logsumexp(logq_f_tmp.sum(3), 2) - math.log(b * n)
    logq_z = torch.logsumexp(logq_z_tmp.sum(3), 2) - math.log(b * n)
    logq_fz = torch.logsumexp(logq_fz_tmp.sum(3), 2) - math.log(b * n)
    mi_fz = torch.relu(logq_fz - logq_f - logq_z).mean()
    terms = {"content_nce": c.weight_content * con_c, "motion_nce": c.weight_motion * con_m, "mi_fz": c.weight_mi * mi_fz}
    return (l_recon + kld_f + kld_z) / b + sum(terms.values()), terms


def test_the_objective_is_the_releases_loss_written_out():
    """What training optimises (TraceMeanField_ELBO's loss of model and guide) is B times the release's
    batch loss, plus the Gaussian's normalising constant (the release's L2 is -log N(x; mean, sqrt(1/2))
    without it), for one fixed draw of the latents and the augmentations; each added term's factor
    site holds B times the release's term."""
    run = tiny()
    c, x = run.nets.config, frames(4, 3)
    b = x.shape[0]
    pyro.set_rng_seed(1)
    loss = TraceMeanField_ELBO().differentiable_loss(run.model, run.guide, x, factors=run.factors()).detach()
    pyro.set_rng_seed(1)
    guide_trace = poutine.trace(run.guide).get_trace(x, factors=run.factors())
    views = {"content": shuffle_frames(x), "motion": recolour(x)}   # the model's draws, in its order
    f = guide_trace.nodes["identity"]["value"]
    z = torch.stack([guide_trace.nodes[f"z_{k}"]["value"] for k in (1, 2, 3)], 1)
    constant = x.numel() * 0.5 * math.log(math.pi)   # per pixel: log sqrt(1/2) + log sqrt(2 pi)
    with torch.no_grad():
        expected, terms = _release_loss(run.nets, x, f, z, views, c)
    assert float(loss - constant) == pytest.approx(float(b * expected), rel=1e-5)
    pyro.set_rng_seed(1)
    guide_trace = poutine.trace(run.guide).get_trace(x, factors=run.factors())
    trace = poutine.trace(poutine.replay(run.model, guide_trace)).get_trace(x, factors=run.factors())
    for name, value in terms.items():
        assert float(-trace.nodes[name]["fn"].log_factor.sum().detach()) == pytest.approx(b * float(value), rel=1e-5), name
        assert float(value) > 0.1, name   # each term is there to be checked
    # without the added terms the loss is the plain ELBO's
    plain = tiny(weight_content=0.0, weight_motion=0.0, weight_mi=0.0)
    pyro.set_rng_seed(1)
    elbo_only = TraceMeanField_ELBO().differentiable_loss(plain.model, plain.guide, x, factors=plain.factors()).detach()
    assert not {"content_nce", "motion_nce", "mi_fz"} & set(poutine.trace(plain.model).get_trace(x, factors=plain.factors()).nodes)
    assert float(elbo_only - constant) == pytest.approx(float(b * expected - b * sum(terms.values())), rel=1e-5)


class ScalarRecorder:
    """A stand-in for TensorBoard's SummaryWriter: keeps every scalar."""

    def __init__(self):
        self.scalars = {}

    def add_scalar(self, tag, value, step):
        self.scalars.setdefault(tag, []).append((step, value))


def test_training_records_each_added_term_beside_the_loss():
    """The loss module records each factor site's share of the loss (the value the site adds to the
    negative ELBO, for the same draw), and the training loop logs it per frame and reports it."""
    run, x = tiny(), frames(4, 3)
    loss_module = ELBOLoss(run.model, run.guide, TraceMeanField_ELBO())
    pyro.set_rng_seed(1)
    loss_module(x, run.factors())
    pyro.set_rng_seed(1)
    guide_trace = poutine.trace(run.guide).get_trace(x, factors=run.factors())
    trace = poutine.trace(poutine.replay(run.model, guide_trace)).get_trace(x, factors=run.factors())
    assert set(loss_module.last_terms) == {"content_nce", "motion_nce", "mi_fz"}
    for name, value in loss_module.last_terms.items():
        assert float(value) == pytest.approx(float(-trace.nodes[name]["fn"].log_factor.detach().sum()), rel=1e-5), name
    writer = ScalarRecorder()
    pyro.set_rng_seed(1)   # the first step draws as above, from the same weights
    stats = train_stage(run.model, run.guide, iter([x] * 3), schedule=ConstantFactors(0.0, groups=("identity", "z")),
                        device="cpu", hooks=[TensorBoardLog(writer, "cdsvae")], tag="cdsvae",
                        options=TrainOptions(steps=3, progress=False))
    for name in ("content_nce", "motion_nce", "mi_fz"):
        logged = writer.scalars[f"cdsvae/term_{name}"]
        assert [step for step, _ in logged] == [1, 2, 3], name
        assert stats["final_terms_per_frame"][name] == pytest.approx(logged[-1][1]), name   # the last tenth: one step
        first = float(loss_module.last_terms[name]) / (4 * 3)   # per frame: batch 4 x 3 frames
        assert logged[0][1] == pytest.approx(first, rel=1e-5), name
    # a model without factor sites has none to log
    plain = tiny(weight_content=0.0, weight_motion=0.0, weight_mi=0.0)
    writer = ScalarRecorder()
    stats = train_stage(plain.model, plain.guide, iter([x]), schedule=ConstantFactors(0.0, groups=("identity", "z")),
                        device="cpu", hooks=[TensorBoardLog(writer, "cdsvae")], tag="cdsvae",
                        options=TrainOptions(steps=1, progress=False))
    assert stats["final_terms_per_frame"] == {} and not any("term_" in tag for tag in writer.scalars)


# ------------------------------------------------------------ the augmentations against an oracle


def _palettes(x, levels=8):
    """Order-free appearance of each sequence [B, levels^3]: the histogram of its non-background colours."""
    q = (x.clamp(0, 0.999) * levels).long()
    codes = (q[:, :, 0] * levels + q[:, :, 1]) * levels + q[:, :, 2]
    seen = x.amax(2) > 0
    hist = torch.zeros(x.shape[0], levels ** 3)
    for i in range(x.shape[0]):   # a test oracle, not library code
        hist[i] = torch.bincount(codes[i][seen[i]], minlength=levels ** 3).float()
    return hist / hist.sum(1, keepdim=True)


def _silhouettes(x):
    """Colour-free motion of each sequence [B, T * H * W]: which pixels of each frame are the character's."""
    return (x.amax(2) > 0).float().flatten(1)


class SpritesOracle:
    """Labels Sprites sequences from pixels by nearest neighbours in a labelled pool: the static
    attributes from the colour histogram among the other actions of every character, the action from
    the silhouettes among the sequences of the other characters."""

    STATIC = ("body", "bottom", "top", "hair")

    def __init__(self, x, labels):
        self.palettes, self.silhouettes, self.labels = _palettes(x), _silhouettes(x), labels

    def static(self, x, own):
        d = torch.cdist(_palettes(x), self.palettes, p=1)
        d[torch.arange(len(own)), own] = math.inf   # not the sequence itself
        best = d.argmin(1)
        return torch.stack([self.labels[k][best] for k in self.STATIC], 1)

    def action(self, x, own):
        d = torch.cdist(_silhouettes(x), self.silhouettes, p=1)
        same = self.labels["character"][own][:, None] == self.labels["character"][None, :]
        d[same] = math.inf   # only other characters
        return self.labels["action"][d.argmin(1)]


def test_each_augmentation_keeps_what_it_should_by_an_oracle_on_sprites(data_dirs, tmp_path):
    """Content augmentation: the oracle's static attributes stay; motion augmentation: the oracle's
    action stays and the static attributes change. The oracle itself is first checked on the
    sequences as they are."""
    ds = data.get_dataset("sprites", "test", tmp_path, sprites_layers=data_dirs.sprites)
    items = [ds[i] for i in range(9 * 30)]   # every action of 30 test characters
    x = torch.stack([frames for frames, _ in items])
    labels = {k: torch.tensor([lab[k] for _, lab in items]) for k in ("body", "bottom", "top", "hair", "action", "character")}
    assert len(set(labels["character"].tolist())) >= 25 and len(set(labels["action"].tolist())) == 9
    oracle, own = SpritesOracle(x, labels), torch.arange(len(items))
    true_static = torch.stack([labels[k] for k in SpritesOracle.STATIC], 1)
    assert (oracle.static(x, own) == true_static).all(1).float().mean() > 0.9
    assert (oracle.action(x, own) == labels["action"]).float().mean() > 0.9

    torch.manual_seed(0)
    content = shuffle_frames(x)
    assert (content != x).flatten(1).any(1).float().mean() > 0.5   # the order changed
    assert torch.equal(content.sum(1), x.sum(1))                    # the same frames
    assert torch.equal(oracle.static(content, own), oracle.static(x, own))

    motion = recolour(x)
    assert torch.equal(_silhouettes(motion), _silhouettes(x))
    assert (oracle.action(motion, own) == labels["action"]).float().mean() > 0.9
    assert (oracle.static(motion, own) == true_static).all(1).float().mean() < 0.3
    assert motion.min() >= 0 and motion.max() <= 1


def test_the_simclr_motion_view_is_drawn_once_per_sequence_and_trains():
    """--motion-augmentation simclr: one draw per sequence applied to every frame (a still sequence stays
    still, so a moving one moves as before under one map), a different draw for each sequence; frames
    in [0, 1]; a step trains with it; the settings it cannot serve are refused."""
    torch.manual_seed(0)
    still = torch.rand(1, 1, 3, 64, 64).expand(6, 4, 3, 64, 64).contiguous()   # six copies of one still sequence
    view = simclr_view(still)
    assert view.shape == still.shape and view.dtype == still.dtype and 0 <= view.min() and view.max() <= 1
    assert torch.allclose(view, view[:, :1].expand_as(view))            # every frame: the same transform
    apart = (view[:, None] - view[None]).abs().flatten(2).amax(2)
    assert (apart + torch.eye(6) > 1e-3).all()                         # every sequence: its own draw
    run, x = tiny(motion_augmentation="simclr"), frames(3, 3)
    trace = poutine.trace(run.model).get_trace(x, factors=run.factors())
    assert torch.isfinite(trace.nodes["motion_nce"]["fn"].log_factor).all()
    for bad, message in (({"motion_augmentation": "flip"}, "use recolour or simclr"),
                         ({"motion_augmentation": "simclr", "nc": 1}, "RGB"),
                         ({"motion_augmentation": "simclr", "augmentations_file": __file__}, "give one of them")):
        with pytest.raises(ValueError, match=message):
            CDSVAEConfig(**{**TINY, **bad}).check()


# ------------------------------------------------------------ through the commands


def test_cdsvae_runs_resumes_evaluates_and_damages_from_the_command_line(tmp_path, data_dirs, judge_root):
    config, _, protocol = train_resume_evaluate_damage("cdsvae", TINY_FLAGS, tmp_path, data_dirs, judge_root)
    assert config["model_name"] == "cdsvae" and config["preset"] == "cpu" and config["model"]["weight_content"] == 10.0
    assert any("augmentations built on the fly" in line for line in config["departs_from_paper"])
    assert "pooled" in protocol["fix_dynamics"]


def test_its_weights_are_flags_refused_for_other_models(tmp_path):
    code, _, err = run_main("run", ["--dataset", "sprites", "--model", "dsa", "--weight-motion", "3", "--out", tmp_path / "x"])
    assert code == 2 and "--weight-motion only applies to --model cdsvae" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------ the release's options


def test_the_mi_estimate_with_the_releases_kernels_is_the_releases_log_density():
    """``mi_kernel="variance"``: the release's ``log_density(sample, mu, logsigma)`` called with the
    log-variance as ``logsigma`` (mutual_info.py), in the release's minibatch-weighted estimate."""
    from models.cdsvae import mi_penalty

    g = torch.Generator().manual_seed(3)
    b, t, df, dz, n = 5, 3, 4, 2, 50
    f_mean, z_mean = torch.randn(b, df, generator=g), torch.randn(b, t, dz, generator=g)
    f_logvar, z_logvar = torch.randn(b, df, generator=g) - 1, torch.randn(b, t, dz, generator=g) - 1
    f = f_mean + torch.randn(b, df, generator=g) * (0.5 * f_logvar).exp()
    z = z_mean + torch.randn(b, t, dz, generator=g) * (0.5 * z_logvar).exp()

    def log_density(sample, mu, logsigma):   # the release's, as it is written
        return -0.5 * (((sample - mu) * torch.exp(-logsigma)) ** 2 + 2 * logsigma + math.log(2 * math.pi))

    logq_f = log_density(f[:, None], f_mean[None], f_logvar[None]).sum(-1)            # [B, B]
    logq_z = log_density(z.transpose(0, 1)[:, :, None], z_mean.transpose(0, 1)[:, None],
                         z_logvar.transpose(0, 1)[:, None]).sum(-1)                   # [T, B, B]
    norm = math.log(b * n)
    release = torch.relu(torch.logsumexp(logq_f + logq_z, -1) - torch.logsumexp(logq_f, -1)
                         - torch.logsumexp(logq_z, -1) + norm).mean(0)
    scales = (0.5 * f_logvar).exp(), (0.5 * z_logvar).exp()
    ours = mi_penalty(f, z, f_mean, scales[0], z_mean, scales[1], n, kernel="variance")
    assert torch.allclose(ours, release, atol=1e-5)
    assert not torch.allclose(mi_penalty(f, z, f_mean, scales[0], z_mean, scales[1], n), release, atol=1e-3)


def _release_file(path, sequences, k=2):
    """A data.pkl in the release's layout: frames [N, T, 64, 64, 3] on the 1/256 scale; K views each,
    view j of sequence i filled with a value that names (i, j)."""
    import pickle

    import numpy as np

    x = sequences.permute(0, 1, 3, 4, 2).numpy()
    marks = np.arange(len(x) * k, dtype=np.float32).reshape(len(x), k)[..., None, None, None, None] / 256
    views = np.broadcast_to(marks, (len(x), k, *x.shape[1:])).astype(np.float32)
    half = len(x) // 2
    data = {"X_train": x[:half], "X_test": x[half:], "c_augs_train": views[:half], "c_augs_test": views[half:],
            "m_augs_train": views[:half] + 0.5, "m_augs_test": views[half:] + 0.5}
    path.write_bytes(pickle.dumps(data))
    return path


def test_the_releases_augmentations_file_is_read_sequence_by_sequence(tmp_path):
    """--augmentations-file: each sequence's views are found by its pixels (train or test part of the
    file), one of its K views per step, the same one for content and motion; a sequence the file lacks,
    or a file that is not the release's, is one line."""
    sequences = torch.randint(0, 256, (6, 3, 3, 64, 64), generator=torch.Generator().manual_seed(0)) / 256
    path = _release_file(tmp_path / "data.pkl", sequences)
    run = tiny(augmentations_file=str(path))
    order = torch.tensor([4, 1, 5])   # test and train parts, in another order than the file's
    content, motion = run.nets.views(sequences[order])
    picked = (content[:, 0, 0, 0, 0] * 256).round().long()
    assert torch.equal(picked // 2, order)   # view j of sequence i holds i * K + j
    assert torch.allclose(motion, content + 0.5)
    with pytest.raises(ValueError, match="a training sequence is not in"):
        run.nets.views(torch.rand(2, 3, 3, 64, 64))
    (tmp_path / "other.pkl").write_bytes(__import__("pickle").dumps({"X_train": 1}))
    with pytest.raises(ValueError, match="not the C-DSVAE release's data.pkl"):
        tiny(augmentations_file=str(tmp_path / "other.pkl")).nets.views(sequences[:1])
    with pytest.raises(ValueError, match="is not a file"):
        CDSVAEConfig(**TINY, augmentations_file=str(tmp_path / "missing.pkl")).check()


def test_the_posterior_of_x_is_computed_once_per_step_with_the_same_loss_and_gradients():
    """The guide's pass over x is the one the added terms read: three encoder calls per step (x and its
    two views), not four, and the same loss and gradients as computing it again."""
    run, x = tiny(), frames(4, 3)
    calls = []
    run.nets.encoder.register_forward_hook(lambda *args: calls.append(1))

    def loss_and_grads():
        for p in run.nets.parameters():
            p.grad = None
        pyro.set_rng_seed(1)
        loss = TraceMeanField_ELBO().differentiable_loss(run.model, run.guide, x, factors=run.factors())
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in run.nets.parameters() if p.grad is not None]

    shared = loss_and_grads()
    assert len(calls) == 3
    forget_after_guide = run.guide.forward

    def guide_without_cache(*args, **kwargs):
        out = forget_after_guide(*args, **kwargs)
        run.nets.forget()
        return out

    run.guide.forward = guide_without_cache
    calls.clear()
    separate = loss_and_grads()
    assert len(calls) == 4
    assert torch.equal(shared[0], separate[0])
    # equal up to rounding (the biases of convolutions before BatchNorm have a true gradient of 0: noise)
    largest = max(float(b.abs().max()) for b in separate[1])
    assert max(float((a - b).abs().max()) for a, b in zip(shared[1], separate[1])) < 1e-4 * largest
