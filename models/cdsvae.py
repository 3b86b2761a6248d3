"""C-DSVAE, the contrastively disentangled sequential VAE (Bai, Wang & Gomes, NeurIPS 2021), as a
member of the state-space family.

The generative model is DSA's (``models.dsa``): a static latent f ~ N(0, I) (site "identity"),
per-frame latents z_1..z_T with a learned LSTM prior p(z_t | z_<t) (sites "z_1".."z_T") and frames
x_t ~ p(x_t | z_t, f) from one decoder of [z_t, f]. The guide (``guides.cdsvae``) is the release's
q(f | x_1:T) q(z_1:T | x_1:T): one bidirectional LSTM over the frame features, f from its two
ends, z_t from a forward RNN over its outputs (z does not read f, unlike DSA's full posterior).

The objective is the ELBO (every KL in closed form, ``TraceMeanField_ELBO``) plus three terms the
model adds as ``pyro.factor`` sites inside the batch plate (``objective_terms``), so that they are
part of the one SVI loss, scaled as the plate is, whatever guide is paired with the model:

    "content_nce"  weight_content * InfoNCE(mean q(f | x), mean q(f | content_augmented(x)))
    "motion_nce"   weight_motion  * InfoNCE(mean q(z | x), mean q(z | motion_augmented(x)))
    "mi_fz"        weight_mi * ReLU(log q(f, z_t) - log q(f) - log q(z_t)), a minibatch estimate

as the release's ``train_cdsvae.py`` computes them (its loss, per sequence: summed L2
reconstruction + KL_f + KL_z + mi_fz + 10 con_c + 10 con_m): InfoNCE over the 2B means of a batch
and its augmentation, cosine similarity at temperature 0.5, each mean's positive the other view of
its own sequence and its negatives the 2B - 2 others; q(f), q(z_t), q(f, z_t) of each sample as the
average density under the B posteriors of the batch, over ``mws_dataset_size`` x B. Each
sequence's factor is its share: the two InfoNCE terms of its means, halved, and its mean over
frames of the ReLU, so that the plate's sum is B times the release's batch means (the release
divides reconstruction and KLs by B and not these). The terms read the posterior statistics
through ``CDSVAENets.posterior`` (the default guide's networks; a custom guide that keeps
``nets.posterior`` trains with them as they are) and the guide's own draws of f and z_t. Under
DDP each process's InfoNCE negatives and MI estimate are its own share of the batch (the release's
DataParallel gathers the whole batch first).

Augmentations: the release reads them precomputed from its ``data.pkl`` (published: its README links
it). With ``augmentations_file`` naming that file they are read from it (``ReleaseAugmentations``);
otherwise they are built on the fly: ``shuffle_frames`` keeps the content (the same frames, an
independent random order per sequence: the motion is destroyed), as the paper does. The motion view
(appearance changed, movement kept) is ``motion_augmentation``'s: "recolour" (the library's default:
per sequence, the colour channels permuted and each channel's gamma drawn in [1/2, 2], the same for
every frame: the silhouette and its movement are kept exactly) or "simclr" (``simclr_view``: cropping
and resizing, colour distortion and Gaussian blur after SimCLR, the paper's list as a third-party port
of the release gives it, without settings; SimCLR's are used, each drawn once per sequence and applied
to all its frames; see docs/models/cdsvae.md).

The release's other choices, as options: its initialisation (``init_std`` 0.01, the default) and its MI
kernels (``mi_kernel="variance"``: it passes the log-variance where its ``log_density`` expects a log
standard deviation, so its kernels are as wide as the variance; the default, "std", uses the
posterior's own width, which changes the term's gradient). The posterior of x is computed once per step
(``CDSVAENets.posterior`` reuses the guide's pass), so BatchNorm's running statistics move once per step
where the release's move twice.

Networks (release ``model.py``): SVG's DCGAN-64 encoder (tanh features) and decoder without skips,
a two-layer LSTM prior from z_0 = 0, Gaussians as mean and log-variance; f's two heads are a
Linear then LeakyReLU(0.2), as the release's ``LinearUnit``. The release's likelihood is the
summed squared error, i.e. ``emission="normal"`` with ``emission_scale`` = sqrt(1/2).
"""
import functools
import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F

from vdsm.nets import LSTM, RNN, normal_init

from .config import check_values
from .dsa import DSAModel, DSARun, FrameCodec, StaticAndFramesSizes
from .spec import JUDGE, ModelSpec, Stage, constant_schedule

