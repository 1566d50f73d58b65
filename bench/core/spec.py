"""A method as a run names it: `NAME:key=value,...` on the command line is MethodSpec(NAME, {key: value, ...})."""

from dataclasses import dataclass, field
from typing import Any


@dataclass
class MethodSpec:
    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.name}:{args}" if args else self.name
