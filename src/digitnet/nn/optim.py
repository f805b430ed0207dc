"""Optimizers: update parameters in place from their gradients.

An optimizer sees only ``[(param, grad), ...]`` pairs (``model.parameters()``). ``step`` changes
each ``param`` array in place, using per-parameter state (velocity, moments) it keeps in the
same order. ``lr`` is a plain attribute, so a schedule can set it before each step.

Weight decay applies to weight matrices and kernels (arrays with 2+ dims), not to biases or
BatchNorm scales — the usual practice, since decaying a bias does not regularise anything.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from digitnet.errors import ConfigError

Pairs = list[tuple[np.ndarray, np.ndarray]]


def clip_grad_norm(grads: list[np.ndarray], max_norm: float) -> float:
    """Scale all gradients in place so that their global L2 norm is at most ``max_norm``.

    ``norm = sqrt(sum_i ||g_i||^2)``; if ``norm > max_norm`` every ``g_i *= max_norm / norm``.
    Returns the norm before clipping.
    """
    total = float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads)))
    if max_norm > 0 and total > max_norm:
        scale = max_norm / (total + 1e-12)
        for g in grads:
            g *= g.dtype.type(scale)
    return total


class Optimizer:
    """Base class. Subclasses implement :meth:`_update` for one parameter."""

    name = "optimizer"

    def __init__(self, lr: float, weight_decay: float = 0.0) -> None:
        if not (lr > 0 and np.isfinite(lr)):
            raise ConfigError(f"learning rate must be a positive number, got {lr}")
        if weight_decay < 0:
            raise ConfigError(f"weight decay must be >= 0, got {weight_decay}")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.steps = 0
        self.state: list[dict[str, np.ndarray]] = []

    def step(self, pairs: Pairs) -> None:
        """Apply one update to every ``(param, grad)`` pair in place."""
        if not self.state:
            self.state = [{} for _ in pairs]
        self.steps += 1
        for index, (param, grad) in enumerate(pairs):
            self._update(param, grad, self.state[index])

    def _update(self, param: np.ndarray, grad: np.ndarray, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def _decays(self, param: np.ndarray) -> bool:
        return self.weight_decay > 0 and param.ndim >= 2

    @staticmethod
    def _slot(state: dict[str, np.ndarray], name: str, like: np.ndarray) -> np.ndarray:
        if name not in state:
            state[name] = np.zeros_like(like)
        return state[name]

    # -- checkpointing --------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"name": self.name, "lr": self.lr, "weight_decay": self.weight_decay}

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Per-parameter state as ``{"{index}.{slot}": array}`` (for a checkpoint file)."""
        return {f"{i}.{k}": v for i, slots in enumerate(self.state) for k, v in slots.items()}

    def load_state_arrays(self, arrays: dict[str, np.ndarray], steps: int, num_params: int) -> None:
        """Restore what :meth:`state_arrays` returned, and the step count."""
        self.state = [{} for _ in range(num_params)]
        for key, value in arrays.items():
            index, slot = key.split(".", 1)
            self.state[int(index)][slot] = np.array(value)
        self.steps = int(steps)


class SGD(Optimizer):
    """Stochastic gradient descent, with optional momentum (heavy-ball or Nesterov) and L2.

    With ``g = grad + weight_decay * param`` (L2 penalty ``wd/2 * ||param||^2``)::

        plain:     param -= lr * g
        momentum:  v = momentum * v + g;  param -= lr * v
        nesterov:  v = momentum * v + g;  param -= lr * (g + momentum * v)

    (PyTorch's formulation: the velocity accumulates gradients, lr multiplies the step.)
    """

    name = "sgd"

    def __init__(self, lr: float = 0.1, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0:
            raise ConfigError("Nesterov momentum needs momentum > 0")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def _update(self, param, grad, state):
        lr = param.dtype.type(self.lr)
        if self._decays(param):
            grad = grad + param.dtype.type(self.weight_decay) * param
        if self.momentum == 0:
            param -= lr * grad
            return
        velocity = self._slot(state, "velocity", param)
        velocity *= param.dtype.type(self.momentum)
        velocity += grad
        if self.nesterov:
            param -= lr * (grad + param.dtype.type(self.momentum) * velocity)
        else:
            param -= lr * velocity

    def config(self):
        return {**super().config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015), with coupled L2 when ``weight_decay`` > 0.

    At step ``t`` (from 1), with ``g = grad (+ weight_decay * param)``::

        m = beta1 * m + (1 - beta1) * g              first moment
        v = beta2 * v + (1 - beta2) * g**2           second moment
        m_hat = m / (1 - beta1**t),  v_hat = v / (1 - beta2**t)     bias correction
        param -= lr * m_hat / (sqrt(v_hat) + eps)

    Bias correction undoes the pull towards zero of moments that start at zero.
    """

    name = "adam"
    decoupled = False

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ConfigError(f"Adam betas must be in [0, 1), got {beta1}, {beta2}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def _update(self, param, grad, state):
        dtype = param.dtype.type
        if self.decoupled:
            if self._decays(param):
                param *= dtype(1 - self.lr * self.weight_decay)
        elif self._decays(param):
            grad = grad + dtype(self.weight_decay) * param
        m = self._slot(state, "m", param)
        v = self._slot(state, "v", param)
        scratch = self._slot(state, "scratch", param)  # reused temporary, not saved in checkpoints
        t = self.steps
        m *= dtype(self.beta1)
        m += dtype(1 - self.beta1) * grad
        v *= dtype(self.beta2)
        np.multiply(grad, grad, out=scratch)
        scratch *= dtype(1 - self.beta2)
        v += scratch
        # step = lr * m_hat / (sqrt(v_hat) + eps), with both corrections folded into scalars
        correction1 = 1 - self.beta1 ** t
        correction2 = 1 - self.beta2 ** t
        np.sqrt(v, out=scratch)
        scratch *= dtype(1 / np.sqrt(correction2))
        scratch += dtype(self.eps)
        np.divide(m, scratch, out=scratch)
        scratch *= dtype(self.lr / correction1)
        param -= scratch

    def state_arrays(self):
        return {k: v for k, v in super().state_arrays().items() if not k.endswith(".scratch")}

    def config(self):
        return {**super().config(), "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019).

    Before the Adam step: ``param *= 1 - lr * weight_decay`` — the decay does not pass through
    the adaptive scaling, so it acts as true weight decay instead of an L2 gradient term.
    """

    name = "adamw"
    decoupled = True

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.01) -> None:
        super().__init__(lr, beta1, beta2, eps, weight_decay)


OPTIMIZERS = {"sgd": SGD, "momentum": SGD, "nesterov": SGD, "adam": Adam, "adamw": AdamW}


def make_optimizer(name: str, lr: float, *, momentum: float | None = None, weight_decay: float = 0.0,
                   **kwargs: Any) -> Optimizer:
    """Build an optimizer by name: "sgd", "momentum" (SGD, momentum 0.9), "nesterov", "adam", "adamw"."""
    key = name.lower()
    if key not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r} (choose from {', '.join(OPTIMIZERS)})")
    if key in ("sgd", "momentum", "nesterov"):
        mom = momentum if momentum is not None else (0.0 if key == "sgd" else 0.9)
        return SGD(lr, momentum=mom, nesterov=key == "nesterov" or kwargs.get("nesterov", False),
                   weight_decay=weight_decay)
    cls = OPTIMIZERS[key]
    extra = {k: v for k, v in kwargs.items() if k in ("beta1", "beta2", "eps")}
    if key == "adamw" and not weight_decay:
        return cls(lr, **extra)
    return cls(lr, weight_decay=weight_decay, **extra)