__all__ = ["CDSVAEConfig", "CDSVAENets", "CDSVAEModel", "CDSVAERun", "SPEC", "shuffle_frames", "recolour",
           "simclr_view", "MOTION_AUGMENTATIONS", "ReleaseAugmentations", "MI_KERNELS",
           "info_nce", "mi_penalty"]


@dataclass
class CDSVAEConfig(StaticAndFramesSizes):
    """C-DSVAE sizes and weights (defaults: the release's Sprites run, ``run_cdsvae.sh``)."""

    emission: str = "normal"   # pixel likelihood: bernoulli, normal or laplace
    emission_scale: float = 0.7071067811865476   # scale of a normal or laplace pixel likelihood (sqrt(1/2): summed squared error)
    weight_content: float = 10.0    # weight of the content InfoNCE term (the release's --weight_c_aug)
    weight_motion: float = 10.0     # weight of the motion InfoNCE term (the release's --weight_m_aug)
    weight_mi: float = 1.0          # weight of the MI(f; z) penalty (the release adds it unweighted)
    temperature: float = 0.5        # temperature of both InfoNCE terms
    mws_dataset_size: int = 8100    # N of the minibatch estimate of q(f), q(z), q(f, z) (the train split's size)
    mi_kernel: str = "std"          # width of the MI estimate's kernels: std (the posterior's), or variance (the release's)
    init_std: float = 0.01          # conv and linear weights N(0, init_std), as the release (0: PyTorch's initialisation)
    augmentations_file: str = ""    # the release's data.pkl: its precomputed content and motion views (empty: built on the fly)
    motion_augmentation: str = "recolour"   # the motion view built on the fly: recolour, or simclr (the paper's list)

    def check(self):
        check_values(self, positive=("emission_scale", "temperature"),
                     at_least_one=("nc", "f_dim", "z_dim", "g_dim", "nf", "rnn_dim", "mws_dataset_size"))
        if self.mi_kernel not in MI_KERNELS:
            raise ValueError(f"mi_kernel={self.mi_kernel!r}: use {' or '.join(MI_KERNELS)}")
        if self.init_std < 0:
            raise ValueError(f"init_std={self.init_std} must be at least 0")
        if self.motion_augmentation not in MOTION_AUGMENTATIONS:
            raise ValueError(f"motion_augmentation={self.motion_augmentation!r}: use "
                             f"{' or '.join(MOTION_AUGMENTATIONS)}")
        if self.motion_augmentation == "simclr" and self.nc != 3:
            raise ValueError(f"motion_augmentation='simclr' distorts RGB colours and these frames have {self.nc} "
                             f"channels: use motion_augmentation='recolour'")
        if self.augmentations_file and self.motion_augmentation != "recolour":
            raise ValueError(f"motion_augmentation={self.motion_augmentation!r} builds the motion view on the fly, "
                             f"augmentations_file reads the release's: give one of them")
        if self.augmentations_file and not Path(self.augmentations_file).is_file():
            raise ValueError(f"augmentations_file={self.augmentations_file!r} is not a file: pass the release's "
                             f"data.pkl, or leave it empty to build the augmentations on the fly")
        for name in ("weight_content", "weight_motion", "weight_mi"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 0")
        if self.emission not in ("bernoulli", "normal", "laplace"):
            raise ValueError(f"emission={self.emission!r}: use bernoulli, normal or laplace")


def _gaussian(h):
    """Mean and scale from [mean, log-variance] (the release's parameterisation)."""
    loc, logvar = h.chunk(2, -1)
    return loc, torch.exp(0.5 * logvar)


class CDSVAENets(FrameCodec):
    """Every network of C-DSVAE, shared by model and guide."""

    def __init__(self, c: CDSVAEConfig):
        super().__init__(c)
        self.prior_cells = nn.ModuleList([nn.LSTMCell(c.z_dim, c.rnn_dim), nn.LSTMCell(c.rnn_dim, c.rnn_dim)])
        self.prior_out = nn.Linear(c.rnn_dim, 2 * c.z_dim)
        self.birnn = LSTM(c.g_dim, c.rnn_dim, batch_first=True, bidirectional=True)
        self.f_mean = nn.Sequential(nn.Linear(2 * c.rnn_dim, c.f_dim), nn.LeakyReLU(0.2))
        self.f_logvar = nn.Sequential(nn.Linear(2 * c.rnn_dim, c.f_dim), nn.LeakyReLU(0.2))
        self.z_rnn = RNN(2 * c.rnn_dim, c.rnn_dim, batch_first=True)
        self.z_out = nn.Linear(c.rnn_dim, 2 * c.z_dim)
        normal_init(self, c.init_std)
        self._cache = (None, None)
        self._release_views = None

    def posterior(self, x):
        """Frames [B, T, C, 64, 64] -> (f loc, f scale) [B, f_dim] and (z loc, z scale) [B, T, z_dim].
        Computed once per step: the guide's call is reused by the model's added terms on the same tensor
        (the model, the last user, calls ``forget``), so the encoder runs, and BatchNorm's running
        statistics move, once per step."""
        if self._cache[0] is x and torch.is_grad_enabled() == self._cache[1][1]:
            return self._cache[1][0]
        out = self._posterior(x)
        self._cache = (x, (out, torch.is_grad_enabled()))
        return out

    def forget(self):
        self._cache = (None, None)

    def views(self, x, content=True, motion=True):
        """The content view (motion destroyed) and the motion view (appearance changed) of frames x, each
        None where not asked for: the release's precomputed ones when ``augmentations_file`` names its
        data.pkl, otherwise ``shuffle_frames`` and ``MOTION_AUGMENTATIONS[motion_augmentation]``."""
        if not self.config.augmentations_file:
            motion_view = MOTION_AUGMENTATIONS[self.config.motion_augmentation]
            return shuffle_frames(x) if content else None, motion_view(x) if motion else None
        if self._release_views is None:
            self._release_views = ReleaseAugmentations(self.config.augmentations_file)
        content_view, motion_view = self._release_views.views(x)
        return content_view if content else None, motion_view if motion else None

    def _posterior(self, x):
        b, t = x.shape[:2]
        h, _ = self.encoder(x.reshape(b * t, *x.shape[2:]))
        out, _ = self.birnn(h.reshape(b, t, -1))
        half = self.config.rnn_dim
        ends = torch.cat([out[:, -1, :half], out[:, 0, half:]], -1)   # forward's end, backward's end
        f_loc, f_scale = self.f_mean(ends), torch.exp(0.5 * self.f_logvar(ends))
        z_loc, z_scale = _gaussian(self.z_out(self.z_rnn(out)[0]))
        return f_loc, f_scale, z_loc, z_scale

    def prior_step(self, z_prev, state):
        """One step of the two-layer LSTM prior: (loc, scale, state) of z_t given z_{t-1}."""
        states = []
        h = z_prev
        for cell, s in zip(self.prior_cells, state or (None, None)):
            h, c = cell(h, s)
            states.append((h, c))
        loc, scale = _gaussian(self.prior_out(h))
        return loc, scale, tuple(states)


# ------------------------------------------------------------ augmentations and the added terms


def shuffle_frames(x):
    """The content augmentation: each sequence's frames in an independent random order."""
    order = torch.rand(x.shape[:2], device=x.device).argsort(1)
    return x[torch.arange(x.shape[0], device=x.device)[:, None], order]


def recolour(x):
    """The motion augmentation: per sequence, the channels permuted at random and each raised to a
    gamma drawn log-uniformly in [1/2, 2], the same for every frame (0 and 1 stay where they are, so
    the silhouette of every frame is kept)."""
    b, c = x.shape[0], x.shape[2]
    perm = torch.rand(b, c, device=x.device).argsort(1)
    gamma = torch.exp((torch.rand(b, 1, c, 1, 1, device=x.device) * 2 - 1) * math.log(2.0))
    picked = torch.gather(x, 2, perm[:, None, :, None, None].expand_as(x))
    return picked.clamp(min=0).pow(gamma.to(x.dtype))


@functools.lru_cache(maxsize=4)
def _simclr_pipeline(height, width):
    import kornia.augmentation as K

    blur = 2 * int(0.05 * min(height, width)) + 1   # SimCLR: a kernel of about a tenth of the side, odd
    return K.VideoSequential(
        K.RandomResizedCrop((height, width), scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)),
        K.ColorJitter(0.8, 0.8, 0.8, 0.2, p=0.8),
        K.RandomGrayscale(p=0.2),
        K.RandomGaussianBlur((blur, blur), (0.1, 2.0), p=0.5),
        data_format="BTCHW", same_on_frame=True)


