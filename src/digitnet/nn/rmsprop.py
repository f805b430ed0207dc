"""RMSprop (Tieleman & Hinton, 2012): divide each step by a running root mean square of the gradient."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from digitnet.nn.optim import LR, WEIGHT_DECAY, Optimizer
from digitnet.nn.registry import Setting, register


@register("optimizer", "rmsprop",
          formula="v = alpha * v + (1 - alpha) * g**2;  param -= lr * g / (sqrt(v) + eps)",
          settings=(replace(LR, default=0.01),
                    Setting("alpha", "float", 0.99, low=0.0, high=1.0, open_high=True,
                            help="decay of the running mean of g**2"),
                    Setting("eps", "float", 1e-8, low=0.0, open_low=True, help="keeps the division finite"),
                    WEIGHT_DECAY))
class RMSprop(Optimizer):
    """RMSprop: each parameter's step is scaled by the inverse of its recent gradient size.

    With ``g = grad (+ weight_decay * param`` for 2+-dim params) and ``v`` starting at 0::

        v = alpha * v + (1 - alpha) * g**2          running mean of the squared gradient
        param -= lr * g / (sqrt(v) + eps)

    Parameters whose gradients are large take smaller steps and those with small gradients larger
    ones, so one learning rate suits them all. Like Adam without the first moment and without bias
    correction; matches ``torch.optim.RMSprop`` (no momentum, not centred).
    """

    def __init__(self, lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay)

    def update(self, param, grad, state):
        g = grad + self.weight_decay * param if self.decays(param) else grad
        state["v"] = self.alpha * state.get("v", 0) + (1 - self.alpha) * g * g
        param -= self.lr * g / (np.sqrt(state["v"]) + self.eps)
