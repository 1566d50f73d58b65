"""Positive control: the baseline, charged a fixed share of each step's cost, so its speed-up is known.

Not a paper's method: an instrument check. `control:speedup=2` trains exactly as the baseline does (the same
model, data, seed and steps) but its budget clock pays 1/2 of every step's time and FLOPs, so at budget B it
trains what the baseline trains at 2B. A study that holds it must read a speed-up of 2 with an interval that
holds 2 and excludes 1; one that does not cannot tell "no effect" from "blind". Its reported cost (train_s,
FLOPs) is what it was charged. Departures: none to list; it has no paper.
"""

from typing import Any

from .base import Method
from .params import Param
from .registry import register


@register
class Control(Method):
    name = "control"
    params = {"speedup": Param(float, 2.0, low=1, high=100,
                               help="the known speed-up: each step is charged 1/speedup of its time and FLOPs")}

    def __init__(self, speedup: float = 2.0):
        self.speedup = float(speedup)

    def cost_share(self) -> float:
        return 1 / self.speedup

    def summary(self) -> dict[str, Any]:
        return {"expected_speedup": self.speedup}

    def __repr__(self) -> str:
        return f"Control(speedup={self.speedup:g})"