def simclr_view(x):
    """The paper's motion augmentation as listed (see the module's docstring), with SimCLR's parameters:
    a random crop of 8-100% of the area and aspect 3/4-4/3 resized back, colour
    distortion of strength 1 (brightness, contrast, saturation 0.8, hue 0.2, with probability 0.8; grey
    with probability 0.2) and a Gaussian blur of sigma in [0.1, 2] with probability 0.5. Each is drawn
    once per sequence and applied to every frame (kornia's ``VideoSequential``), so the movement is kept.
    RGB frames [B, T, 3, H, W] in [0, 1]."""
    return _simclr_pipeline(*x.shape[-2:])(x.float()).clamp(0, 1).to(x.dtype)


#: the motion views built on the fly, by ``motion_augmentation``
MOTION_AUGMENTATIONS = {"recolour": recolour, "simclr": simclr_view}


def info_nce(a, b, temperature):
    """Per-pair InfoNCE [B] of two views [B, D]: the mean over both directions of -log of the positive's
    share among the 2B - 1 others (cosine similarity / temperature), as the release's
    ``contrastive_loss(tau, normalize=True)``; its batch mean is ``info_nce(...).mean()``."""
    both = F.normalize(torch.cat([a, b]).float(), dim=1)
    with torch.autocast(both.device.type, enabled=False):   # --amp: the loss term in fp32, as every log-density
        sim = both @ both.T / temperature
    n = a.shape[0]
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=sim.device), -math.inf)
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(sim.device)
    terms = torch.logsumexp(sim, 1) - sim.gather(1, positive[:, None]).squeeze(1)
    return (terms[:n] + terms[n:]) / 2


