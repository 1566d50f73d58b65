"""Search spaces over method parameters for `vtbench tune`.

In a tune YAML's `methods` list, a parameter's value is searched when it is one of

    {float: [lo, hi]}            optionally with log: true, or step: s
    {int: [lo, hi]}              optionally with log: true, or step: s
    {choice: [a, b, ...]}

and fixed otherwise. Optuna names each searched parameter `<method>.<param>` (`token_dropout.keep`).
"""

import math
from dataclasses import dataclass
from typing import Any

from vtbench.engine.config import MethodSpec, method_spec
from vtbench.errors import ConfigError

FORMS = ("float", "int", "choice")
OPTIONS = ("log", "step")


@dataclass(frozen=True)
class Param:
    name: str  # <method>.<param>
    method: int  # index into the method list
    key: str
    form: str  # float | int | choice
    low: Any = None
    high: Any = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        if self.form == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.form == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.name, list(self.choices))

    def extremes(self) -> list[Any]:
        """The values that must all be valid for the method: both ends of a range, every choice."""
        return list(self.choices) if self.form == "choice" else [self.low, self.high]

    def grid(self) -> list[Any]:
        if self.form == "choice":
            return list(self.choices)
        if self.step is None:
            raise ConfigError(f"the grid sampler needs `step` for the range of {self.name} (or use choice)")
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1  # never past hi
        values = [self.low + i * self.step for i in range(count)]
        return [int(v) for v in values] if self.form == "int" else [round(v, 12) for v in values]


@dataclass
class SearchSpace:
    methods: list[MethodSpec]  # with searched values left as their {form: ...} mappings
    params: list[Param]

    def suggest(self, trial) -> list[MethodSpec]:
        """The trial's method list: each searched parameter drawn through Optuna."""
        return self.fill({p.name: p.suggest(trial) for p in self.params})

    def fill(self, values: dict[str, Any]) -> list[MethodSpec]:
        specs = [MethodSpec(m.name, dict(m.params)) for m in self.methods]
        for p in self.params:
            specs[p.method].params[p.key] = values[p.name]
        return specs

    def grid(self) -> dict[str, list[Any]]:
        return {p.name: p.grid() for p in self.params}


def parse_space(entries: Any, where: str) -> SearchSpace:
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: methods must be a non-empty list of methods, some with searched parameters")
    methods, params = [], []
    for index, entry in enumerate(entries):
        spec = method_spec(entry, f"{where}: methods")
        for key, value in spec.params.items():
            if isinstance(value, dict):
                name = f"{spec.name}.{key}"
                if any(p.name == name for p in params):
                    name = f"{spec.name}{index}.{key}"
                params.append(_param(name, index, key, value, f"{where}: methods: {spec.name}: {key}"))
        methods.append(spec)
    if not params:
        raise ConfigError(f"{where}: nothing to search: give at least one parameter as "
                          "{float: [lo, hi]}, {int: [lo, hi]} or {choice: [...]}")
    return SearchSpace(methods, params)


def _param(name: str, index: int, key: str, value: dict, where: str) -> Param:
    forms = [f for f in FORMS if f in value]
    unknown = sorted(set(value) - set(FORMS) - set(OPTIONS))
    if len(forms) != 1 or unknown:
        raise ConfigError(f"{where}: a searched value is one of {{float: [lo, hi]}}, {{int: [lo, hi]}}, "
                          f"{{choice: [...]}} (options: log, step); got {value!r}")
    form = forms[0]
    bounds = value[form]
    if form == "choice":
        if not isinstance(bounds, list) or not bounds:
            raise ConfigError(f"{where}: choice needs a non-empty list, got {bounds!r}")
        if set(value) - {"choice"}:
            raise ConfigError(f"{where}: choice takes no options, got {sorted(set(value) - {'choice'})}")
        repeated = [c for k, c in enumerate(bounds) if c in bounds[:k]]
        if repeated:
            raise ConfigError(f"{where}: choice lists {repeated[0]!r} twice in {bounds!r}; each option once")
        return Param(name, index, key, form, choices=tuple(bounds))
    kind = float if form == "float" else int
    if (not isinstance(bounds, list) or len(bounds) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
            or (kind is int and not all(isinstance(b, int) for b in bounds))):
        raise ConfigError(f"{where}: {form} needs [lo, hi] of {kind.__name__}s, got {bounds!r}")
    low, high = kind(bounds[0]), kind(bounds[1])
    if not low < high:
        raise ConfigError(f"{where}: the range [{low}, {high}] is empty or inverted: lo must be below hi")
    log = value.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log is true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs lo > 0, got [{low}, {high}]")
    step = value.get("step")
    if step is not None and (not isinstance(step, (int, float)) or isinstance(step, bool) or step <= 0 or log
                             or (kind is int and not isinstance(step, int))):
        raise ConfigError(f"{where}: step must be a positive {kind.__name__} and cannot go with log, got {step!r}")
    return Param(name, index, key, form, low, high, log, kind(step) if step is not None else None)
