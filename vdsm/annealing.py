"""Annealing schedules as pure functions of training progress in [0, 1]."""
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["cosine_ramp", "spline4", "Schedule", "ConstantFactors"]

Z_KL_CLIP = (0.005, 80.0)


def cosine_ramp(start, end, frac, progress):
    """From ``start`` to ``end`` along a half cosine over the first ``1/frac`` of training, then ``end``."""
    p = min(1.0, max(0.0, progress) * frac)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * p))


def spline4(points, progress, clip=Z_KL_CLIP):
    """Quadratic interpolating spline through 4 ``(progress, value)`` points, clipped to ``clip``.

    The quadratic spline with not-a-knot ends, i.e. scipy's ``interp1d(kind="quadratic")``
    that the reference applies per epoch.
    """
    from scipy.interpolate import make_interp_spline

    xs, ys = zip(*points)
    value = float(make_interp_spline(xs, ys, k=2)(min(1.0, max(0.0, progress))))
    return float(np.clip(value, *clip))


@dataclass
class Schedule:
    """The annealing factors of one stage; ``factors(progress)`` gives the dict passed to model and guide.

    Keys of the result: ``temp_id`` (identity softmax temperature), ``identity``,
    ``dynamics``, ``z`` (KL scales of each latent group, applied with ``poutine.scale``).
    """

    temp_id_start: float = 1.0            # identity softmax temperature at the start
    temp_id_end: float = 10.0             # ... and at the end of its half-cosine ramp
    temp_id_frac: float = 2.0             # the ramp takes the first 1/frac of the stage
    anneal_start_id: float = 0.1          # KL scale of the identity at the start
    anneal_end_id: float = 1.0            # ... and at the end of its ramp
    anneal_frac_id: float = 3.0           # the ramp takes the first 1/frac of the stage
    anneal_start_dynamics: float = 0.1    # KL scale of the dynamics latent at the start
    anneal_end_dynamics: float = 1.0      # ... and at the end of its ramp
    anneal_frac_dynamics: float = 3.0     # the ramp takes the first 1/frac of the stage
    start_t: float = 30.0                 # KL scale of the poses z at progress 0 (a spline through 4 points)
    mid_t1: float = 0.2                   # ... at progress midfrac1
    mid_t2: float = 0.4                   # ... at progress midfrac2
    end_t: float = 1.0                    # ... at the end of the stage
    midfrac1: float = 0.5                 # progress of the poses' second spline point
    midfrac2: float = 0.8                 # progress of the poses' third spline point
    lr_decay_frac: float = 0.0   # the learning rate decays over this last fraction of the stage (0: constant)
    lr_end: float = 0.1          # ... along a half cosine, to this factor of the stage's lr

    def check(self):
        """ValueError naming the field when a value would make a KL scale or the temperature reach 0 or
        below (``poutine.scale`` needs positive scales), or the schedule's shape is undefined."""
        for name in ("temp_id_start", "temp_id_end", "anneal_start_id", "anneal_end_id", "anneal_start_dynamics",
                     "anneal_end_dynamics", "temp_id_frac", "anneal_frac_id", "anneal_frac_dynamics"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} must be positive")
        if not 0 < self.midfrac1 < self.midfrac2 < 1:
            raise ValueError(f"midfrac1={self.midfrac1} and midfrac2={self.midfrac2} must satisfy "
                             f"0 < midfrac1 < midfrac2 < 1")
        if not 0 <= self.lr_decay_frac <= 1 or self.lr_end < 0:
            raise ValueError(f"lr_decay_frac={self.lr_decay_frac} must be in [0, 1] and lr_end={self.lr_end} "
                             f"at least 0")
        # start_t, mid_t1, mid_t2, end_t may be anything: the z KL scale is clipped to Z_KL_CLIP
        return self

    def lr_factor(self, progress):
        """Factor on the stage's learning rate: 1, then a half cosine to ``lr_end`` over the last
        ``lr_decay_frac`` of training (late small steps settle fine detail such as colours)."""
        if self.lr_decay_frac <= 0:
            return 1.0
        p = (progress - (1.0 - self.lr_decay_frac)) / self.lr_decay_frac
        return cosine_ramp(1.0, self.lr_end, 1.0, p)

    def factors(self, progress):
        z_points = [(0.0, self.start_t), (self.midfrac1, self.mid_t1), (self.midfrac2, self.mid_t2), (1.0, self.end_t)]
        return {
            "temp_id": cosine_ramp(self.temp_id_start, self.temp_id_end, self.temp_id_frac, progress),
            "identity": cosine_ramp(self.anneal_start_id, self.anneal_end_id, self.anneal_frac_id, progress),
            "dynamics": cosine_ramp(self.anneal_start_dynamics, self.anneal_end_dynamics,
                                    self.anneal_frac_dynamics, progress),
            "z": spline4(z_points, progress),
        }


class ConstantFactors:
    """The schedule of a model trained without annealing (SVG, SRVP, DSA): each KL factor of
    ``groups`` is constant, 1 unless ``weights`` gives it another (a beta on that latent; a model's own
    weights of other terms, such as SVG's beta, are in the model). The learning rate is constant, then
    (SRVP) decays linearly to 0 over the last ``lr_decay_frac`` of training."""

    def __init__(self, lr_decay_frac=0.0, groups=("z",), weights=None):
        self.lr_decay_frac, self.groups = lr_decay_frac, tuple(groups)
        self.weights = dict(weights or {})

    def factors(self, progress):
        return {group: self.weights.get(group, 1.0) for group in self.groups}

    def lr_factor(self, progress):
        if self.lr_decay_frac <= 0:
            return 1.0
        return min(1.0, max(0.0, (1.0 - progress) / self.lr_decay_frac))
