"""Typed method parameters: each method declares its parameters once, as a table of `Param` on its class
(`Method.params`), with their type, default and allowed values.

The declaration is what every path checks: `RunConfig.resolve` (so `vtbench run`, grids and tune, before a run id
exists or anything is written), `build_method` (which hands the constructor the checked values) and `vtbench
methods` (which prints it). `register` refuses a declaration whose names or defaults differ from the constructor's
signature, so the two cannot drift apart. A rule across parameters (one's allowed values depend on another's) is
the method's `check_together`.
"""

import inspect
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

KINDS = (bool, int, float, str, list)
NOTHING = object()  # `Param.previously` unset


@dataclass(frozen=True)
class Param:
    kind: type  # bool | int | float | str | list
    default: Any = None
    low: float | None = None  # bounds of a number
    high: float | None = None
    low_open: bool = False  # the bound itself is outside
    high_open: bool = False
    choices: tuple[str, ...] = ()  # the only values allowed, for text
    unset: str | None = None  # None is allowed and means this, in words (None here: it is not allowed)
    rule: str = ""  # what is allowed, in words, where kind, bounds and choices do not say it all
    check: Callable[[Any], bool] | None = None  # a further test of a value of the right kind
    note: str = ""  # after a range: its unit, say "(grey levels)"
    removed: str = ""  # a parameter that is gone: why, and what replaces it (only None, its default, is taken)
    help: str = ""  # what the parameter does, one line
    # what runs did before this parameter, or its present default, existed: a run id then holds the value in effect
    # (given or default) unless it is this one, so that a new default makes new runs and finished runs stay found
    previously: Any = NOTHING

    def __post_init__(self):
        if self.kind not in KINDS:
            raise TypeError(f"a parameter's kind is one of {', '.join(k.__name__ for k in KINDS)}, got {self.kind}")

    @property
    def type_name(self) -> str:
        if self.removed:
            return "removed"
        return self.kind.__name__ + (" | unset" if self.unset is not None else "")

    def interval(self) -> str:
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        opening = "(" if self.low_open or self.low is None else "["
        closing = ")" if self.high_open or self.high is None else "]"
        return f"{opening}{low}, {high}{closing}"

    def allowed(self) -> str:
        """What the parameter takes, in words (the messages and `vtbench methods` say it so)."""
        if self.removed:
            return "unset only (removed)"
        if self.rule:
            text = self.rule
        elif self.choices:
            text = ", ".join(self.choices)
        elif self.kind is bool:
            text = "true or false"
        elif self.kind is float:
            text = self.interval() + (f" {self.note}" if self.note else "")
        elif self.kind is int:
            text = "a whole number" + (f" >= {self.low:g}" if self.low is not None else "")
        else:
            text = f"any {self.kind.__name__}"
        return text + (f" (or unset: {self.unset})" if self.unset is not None else "")

    def validate(self, key: str, value: Any) -> Any:
        """`value` as the method takes it (a whole number given for a float becomes a float), or ValueError: one
        line naming the parameter, the value and what is allowed."""
        if value is None and (self.unset is not None or self.removed):
            return None
        if self.removed:
            raise ValueError(f"{key}={value!r}: {self.removed}")
        if self.kind is float:
            number = _number(value)
            if number is None:
                raise ValueError(f"{key}={value!r} is not a number; the allowed range is {self.allowed()}")
            if not self._within(number):
                raise ValueError(f"{key}={value!r} is outside the allowed range {self.allowed()}")
            value = number
        elif self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int) or not self._within(value):
                raise ValueError(f"{key}={value!r} must be {self.allowed()}")
        elif self.choices:
            if not isinstance(value, str) or value not in self.choices:
                raise ValueError(f"{key}={value!r} is not allowed; choose one of {self.allowed()}")
        elif not isinstance(value, self.kind):
            raise ValueError(f"{key}={value!r} must be {self.allowed()}")
        if self.check is not None and not self.check(value):
            raise ValueError(f"{key}={value!r} must be {self.allowed()}")
        return value

    def _within(self, number: float) -> bool:
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            return False
        return self.high is None or not (number > self.high or (self.high_open and number == self.high))


