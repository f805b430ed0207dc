"""The registry: every named thing in digitnet, once.

Each layer, activation, loss, optimizer, schedule and initialiser registers itself where it is
defined, with its name, its settings (type, default, allowed range) and its formula::

    @register("activation", "relu", formula="y = max(x, 0)", gradient="dL/dx = dL/dy * (x > 0)")
    class ReLU(Layer): ...

Everything else reads this table: the command line's choices, the web page's options,
``digitnet explain``, the architecture picture and the validation of settings. A new activation
or optimizer is one new file in ``digitnet/nn/``: the registry imports every module of the
package the first time it is asked, so the file's ``@register`` is all it takes.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from dataclasses import dataclass, field
from typing import Any

from digitnet.errors import ConfigError

KINDS = ("layer", "activation", "loss", "optimizer", "schedule", "initializer")


@dataclass(frozen=True)
class Setting:
    """One setting of a registered thing: its type, default and allowed values.

    ``kind`` is "float", "int", "bool", "str" or "pair" (an int or two ints, as a kernel size).
    ``low``/``high`` bound numbers (``open_low``/``open_high`` exclude the bound itself);
    ``choices`` lists allowed strings, and ``choices_of`` names a registry kind whose names are
    the allowed strings (so a new initialiser is at once a valid ``init``). ``optional`` allows None.
    """

    name: str
    kind: str = "float"
    default: Any = None
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple[str, ...] = ()
    choices_of: str | None = None
    optional: bool = False
    help: str = ""

    def allowed(self) -> tuple[str, ...]:
        """The allowed strings: ``choices``, or the names of ``choices_of`` ("activation" or, with a
        tag, "activation:hidden")."""
        if not self.choices_of:
            return self.choices
        kind, _, tag = self.choices_of.partition(":")
        return tuple(names(kind, tag or None))

    def range_text(self) -> str:
        """``[0, 1)``, ``> 0``, ``one of relu, tanh``: the allowed values in words."""
        if self.allowed():
            return "one of " + ", ".join(self.allowed())
        if self.low is not None and self.high is not None:
            return f"{'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"
        if self.low is not None:
            return f"{'>' if self.open_low else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.open_high else '<='} {self.high:g}"
        return self.kind

    def check(self, value: Any, owner: str) -> Any:
        """``value`` converted to the setting's type; ConfigError if it is not allowed."""
        if value is None and self.optional:
            return None
        what = f"{owner} {self.name}".strip()
        if self.kind == "pair":
            return _check_pair(value, what, int(self.low or 0))
        if self.kind == "str" or self.allowed():
            text = str(value).strip().lower().replace("-", "_") if self.choices_of else str(value)
            if self.allowed() and text not in self.allowed():
                raise ConfigError(f"{what} must be {self.range_text()}, got {value!r}")
            return text
        if self.kind == "bool":
            if not isinstance(value, bool | int) or value not in (0, 1):
                raise ConfigError(f"{what} must be true or false, got {value!r}")
            return bool(value)
        number = _number(value, what, integer=self.kind == "int")
        too_low = self.low is not None and (number <= self.low if self.open_low else number < self.low)
        too_high = self.high is not None and (number >= self.high if self.open_high else number > self.high)
        if too_low or too_high:
            raise ConfigError(f"{what} must be {self.range_text()}, got {value!r}")
        return number

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "default": self.default, "low": self.low,
                "high": self.high, "range": self.range_text(), "choices": list(self.allowed()),
                "optional": self.optional, "help": self.help}


def _number(value: Any, what: str, integer: bool) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float | str) and not hasattr(value, "__float__"):
        raise ConfigError(f"{what} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")
    if integer:
        if number != int(number):
            raise ConfigError(f"{what} must be a whole number, got {value!r}")
        return int(number)
    return number