class ReleaseAugmentations:
    """The release's precomputed augmentations, read from its ``data.pkl`` (a dict with ``X_train``,
    ``X_test`` [N, T, 64, 64, 3] and ``c_augs_*``, ``m_augs_*`` [N, K, T, 64, 64, 3], as its
    ``utils.load_dataset`` reads it). A sequence is found by its pixels (each value times 256, rounded:
    the benchmark's scale), so the library's own loader, split and order stay as they are; as the
    release's loader, each step picks one of the K views per sequence at random, the same index for the
    content and the motion view. The file is a pickle: name only one you trust."""

    KEYS = ("X_train", "X_test", "c_augs_train", "c_augs_test", "m_augs_train", "m_augs_test")

    def __init__(self, path):
        with open(path, "rb") as f:
            data = pickle.load(f)
        missing = [k for k in self.KEYS if k not in data]
        if missing:
            raise ValueError(f"{path} lacks {', '.join(missing)}: it is not the C-DSVAE release's data.pkl")
        self.path, self.rows, self.content, self.motion = path, {}, [], []
        for split in ("train", "test"):
            for i, frames in enumerate(data[f"X_{split}"]):
                self.rows.setdefault(self._key(frames), (len(self.content), i))
            self.content.append(np.asarray(data[f"c_augs_{split}"]))
            self.motion.append(np.asarray(data[f"m_augs_{split}"]))

    @staticmethod
    def _key(frames):
        """Frames [T, 64, 64, 3] (floats on the benchmark's 1/256 scale, or bytes) -> a bytes key."""
        frames = np.asarray(frames)
        if frames.dtype.kind == "f":
            frames = np.rint(frames * 256)
        return frames.astype(np.uint8).tobytes()

    def views(self, x):
        """(content view, motion view) of frames x [B, T, C, H, W], from the file."""
        keys = [self._key(seq) for seq in x.detach().permute(0, 1, 3, 4, 2).float().cpu().numpy()]
        if any(k not in self.rows for k in keys):
            raise ValueError(f"a training sequence is not in {self.path}: the augmentations file must be the "
                             f"release's data.pkl of the same dataset, sequences of all {x.shape[1]} frames")
        pick = torch.randint(self.content[0].shape[1], (len(keys),)).tolist()

        def gather(views):
            chosen = np.stack([views[part][row, k] for (part, row), k in zip((self.rows[key] for key in keys), pick)])
            chosen = torch.from_numpy(chosen).permute(0, 1, 4, 2, 3).to(x.device, x.dtype)
            return chosen / 256 if not np.issubdtype(views[0].dtype, np.floating) else chosen

        return gather(self.content), gather(self.motion)