def _number(value: Any) -> float | None:
    """A finite int or float as a float; None for anything else (a bool, text, nan, infinity, a list)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def show(value: Any) -> str:
    """A default as a user writes it: unset, true, 0.5, random, [1, 0.5]."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The constructor's parameters of a method class, by name."""
    params = inspect.signature(cls.__init__).parameters
    return {k: p for k, p in params.items() if k != "self" and p.kind is p.POSITIONAL_OR_KEYWORD}



# ---- `vtbench methods`: the declarations, printed ---------------------------------------------------------------


def declared(cls) -> dict[str, Param]:
    """A method's parameters: its declaration, or (a method a test defines without one) its constructor's
    signature, unchecked."""
    if cls.params is not None:
        return dict(cls.params)
    out = {}
    for key, p in parameters(cls).items():
        kind = p.annotation if p.annotation in KINDS else str
        default = None if p.default is p.empty else p.default
        out[key] = Param(kind, default, rule="not declared: its constructor checks it")
    return out


def source(cls) -> str:
    """The method's paper (its card's), or its docstring's first sentence for a method without one (a control)."""
    if cls.claim is not None:
        return cls.claim.paper
    first = " ".join(doc_paragraph(cls).split())
    return first.split(". ")[0].rstrip(".") if first else ""


def doc_paragraph(cls) -> str:
    """The first paragraph of the method's docstring (its module's, where the class has none)."""
    doc = cls.__doc__ or getattr(sys.modules.get(cls.__module__), "__doc__", None) or ""
    return doc.strip().split("\n\n")[0].strip()


def _rows(cls) -> list[tuple[str, str, str, str]]:
    return [(key, p.type_name, show(p.default), p.allowed()) for key, p in declared(cls).items()]


def _aligned(rows: list[tuple[str, ...]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return [(indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1]).rstrip()
            for r in rows]


def catalogue(registry: dict[str, type]) -> str:
    """Every method with its paper and parameters (type, default, allowed values), aligned across methods."""
    header = ("parameter", "type", "default", "allowed")
    rows = [header] + [row for cls in registry.values() for row in _rows(cls)]
    lines = _aligned(rows)
    body, index = [f"{len(registry)} methods, each with its paper and parameters (vtbench methods NAME: what each "
                   "parameter does)", "", "method: paper", lines[0]], 1
    for name, cls in registry.items():
        body += ["", f"{name}: {source(cls)}"]
        count = len(declared(cls))
        body += lines[index:index + count] if count else ["  (no parameters)"]
        index += count
    return "\n".join(body)


def card(name: str, cls) -> str:
    """One method: its paper, its docstring's first paragraph, every parameter with what it does."""
    lines = [f"{name}: {source(cls)}"] + (["", doc_paragraph(cls)] if doc_paragraph(cls) else [])
    if cls.claim is not None:
        lines += ["", f"claim: {cls.claim.claim} (the paper reports {cls.claim.reported}; at {cls.claim.scale})"]
    together = cls.check_together.__func__.__doc__ if "check_together" in vars(cls) else None
    if together:
        lines += ["", f"rule: {' '.join(together.split())}"]
    params = declared(cls)
    if not params:
        return "\n".join([*lines, "", "parameters: none"])
    lines += ["", f"parameters (--method {name}:KEY=VALUE,...):"]
    rows = [("parameter", "type", "default", "allowed")] + _rows(cls)
    for line, (key, _, _, _) in zip(_aligned(rows), rows, strict=True):
        lines.append(line)
        meaning = params[key].help or (f"removed: {params[key].removed}" if params[key].removed else "") \
            if key in params else ""
        if meaning:
            lines.append(f"      {meaning}")
    return "\n".join(lines)
