"""Priors fitted after training: diagonal Gaussian mixtures of the training sequences' posterior
latents (their aggregate posterior), each mixture's size chosen on val.

* Identity (VDSM's static latent): stage 1 trains with a Gaussian identity prior whose KL is
  down-weighted, so the posterior identities fill only part of it; identities drawn from that
  Gaussian mostly fall between the ones the decoder has learnt and decode to blended, greyish
  characters. Drawing from the aggregate posterior instead gives characters that look like real
  ones ("ex-post density estimation", Ghosh et al. 2020). Used by the model's ``static_prior``.
* Dynamics (stage 2): the sequence's dynamics d and its first pose z_1, jointly. Drawn from their
  priors (a Gaussian, and N(0, I) for z_1), they give motions the judge cannot name and first
  poses no sequence starts from; drawn jointly from the fitted mixture, a motion and a first
  pose that go together. Used where the API draws new dynamics (``fix_identity``, ``generate``).

The training objective is unchanged: the mixtures are fitted after training and used where the
model draws these latents afterwards. Each component's scale is at least the mean posterior
scale of the latents it covers: a component is never narrower than one sequence's posterior.
"""
import math
from dataclasses import dataclass

import pyro.distributions as dist
import torch

__all__ = ["DiagonalMixture", "fit_mixture", "fit_mixture_chosen_on_val", "posterior_values", "CANDIDATES"]

#: Mixture sizes tried; the one with the best val likelihood is kept.
CANDIDATES = (1, 4, 16, 64, 256, 1024)


@dataclass
class DiagonalMixture:
    """Mixture weights (as logits) [K], component means and scales [K, D]."""

    logits: torch.Tensor
    loc: torch.Tensor
    scale: torch.Tensor

    def distribution(self, batch):
        """The distribution of ``batch`` points: a mixture with event shape [D], batch shape [batch]."""
        k, d = self.loc.shape
        mix = dist.Categorical(logits=self.logits.expand(batch, k))
        comp = dist.Normal(self.loc.expand(batch, k, d), self.scale.expand(batch, k, d)).to_event(1)
        return dist.MixtureSameFamily(mix, comp)

    def sample(self, batch):
        """``batch`` points [batch, D]."""
        return self.distribution(batch).sample()

    def log_prob(self, x):
        """log density of points [N, D] (float64, without building [N, K, D])."""
        return _component_log_probs(x.double(), self.logits.double(), self.loc.double(),
                                    self.scale.double()).logsumexp(1)

    def to(self, device):
        return DiagonalMixture(self.logits.to(device), self.loc.to(device), self.scale.to(device))

    def state_dict(self):
        return {"logits": self.logits.cpu(), "loc": self.loc.cpu(), "scale": self.scale.cpu()}

    @classmethod
    def from_state_dict(cls, state):
        return cls(state["logits"].float(), state["loc"].float(), state["scale"].float())


def _component_log_probs(x, logits, loc, scale):
    """[N, K]: log w_k + log N(x_n; loc_k, diag(scale_k^2)), from matrix products."""
    prec = scale.pow(-2)                                                        # [K, D]
    quad = x.pow(2) @ prec.T - 2 * x @ (loc * prec).T + (loc.pow(2) * prec).sum(1)
    const = -scale.log().sum(1) - 0.5 * loc.shape[1] * math.log(2 * math.pi)
    return torch.log_softmax(logits, 0) - 0.5 * quad + const


def fit_mixture(x, k, *, min_scale, iterations=200, seed=0):
    """EM for a diagonal Gaussian mixture of ``k`` components on points [N, D] (k-means++ start,
    seeded); ``min_scale`` (a number or one per dimension) floors every component's scales.
    Returns the mixture (float32) and the mean log-likelihood of ``x`` (per point)."""
    x = x.double()
    n, d = x.shape
    k = min(k, n)
    g = torch.Generator().manual_seed(seed)
    chosen = [int(torch.randint(n, (1,), generator=g))]
    gap = (x - x[chosen[0]]).pow(2).sum(1)            # squared distance to the nearest centre so far
    for _ in range(k - 1):   # k-means++: far points are likelier new centres
        weights = gap if gap.sum() > 0 else torch.ones(n, dtype=x.dtype)
        chosen.append(int(torch.multinomial(weights, 1, generator=g)))
        gap = torch.minimum(gap, (x - x[chosen[-1]]).pow(2).sum(1))
    loc, logits = x[chosen], torch.zeros(k, dtype=x.dtype)
    min_scale = torch.as_tensor(min_scale, dtype=x.dtype).expand(d)    # a number, or one per dimension
    scale = (x.std(0) if n > 1 else torch.zeros(d, dtype=x.dtype)).clamp_min(min_scale).expand(k, d).clone()
    for _ in range(iterations):
        resp = torch.softmax(_component_log_probs(x, logits, loc, scale), 1)     # E step: [N, K]
        mass = resp.sum(0) + 1e-12
        logits = mass.log()
        loc = (resp.T @ x) / mass[:, None]
        var = (resp.T @ x.pow(2)) / mass[:, None] - loc.pow(2)
        scale = var.clamp_min(min_scale.pow(2)).sqrt()
    mixture = DiagonalMixture(torch.log_softmax(logits, 0).float(), loc.float(), scale.float())
    return mixture, float(mixture.log_prob(x).mean())


@torch.no_grad()
def posterior_values(posterior, dataset, device, groups, batch_size=256):
    """One pass over ``dataset``: for each group (name -> site names, e.g. {"dynamics": ("dynamics",
    "z_1")}), the sites' posterior means of every sequence side by side [N, D] and the mean
    posterior scale of each of those dimensions [D] (1e-3 where a custom guide's sites do not
    expose a scale). ``posterior(x)``: a guide trace at the posterior means."""
    points = {name: [] for name in groups}
    scales = {name: [] for name in groups}
    for start in range(0, len(dataset), batch_size):
        x = torch.stack([dataset[i][0] for i in range(start, min(start + batch_size, len(dataset)))]).to(device)
        trace = posterior(x)
        for name, sites in groups.items():
            values = [trace.nodes[site]["value"] for site in sites]
            points[name].append(torch.cat(values, -1).cpu())
            scales[name].append(torch.cat([_site_scale(trace.nodes[site]["fn"], v)
                                           for site, v in zip(sites, values)], -1).cpu())
    return {name: (torch.cat(points[name]), torch.cat(scales[name]).mean(0)) for name in groups}


def _site_scale(fn, value):
    base = getattr(fn, "base_dist", fn)
    scale = getattr(base, "scale", None)
    return scale.expand_as(value) if torch.is_tensor(scale) else torch.full_like(value, 1e-3)


def fit_mixture_chosen_on_val(train_locs, val_locs, *, min_scale, max_components=256, seed=0):
    """The mixture (fitted on train) whose size gives val the best mean log-likelihood, and a
    table of every size tried: [{"components", "train_loglik", "val_loglik"}]."""
    tried, best = [], None
    for k in (c for c in CANDIDATES if c <= min(max_components, len(train_locs))):
        mixture, train_ll = fit_mixture(train_locs, k, min_scale=min_scale, seed=seed)
        val_ll = float(mixture.log_prob(val_locs).mean())
        tried.append({"components": k, "train_loglik": train_ll, "val_loglik": val_ll})
        if best is None or val_ll > best[1]:
            best = (mixture, val_ll)
    return best[0], tried