def _check_pair(value: Any, what: str, minimum: int) -> tuple[int, int]:
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) or type(v).__name__.startswith(("int", "uint"))

    if is_int(value):
        pair = (int(value), int(value))
    elif isinstance(value, list | tuple) and len(value) == 2 and all(is_int(v) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ConfigError(f"{what} must be an integer or a pair of integers, got {value!r}")
    if min(pair) < minimum:
        raise ConfigError(f"{what} must be >= {minimum}, got {value!r}")
    return pair


@dataclass(frozen=True)
class Entry:
    """A registered thing: what it is, how to build it, its settings and its formula.

    ``formula`` is the forward rule (or the update, the schedule, the distribution) and
    ``gradient`` the backward rule, in the names the code uses. ``fixed`` are settings a name
    implies (the optimizer "nesterov" is SGD with ``nesterov=True``); ``tags`` say where a thing
    may be used (an activation "hidden" or "output"); ``extra`` holds kind-specific facts (the
    initialiser an activation wants).
    """

    kind: str
    name: str
    target: Any
    formula: str
    gradient: str = ""
    summary: str = ""
    settings: tuple[Setting, ...] = ()
    fixed: dict[str, Any] = field(default_factory=dict)
    tags: frozenset[str] = frozenset()
    extra: dict[str, Any] = field(default_factory=dict)

    def setting(self, name: str) -> Setting | None:
        return next((s for s in self.settings if s.name == name), None)

    def check(self, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` checked against the settings (unknown names are an error), defaults filled in."""
        unknown = sorted(set(values) - {s.name for s in self.settings})
        if unknown:
            known = ", ".join(s.name for s in self.settings) or "none"
            raise ConfigError(f"{self.name} has no setting {', '.join(unknown)} (its settings: {known})")
        merged = {s.name: values.get(s.name, s.default) for s in self.settings}
        return {s.name: s.check(merged[s.name], self.name) for s in self.settings}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "formula": self.formula, "gradient": self.gradient,
                "summary": self.summary, "settings": [s.to_dict() for s in self.settings],
                "fixed": dict(self.fixed), "tags": sorted(self.tags)}


_ENTRIES: dict[tuple[str, str], Entry] = {}
#: layer classes by their class name, as model files store them (``{"type": "Dense", ...}``)
LAYER_TYPES: dict[str, type] = {}
_LOADED = False


def register(kind: str, name: str, *, formula: str, gradient: str = "", summary: str = "",
             settings: tuple[Setting, ...] = (), fixed: dict[str, Any] | None = None,
             tags: tuple[str, ...] = (), target: Any = None, **extra: Any):
    """Register ``target`` (or the decorated class or function) as ``name`` of ``kind``.

    Layers and activations are also made rebuildable from a model file by their class name.
    The class gets ``registry_entry``: its own entry, which subclasses (the kernels) inherit.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown registry kind {kind!r}")

    def add(obj: Any) -> Any:
        entry = Entry(kind, name, obj, formula, gradient, summary or _first_line(obj), tuple(settings),
                      dict(fixed or {}), frozenset(tags), extra)
        _ENTRIES[(kind, canonical(name))] = entry
        if isinstance(obj, type) and "registry_entry" not in obj.__dict__:
            obj.registry_entry = entry
        if kind in ("layer", "activation"):
            register_layer(obj)
        return obj

    return add(target) if target is not None else add


def register_layer(cls: type) -> type:
    """Make ``cls`` rebuildable from ``{"type": cls.__name__, ...}`` (also for custom layers)."""
    cls.layer_type = cls.__name__
    LAYER_TYPES[cls.__name__] = cls
    return cls


def _first_line(obj: Any) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


def load_all() -> None:
    """Import every module of ``digitnet.nn`` once, so that every ``@register`` has run."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    package = importlib.import_module("digitnet.nn")
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"digitnet.nn.{module.name}")


def canonical(name: Any) -> str:
    """``"Leaky-ReLU"`` -> ``"leaky_relu"``: how names are compared."""
    return str(name).strip().lower().replace("-", "_")


def entry(kind: str, name: Any) -> Entry:
    """The entry ``name`` of ``kind`` (case, dashes and a missing underscore forgiven).

    Raises:
        ConfigError: no such name; the message lists the ones there are.
    """
    load_all()
    key = canonical(name)
    found = _ENTRIES.get((kind, key))
    if found is None:  # "leakyrelu" for "leaky_relu", "crossentropy" for "cross_entropy"
        found = next((e for (k, n), e in _ENTRIES.items() if k == kind and n.replace("_", "") == key), None)
    if found is None:
        raise ConfigError(f"unknown {kind} {name!r} (choose from {', '.join(names(kind))})")
    return found


def entries(kind: str, tag: str | None = None) -> list[Entry]:
    """Every entry of ``kind`` (with ``tag``, if given), in registration order."""
    load_all()
    return [e for (k, _), e in _ENTRIES.items() if k == kind and (tag is None or tag in e.tags)]


def names(kind: str, tag: str | None = None) -> list[str]:
    return [e.name for e in entries(kind, tag)]


def entry_of(obj: Any) -> Entry | None:
    """The entry of an object or class: its own or, for a kernel, its reference class's."""
    return getattr(obj, "registry_entry", None)


def catalogue() -> dict[str, list[dict[str, Any]]]:
    """The whole registry as JSON-ready lists, one per kind (what the web page's options read)."""
    load_all()
    return {kind: [e.to_dict() for e in entries(kind)] for kind in KINDS}
