"""A method as a run names it: `token_dropout:keep=0.5` is MethodSpec("token_dropout", {"keep": 0.5})."""

from dataclasses import dataclass, field
from typing import Any


@dataclass
class MethodSpec:
    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.name}:{args}" if args else self.name
