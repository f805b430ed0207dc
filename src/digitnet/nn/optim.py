"""Optimizers: change each parameter a little against its gradient.

An optimizer sees only ``[(param, grad), ...]`` pairs (``model.parameters()``, read after each
backward). ``step`` changes each ``param`` array in place and keeps per-parameter state (velocity,
moments) in ``state``, in the same order. ``lr`` is a plain attribute, so a schedule can set it
before each step.

Weight decay applies only to parameters with 2 or more dimensions (weight matrices, convolution
kernels), never to biases or BatchNorm's scale and shift: decaying those regularises nothing
useful. (A PyTorch user gets the same with two parameter groups.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from digitnet.errors import ConfigError
from digitnet.nn.registry import Setting, entry, register

Pairs = list[tuple[np.ndarray, np.ndarray]]

LR = Setting("lr", "float", 0.1, low=0.0, open_low=True, help="learning rate: the step size")
WEIGHT_DECAY = Setting("weight_decay", "float", 0.0, low=0.0, help="L2 penalty on weight matrices")


class Optimizer:
    """Base class. Subclasses implement :meth:`update` for one parameter.

    Attributes:
        lr: the learning rate of the next :meth:`step` (a schedule may change it).
        steps: how many steps were taken (Adam's ``t``).
        state: one dict of arrays per parameter (velocity, moments), filled on the first step.
    """

    def __init__(self, **settings: Any) -> None:
        for name, value in self.registry_entry.check(settings).items():
            setattr(self, name, value)
        self.steps = 0
        self.state: list[dict[str, np.ndarray]] = []

    @property
    def name(self) -> str:
        return self.registry_entry.name

    def step(self, pairs: Pairs) -> None:
        """Apply one update to every ``(param, grad)`` pair in place."""
        self.begin_step(pairs)
        for (param, grad), state in zip(pairs, self.state, strict=True):
            self.update(param, grad, state)

    def begin_step(self, pairs: Pairs) -> None:
        """Count the step and make sure there is one state dict per parameter."""
        if not self.state:
            self.state = [{} for _ in pairs]
        if len(self.state) != len(pairs):
            raise ConfigError(f"the optimizer holds state for {len(self.state)} parameters but was "
                              f"given {len(pairs)}")
        self.steps += 1

    def update(self, param: np.ndarray, grad: np.ndarray, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def decays(self, param: np.ndarray) -> bool:
        """Whether weight decay applies to ``param``: only matrices and kernels (2+ dims)."""
        return self.weight_decay > 0 and param.ndim >= 2

    # -- checkpointing --------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"name": self.name, **{s.name: getattr(self, s.name) for s in self.registry_entry.settings}}

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Per-parameter state as ``{"{index}.{slot}": array}`` (for a checkpoint file)."""
        return {f"{i}.{k}": v for i, slots in enumerate(self.state) for k, v in slots.items()
                if not k.startswith("scratch")}

    def load_state_arrays(self, arrays: dict[str, np.ndarray], steps: int, num_params: int) -> None:
        """Restore what :meth:`state_arrays` returned, and the step count."""
        self.state = [{} for _ in range(num_params)]
        for key, value in arrays.items():
            index, slot = key.split(".", 1)
            self.state[int(index)][slot] = np.array(value)
        self.steps = int(steps)


def _sgd_settings(momentum: float) -> tuple[Setting, ...]:
    return (LR, Setting("momentum", "float", momentum, low=0.0, high=1.0, open_high=True,
                        help="how much of the last step's velocity is kept"),
            Setting("nesterov", "bool", False, help="Nesterov's look-ahead"), WEIGHT_DECAY)


_SGD_FORMULA = ("g = grad + weight_decay * param;  v = momentum * v + g;  "
                "param -= lr * (g + momentum * v if nesterov else v)")


@register("optimizer", "sgd", formula=_SGD_FORMULA, settings=_sgd_settings(0.0))
class SGD(Optimizer):
    """Stochastic gradient descent, with optional momentum (heavy-ball or Nesterov) and L2.

    With ``g = grad + weight_decay * param`` (the gradient of an extra L2 penalty
    ``weight_decay/2 * ||param||^2``; only for 2+-dim params) and velocity ``v`` starting at 0::

        plain:     param -= lr * g
        momentum:  v = momentum * v + g;  param -= lr * v
        nesterov:  v = momentum * v + g;  param -= lr * (g + momentum * v)

    This is PyTorch's formulation (``torch.optim.SGD`` with dampening 0): the velocity
    accumulates gradients and ``lr`` multiplies the step, so changing ``lr`` takes effect at once.
    """

    def __init__(self, lr: float = 0.1, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
        if self.nesterov and self.momentum == 0:
            raise ConfigError("Nesterov momentum needs momentum > 0")

    def update(self, param, grad, state):
        g = grad + self.weight_decay * param if self.decays(param) else grad
        if self.momentum:
            state["velocity"] = self.momentum * state.get("velocity", 0) + g
            g = g + self.momentum * state["velocity"] if self.nesterov else state["velocity"]
        param -= self.lr * g


register("optimizer", "momentum", target=SGD, formula="v = momentum * v + g;  param -= lr * v",
         settings=_sgd_settings(0.9), summary="SGD with heavy-ball momentum")
register("optimizer", "nesterov", target=SGD, formula="v = momentum * v + g;  param -= lr * (g + momentum * v)",
         settings=_sgd_settings(0.9), fixed={"nesterov": True}, summary="SGD with Nesterov's look-ahead momentum")

def make_optimizer(name: str, lr: float, *, momentum: float | None = None,
                   weight_decay: float | None = None, **settings: Any) -> Optimizer:
    """Build a registered optimizer by name ("sgd", "momentum", "nesterov", "adam", "adamw", ...).

    ``momentum`` and ``weight_decay`` None mean the optimizer's own defaults; they are ignored by
    optimizers that have no such setting (momentum for Adam). Any other setting must be one the
    optimizer has (``beta1`` for Adam).

    Raises:
        ConfigError: unknown name or setting, or an invalid value.
    """
    found = entry("optimizer", name)
    found.check({k: v for k, v in settings.items() if k not in found.fixed})   # unknown names: ConfigError
    given = {"lr": lr, **settings}
    for key, value in (("momentum", momentum), ("weight_decay", weight_decay)):
        if value is not None and found.setting(key) is not None:
            given[key] = value
    given = {k: v for k, v in given.items() if k not in found.fixed}
    defaults = {s.name: s.default for s in found.settings}
    return found.target(**{**defaults, **given, **found.fixed})
