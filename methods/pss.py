"""Patch Sampling Schedule, PSS (McDanel and Huynh, "Accelerating Vision Transformer Training via a Patch
Sampling Schedule", arXiv 2208.09520; reference code BradMcDanel/pss, deit/patch_scheduler.py and deit/pss.py).

The fraction of tokens kept changes every step with budget progress p. Schedules are written as the drop
ratio d = 1 - keep, from `start` to `end` (the paper's configs: cyclic, 0.8 to -0.1, magnitude selection):

- linear: d = (1 - q) start + q end, q the progress within the scheduled part (before the cooldown);
- cosine: d = end + (start - end)(1 + cos(pi q)) / 2;
- cyclic (the paper's headline): a triangle wave of period `period` (a fraction of progress): d = start at
  the period's edges, end at its middle.

d is clipped to [0, 1] and rounded to the nearest `quantum` (default 0.2, as the original's
`round(ratio * 5) / 5`), so only a few token counts occur; the last `cooldown` fraction of progress trains at
full tokens. Kept per clip: K = max(1, round(keep x N)), the same for every clip of a batch. Selection:
`magnitude` (the paper's configs: the K tokens with the largest L1 norm of their embedding, position embedding
included, deterministic) or `random` (vtbench.methods.selection). Evaluation: full tokens; the robustness curve
(keep 0.8, 0.6, 0.4, 0.2 under magnitude and random selection, beside the baseline's) comes from the shared
evaluation protocol (vtbench.methods.reductions) that every run gets.

Departures: runs start from random weights unless the run sets `init` (the headline, -31% time, is SimMIM fine-
tuning). PSS is an image-ViT method; here its patches are space-time tubelets of the flattened clip (our
adaptation). The original's cyclic period is one epoch; here it is a fraction of the budget (default 0.1, since the
synthetic data is endless and budgets are not counted in epochs). The original's DeiT runs reserve the learning
rate's cooldown epochs (`--cooldown-epochs`, 10 of 300) at full patches; here `cooldown` is a fraction of progress
and defaults to 0 (the method specification's default; the original's SimMIM configs also use 0). The original
counts the CLS token in N and always keeps it (K = round(keep x N) - 1 patches); here the CLS token is outside the
selected set (the model adds it afterwards) and K = round(keep x N) of the N patches. The original's PSS model also
differs from its baseline (relative position bias, mean pooling); here PSS trains the very model the baseline does,
so the comparison isolates the schedule.
"""

import math

import torch

from vtbench.models.tokens import Tokens

from .base import Method
from .card import Claim
from .params import Param
from .registry import register
from .selection import random_subset, top_magnitude

SCHEDULES = ("linear", "cosine", "cyclic")
SELECTIONS = ("magnitude", "random")


def scheduled_drop(q: float, schedule: str, start: float, end: float, period: float) -> float:
    """The raw drop ratio at progress q of the scheduled part (before clipping and rounding)."""
    if schedule == "linear":
        return (1 - q) * start + q * end
    if schedule == "cosine":
        return end + (start - end) * (1 + math.cos(math.pi * q)) / 2
    phase = (q % period) / period
    triangle = 1 - abs(2 * phase - 1)  # 0 at the period's edges, 1 in its middle
    return (1 - triangle) * start + triangle * end


def keep_ratio(progress: float, schedule: str = "cyclic", start: float = 0.8, end: float = -0.1,
               period: float = 0.1, quantum: float = 0.2, cooldown: float = 0.0) -> float:
    """Fraction of tokens kept at budget `progress`."""
    if progress >= 1 - cooldown:
        return 1.0
    # linear and cosine run over the part before the cooldown; the cyclic period is a fraction of the whole
    # budget, as the original's is one epoch of iterations whatever its cooldown
    q = progress if schedule == "cyclic" else progress / (1 - cooldown)
    drop = scheduled_drop(q, schedule, start, end, period)
    drop = min(1.0, max(0.0, drop))
    drop = round(round(drop / quantum) * quantum, 10)
    return round(max(0.0, 1.0 - drop), 10)


def select_by(tokens: Tokens, keep: float, selection: str, generator: torch.Generator | None = None) -> Tokens:
    """K = max(1, round(keep x N)) tokens per clip: the largest L1 norms, or a random subset."""
    k = max(1, round(keep * tokens.count))
    return top_magnitude(tokens, k) if selection == "magnitude" else random_subset(tokens, k, generator)


@register
class PatchSamplingSchedule(Method):
    name = "pss"
    claim = Claim("PSS (McDanel and Huynh, 2022)", "about 30% less training time at equal accuracy",
                  "24.6 h -> 17.0 h (-31%), -0.26 top-1 (SimMIM ViT-B)", "ViT-B, 16 x 224^2, cyclic",
                  params=(("schedule", "cyclic"),))
    params = {
        "schedule": Param(str, "cyclic", choices=SCHEDULES, help="how the drop ratio goes from start to end"),
        "start": Param(float, 0.8, low=-1, high=1, note="(a drop ratio)", help="the drop ratio at the start (linear, "
                                                                                "cosine) or at each period's edges"),
        "end": Param(float, -0.1, low=-1, high=1, note="(a drop ratio)", help="the drop ratio at the end (linear, "
                                                                               "cosine) or in each period's middle"),
        "period": Param(float, 0.1, low=0, high=1, low_open=True, help="the cyclic period, a fraction of progress"),
        "quantum": Param(float, 0.2, low=0, high=1, low_open=True, help="the drop ratio is rounded to a multiple "
                                                                         "of this"),
        "cooldown": Param(float, 0.0, low=0, high=1, high_open=True, help="the last fraction of progress, trained "
                                                                            "at full tokens"),
        "selection": Param(str, "magnitude", choices=SELECTIONS, help="which tokens: the largest L1 norms, or at "
                                                                      "random"),
    }

    def __init__(self, schedule: str = "cyclic", start: float = 0.8, end: float = -0.1, period: float = 0.1,
                 quantum: float = 0.2, cooldown: float = 0.0, selection: str = "magnitude"):
        self.schedule, self.start, self.end, self.period = schedule, start, end, period
        self.quantum, self.cooldown, self.selection = quantum, cooldown, selection

    def keep(self, progress: float) -> float:
        return keep_ratio(progress, self.schedule, self.start, self.end, self.period, self.quantum, self.cooldown)

    def select_tokens(self, tokens: Tokens, progress: float, training: bool) -> Tokens:
        return select_by(tokens, self.keep(progress), self.selection) if training else tokens

    def log_columns(self, progress: float) -> dict:
        return {"scheduled_keep": self.keep(progress)}
