"""Gradient clipping by global norm: cap the length of a whole update, keep its direction."""

from __future__ import annotations

import math

import numpy as np


def clip_grad_norm(grads: list[np.ndarray], max_norm: float) -> float:
    """Scale all gradients in place so that their global L2 norm is at most ``max_norm``.

    ``norm = sqrt(sum_i ||g_i||^2)`` over every gradient array together; if ``norm > max_norm``
    every ``g_i *= max_norm / norm``, which keeps the direction of the whole update and caps its
    length. ``max_norm <= 0`` disables clipping. Returns the norm before clipping (NaN or inf if a
    gradient is, so the caller can detect divergence; such gradients are left untouched).
    """
    total = math.sqrt(sum(float(np.vdot(g, g)) for g in grads))
    if max_norm > 0 and total > max_norm:
        scale = max_norm / (total + 1e-12)
        for g in grads:
            g *= g.dtype.type(scale)
    return total
