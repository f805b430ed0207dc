"""The engine: tuned twins of the textbook layers in :mod:`digitnet.nn` (placeholder).

``resolve`` picks which of the two trains; ``speed_up`` hands back the objects to train with.
Callers use what ``speed_up`` returns from then on: the real engine may return new objects that
share the parameter arrays of the ones passed in.
"""

from __future__ import annotations

import os

from digitnet.errors import ConfigError

KERNELS = ("fast", "reference")
ENV_VAR = "DIGITNET_KERNELS"


def resolve(kernels: str | None = None) -> str:
    """``"fast"`` or ``"reference"``; None means ``$DIGITNET_KERNELS`` if set, else ``"fast"``."""
    where = ""
    if kernels is None:
        kernels = os.environ.get(ENV_VAR) or "fast"   # an empty variable counts as unset
        where = f" (from ${ENV_VAR})" if os.environ.get(ENV_VAR) else ""
    if kernels not in KERNELS:
        raise ConfigError(f"unknown kernels {kernels!r}{where}: choose fast or reference")
    return kernels


def speed_up(model, loss_fn, optimizer):
    """``(model, loss_fn, optimizer)`` to train with; this placeholder returns them unchanged."""
    return model, loss_fn, optimizer


__all__ = ["ENV_VAR", "KERNELS", "resolve", "speed_up"]
