"""Placebo: the baseline with an independent stream of randomness and no other change.

Not a paper's method: an instrument check. Run with seed s it draws the randomness named by `vary` from a seed
derived from (s, stream) instead of s, so against the baseline's seed s it differs by nothing but chance. A study
that holds it must read "no difference"; the spread of its paired differences is the noise floor a real method's
effect has to clear.

- `weights` (the default): the initialisation and the global generators; the clips stay the seed's own. A real
  method run with seed s shares both its initial weights and its clips with the baseline's seed s and takes
  another path from its first step; this placebo shares what such a method shares longest (the clips) and takes
  another path from the start.
- `data`: the clips and their augmentation; the initial weights stay the seed's own. The floor for a method that
  draws other clips than its baseline (one that changes the batch's shape, such as multigrid).
- `all`: both, as two unrelated runs (what this placebo did before `vary` existed).

docs/calibration.md gives the three's paired spreads beside real methods'. Departures: none to list; it has no
paper.
"""

from typing import Any

import numpy as np

from .base import Method, Seeds
from .params import Param
from .registry import register

VARIES = ("all", "data", "weights")


@register
class Placebo(Method):
    name = "placebo"
    params = {
        "stream": Param(int, 1, low=1, help="which independent stream of randomness: the seed drawn from (seed, "
                                            "stream)"),
        "vary": Param(str, "weights", choices=VARIES, previously="all",
                      help="what the independent stream draws: the weights (initialisation; the default), the data "
                           "(clips and augmentation) or all"),
    }

    def __init__(self, stream: int = 1, vary: str = "weights"):
        self.stream, self.vary = stream, vary

    def derived_seed(self, seed: int) -> int:
        # a 63-bit seed from both numbers: never one of the small seeds a study runs
        return int(np.random.SeedSequence([seed, self.stream, 0x9ACEB0]).generate_state(2, np.uint64)[0]) >> 1

    def random_seeds(self, seeds: Seeds) -> Seeds:
        weights = self.derived_seed(seeds.weights) if self.vary in ("all", "weights") else seeds.weights
        data = self.derived_seed(seeds.data) if self.vary in ("all", "data") else seeds.data
        return Seeds(weights, data)

    def summary(self) -> dict[str, Any]:
        return {"expected_speedup": 1.0}

    def __repr__(self) -> str:
        return f"Placebo(stream={self.stream}, vary={self.vary!r})"