#: Widths of the MI estimate's Gaussian kernels: the posterior's standard deviation, or the release's
#: (its ``log_density`` receives the log-variance where it expects a log standard deviation, so the kernels
#: are as wide as the variance).
MI_KERNELS = ("std", "variance")


def _log_density_matrix(value, loc, scale):
    """[..., B, B]: log N(value_i; loc_j, scale_j) summed over the last dim, for samples i and posteriors j."""
    return dist.Normal(loc.unsqueeze(-3), scale.unsqueeze(-3)).log_prob(value.unsqueeze(-2)).sum(-1)


def mi_penalty(f, z, f_loc, f_scale, z_loc, z_scale, dataset_size, kernel="std"):
    """Per-sequence MI(f; z) penalty [B]: the mean over frames of ReLU(log q(f, z_t) - log q(f) -
    log q(z_t)), each density the batch's average posterior density over ``dataset_size`` (the
    release's estimate); f [B, f_dim], z [B, T, z_dim]. ``kernel`` (``MI_KERNELS``): "std" scores under
    the posteriors, "variance" under Gaussians as wide as their variance, as the release does."""
    if kernel == "variance":
        f_scale, z_scale = f_scale ** 2, z_scale ** 2
    b = f.shape[0]
    log_norm = math.log(b * dataset_size)
    log_f = _log_density_matrix(f.float(), f_loc.float(), f_scale.float())            # [B, B]
    zt = lambda v: v.float().transpose(0, 1)                                          # noqa: E731  [T, B, D]
    log_z = _log_density_matrix(zt(z), zt(z_loc), zt(z_scale))                        # [T, B, B]
    q_f = torch.logsumexp(log_f, -1) - log_norm
    q_z = torch.logsumexp(log_z, -1) - log_norm
    q_fz = torch.logsumexp(log_f + log_z, -1) - log_norm
    return F.relu(q_fz - q_f - q_z).mean(0)


# ------------------------------------------------------------ the model and its run


class CDSVAEModel(DSAModel):
    """DSA's generative model (its prior of two LSTM layers) and C-DSVAE's added terms; sites "identity"
    [B, f_dim], "z_1".."z_T" [B, z_dim], "obs" [B, T, C, 64, 64], factors "content_nce", "motion_nce",
    "mi_fz" [B]."""

    def objective_terms(self, x, s, z, factors):
        c, nets = self.nets.config, self.nets
        if not (c.weight_content or c.weight_motion or c.weight_mi):
            nets.forget()
            return
        f_loc, f_scale, z_loc, z_scale = nets.posterior(x)   # the guide's pass of this step, when it made one
        nets.forget()
        content, motion = nets.views(x, content=bool(c.weight_content), motion=bool(c.weight_motion))
        if c.weight_content:
            f_content = nets.posterior(content)[0]
            pyro.factor("content_nce", -c.weight_content * info_nce(f_loc, f_content, c.temperature))
        if c.weight_motion:
            z_motion = nets.posterior(motion)[2]
            pyro.factor("motion_nce", -c.weight_motion * info_nce(z_loc.flatten(1), z_motion.flatten(1), c.temperature))
        if c.weight_mi:
            pyro.factor("mi_fz", -c.weight_mi * mi_penalty(s, z, f_loc, f_scale, z_loc, z_scale, c.mws_dataset_size,
                                                           c.mi_kernel))
        nets.forget()


class CDSVAERun(DSARun):
    """A trained (or freshly built) C-DSVAE; as DSA's run, its dynamics are z_1..z_T, so
    ``transfer_action`` equals ``swap_identity``.

    Example::

        run = CDSVAERun.load("runs/sprites-cdsvae-...")     # or models.registry.load_run(...)
        moved = run.transfer_action(action_x, identity_x)
    """

    nets_cls, model_cls, guide_path = CDSVAENets, CDSVAEModel, "guides.cdsvae:CDSVAEGuide"


#: C-DSVAE's declaration, read by the runner (``models.spec.ModelSpec``).
SPEC = ModelSpec(
    names=("cdsvae",), config_cls=CDSVAEConfig, presets="cdsvae", run_cls=CDSVAERun,
    stages=(Stage("cdsvae", "train", pair=lambda run: (run.model, run.guide),
                  schedule=constant_schedule(("identity", "z")), frames=lambda config: config["train"]["seq_len"]),),
    evaluations=frozenset({JUDGE}), train_flags=("steps", "batch_size", "lr", "seq_len", "clip_norm", "identity_kl"))
CDSVAERun.spec = SPEC
