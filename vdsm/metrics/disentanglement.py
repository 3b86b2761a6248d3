"""Judge-based metrics of the Sprites/MUG protocol: accuracy, IS, H(y|x), H(y)."""
import torch

__all__ = ["accuracy", "inception_score", "mean_entropy", "entropy_of_mean", "prediction_summary", "class_balanced",
           "JUDGE_METRICS"]

_EPS = 1e-12


def accuracy(probs, labels):
    """Share of rows whose arg-max class equals ``labels``."""
    return (probs.argmax(-1) == labels).float().mean().item()


def mean_entropy(probs):
    """H(y|x): the mean entropy of the predictive distributions (nats)."""
    return -(probs * (probs + _EPS).log()).sum(-1).mean().item()


def entropy_of_mean(probs):
    """H(y): the entropy of the mean prediction (nats; at most ln(num classes))."""
    p = probs.mean(0)
    return -(p * (p + _EPS).log()).sum().item()


def inception_score(probs):
    """IS = exp(E_x KL(p(y|x) || p(y))), with p(y) the mean prediction over ``probs``."""
    p_y = probs.mean(0, keepdim=True)
    kl = (probs * ((probs + _EPS).log() - (p_y + _EPS).log())).sum(-1)
    return torch.exp(kl.mean().clamp_min(0)).item()  # the mean KL is a mutual information: >= 0 up to rounding


def prediction_summary(probs, labels=None, metrics=None):
    """Every metric of ``metrics`` (default ``JUDGE_METRICS``: IS, H(y|x), H(y)) for one batch of
    predictions [N, classes], and with ``labels`` the accuracy."""
    out = {name: fn(probs) for name, fn in (metrics or JUDGE_METRICS).items()}
    if labels is not None:
        out["accuracy"] = accuracy(probs, labels)
    return out


def class_balanced(probs, labels):
    """The rows of a class-balanced subset, as the C-DSVAE release's ``test_sprite_cls.py``: for every
    class present in ``labels``, its first m rows, m the smallest class count. Returns row indices."""
    classes, counts = labels.unique(return_counts=True)
    m = int(counts.min())
    return torch.cat([torch.nonzero(labels == c).flatten()[:m] for c in classes])


#: The label-free numbers of the judge protocols, each a function of predictions [N, classes].
JUDGE_METRICS = {"IS": inception_score, "H(y|x)": mean_entropy, "H(y)": entropy_of_mean}
