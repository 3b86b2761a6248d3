"""SRVP's Moving MNIST trajectories (Franceschi et al. 2020, the release's ``data/mmnist.py``), and
the digits of its stored test set (its ``preprocessing/mmnist/make_test_set.py``).

The rules: 28 x 28 digits in a 64 x 64 frame, top-left corners with integer start in [0, 36] per
axis and integer speeds in [-4, 4] per axis; positions move exactly (floats) and are rounded (Python's
``round``) per frame; at a border the digit is reflected at the exact crossing point, and in the
stochastic version a new random speed is drawn at each bounce (then pointed away from the border).

Everything is drawn from one ``numpy.random.RandomState`` in the release's order, so that the
stored test set is the release's sequence for sequence: the test digits' order is one permutation of
the 10,000 MNIST test images (seed 42), sequence i uses digits 2i and 2i + 1 of it, and each digit's
trajectory draws its start (row, column), its speed (row, column), then two integers per bounce.
The arithmetic below is done in Python floats in the release's order, so that the rounding of
positions is the same bit for bit (checked against the release's script, ``tests/test_data_others``).
"""
import numpy as np

__all__ = ["FRAME_SIZE", "DIGIT_SIZE", "MAX_SPEED", "trajectory", "release_set_plan"]

#: Frame and digit sizes in pixels, and the largest speed in pixels per frame (the SRVP release's).
FRAME_SIZE, DIGIT_SIZE, MAX_SPEED = 64, 28, 4
EPS = 1e-8  # the release's tolerance at the borders


def trajectory(rng, seq_len, deterministic, frame_size=FRAME_SIZE, digit_size=DIGIT_SIZE, max_speed=MAX_SPEED):
    """Top-left corners int [seq_len, 2] (row, column) of one digit: start and speed drawn from ``rng``
    (a ``numpy.random.RandomState``), then ``seq_len`` frames of motion with reflections."""
    hi = frame_size - digit_size
    r, c = rng.randint(0, hi + 1), rng.randint(0, hi + 1)
    dr, dc = rng.randint(-max_speed, max_speed + 1), rng.randint(-max_speed, max_speed + 1)
    corners = np.empty((seq_len, 2), np.int64)
    for t in range(seq_len):
        r, c, dr, dc = _reflect(rng, r, c, dr, dc, hi, deterministic, max_speed)
        corners[t] = int(round(r)), int(round(c))
        c += dc
        r += dr
    return corners


def _reflect(rng, r, c, dr, dc, hi, deterministic, max_speed):
    """(r, c, dr, dc) after the bounces of a point that moved to (r, c) with speed (dr, dc): each
    bounce goes back to the crossing of the border and spends the rest of the step reflected."""
    top, left, bottom, right = r < -EPS, c < -EPS, r > hi + EPS, c > hi + EPS
    cross = None  # the crossing point; kept from the previous bounce if none is found (the release's)
    while top or left or bottom or right:
        if dr == 0:        # moving along a row: it crossed a left or right border
            cross = (r, 0) if left else (r, hi)
        elif dc == 0:      # moving along a column
            cross = (0, c) if top else (hi, c)
        else:
            slope = dc / dr
            offset = c - slope * r
            if top:        # where the line meets row 0, if inside the frame's columns
                top, found = _on_border(slope * 0 + offset, hi), (0, slope * 0 + offset)
                cross = found if top else cross
            if bottom:
                at = slope * hi + offset
                bottom, cross = _on_border(at, hi), ((hi, at) if _on_border(at, hi) else cross)
            if left:       # where the line meets column 0, if inside the frame's rows
                at = (0 - offset) / slope
                left, cross = _on_border(at, hi), ((at, 0) if _on_border(at, hi) else cross)
            if right:
                at = (hi - offset) / slope
                right, cross = _on_border(at, hi), ((at, hi) if _on_border(at, hi) else cross)
        left_over = (r - cross[0]) / dr if dr != 0 else (c - cross[1]) / dc  # the part of the step after the crossing
        if not deterministic:
            dr, dc = rng.randint(-max_speed, max_speed + 1), rng.randint(-max_speed, max_speed + 1)
        if top:
            dr = abs(dr)
        if bottom:
            dr = -abs(dr)
        if left:
            dc = abs(dc)
        if right:
            dc = -abs(dc)
        r, c = cross[0] + dr * left_over, cross[1] + dc * left_over
        top, left, bottom, right = r < -EPS, c < -EPS, r > hi + EPS, c > hi + EPS
    return r, c, dr, dc


def _on_border(at, hi):
    return -EPS <= at <= hi + EPS


def release_set_plan(num_test_digits, seq_len, deterministic, seed=42, num_digits=2):
    """The release's stored test set as ingredients: digit indices int [N, num_digits] into the MNIST
    test images (N = num_test_digits // num_digits) and top-left corners int16 [N, seq_len, num_digits, 2]."""
    rng = np.random.RandomState(seed)
    order = rng.permutation(num_test_digits)
    n = num_test_digits // num_digits
    index = order[:n * num_digits].reshape(n, num_digits)
    corners = np.empty((n, seq_len, num_digits, 2), np.int16)
    for i in range(n):
        for d in range(num_digits):
            corners[i, :, d] = trajectory(rng, seq_len, deterministic)
    return index, corners
