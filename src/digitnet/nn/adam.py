"""Adam and AdamW: steps scaled per parameter by running averages of the gradient and its square."""

from __future__ import annotations

import numpy as np

from digitnet.nn.optim import WEIGHT_DECAY, Optimizer
from digitnet.nn.registry import Setting, register

_ADAM_SETTINGS = (
    Setting("lr", "float", 1e-3, low=0.0, open_low=True, help="learning rate: the step size"),
    Setting("beta1", "float", 0.9, low=0.0, high=1.0, open_high=True, help="decay of the mean of g"),
    Setting("beta2", "float", 0.999, low=0.0, high=1.0, open_high=True, help="decay of the mean of g**2"),
    Setting("eps", "float", 1e-8, low=0.0, open_low=True, help="keeps the division finite"),
)


@register("optimizer", "adam", settings=(*_ADAM_SETTINGS, WEIGHT_DECAY),
          formula="m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g**2;  "
                  "param -= lr * (m / (1-b1**t)) / (sqrt(v / (1-b2**t)) + eps)")
class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015), with coupled L2 when ``weight_decay`` > 0.

    At step ``t`` (from 1), with ``g = grad (+ weight_decay * param)`` and ``m``, ``v`` starting
    at 0::

        m = beta1 * m + (1 - beta1) * g              first moment (mean of g)
        v = beta2 * v + (1 - beta2) * g**2           second moment (mean of g squared)
        m_hat = m / (1 - beta1**t),  v_hat = v / (1 - beta2**t)     bias correction
        param -= lr * m_hat / (sqrt(v_hat) + eps)

    Bias correction undoes the pull towards zero of moments that start at zero: at ``t = 1``,
    ``m_hat = g`` and ``v_hat = g**2``, so the first step is ``lr * g / (|g| + eps)`` ~ ``lr * sign(g)``.
    Coupled L2 passes the decay through the adaptive scaling, which weakens it for parameters
    with large gradients; :class:`AdamW` is usually the better choice.
    """

    decoupled = False

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)

    def update(self, param, grad, state):
        g = grad
        if self.decays(param):
            if self.decoupled:
                param *= 1 - self.lr * self.weight_decay
            else:
                g = grad + self.weight_decay * param
        t = self.steps
        state["m"] = self.beta1 * state.get("m", 0) + (1 - self.beta1) * g
        state["v"] = self.beta2 * state.get("v", 0) + (1 - self.beta2) * g * g
        m_hat = state["m"] / (1 - self.beta1**t)
        v_hat = state["v"] / (1 - self.beta2**t)
        param -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


@register("optimizer", "adamw", settings=(*_ADAM_SETTINGS, Setting("weight_decay", "float", 0.01, low=0.0,
                                                                   help="decoupled decay of weight matrices")),
          formula="param *= 1 - lr * weight_decay;  then the Adam step with the plain gradient")
class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019).

    Before the Adam step (with the plain gradient): ``param *= 1 - lr * weight_decay`` (2+-dim
    params only). The decay does not pass through the adaptive scaling, so it acts as true weight
    decay instead of an L2 gradient term. Matches ``torch.optim.AdamW``. Default decay 0.01.
    """

    decoupled = True

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.01) -> None:
        super().__init__(lr, beta1, beta2, eps, weight_decay)
