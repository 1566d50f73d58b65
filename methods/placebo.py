"""Placebo: the baseline with an independent stream of randomness and no other change.

Not a paper's method: an instrument check. Run with seed s it draws its initialisation, data order and
augmentation from a seed derived from (s, stream) instead of s, so against the baseline's seed s it differs by
nothing but chance. A study that holds it must read "no difference"; the spread of its paired differences is the
noise floor a real method's effect has to clear. Departures: none to list; it has no paper.
"""

from typing import Any

import numpy as np

from . import register
from .base import Method
from .params import Param


@register
class Placebo(Method):
    name = "placebo"
    params = {"stream": Param(int, 1, low=1, help="which independent stream of randomness: the seed drawn from "
                                                  "(seed, stream)")}

    def __init__(self, stream: int = 1):
        self.stream = stream

    def random_seed(self, seed: int) -> int:
        # a 63-bit seed from both numbers: never one of the small seeds a study runs
        return int(np.random.SeedSequence([seed, self.stream, 0x9ACEB0]).generate_state(2, np.uint64)[0] >> 1)

    def summary(self) -> dict[str, Any]:
        return {"expected_speedup": 1.0}

    def __repr__(self) -> str:
        return f"Placebo(stream={self.stream})"
