"""The numbers a report shows about single cells, as plain functions of pandas tables: Pareto frontiers and the
interval of a mean top-1 over seeds. Comparisons with a baseline are paired by seed (vtbench.report.paired)."""

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special, stats

CONFIDENCE = 0.95
CLIP = 0.05  # top-1 (%) is clipped to [CLIP, 100 - CLIP] before its logit


@dataclass(frozen=True)
class Interval:
    """Mean top-1 (%) over seeds with its 95% interval (NaN bounds for a single seed: no spread, no interval).

    The interval is a Student t interval on the logit scale of the per-seed accuracies (clipped to
    [CLIP, 100 - CLIP] first), back-transformed, so that it stays inside [0, 100]; the point is the arithmetic
    mean, and the interval is widened to hold it where skewed or clipped seeds put it outside."""

    mean: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values) -> "Interval":
        values = np.asarray([v for v in values if v is not None and not math.isnan(v)], float)
        n = len(values)
        if n == 0:
            return cls(math.nan, math.nan, math.nan, 0)
        mean = float(values.mean())
        if n == 1:
            return cls(mean, math.nan, math.nan, 1)
        if float(np.ptp(values)) == 0:  # seeds that agree: the point, not its clipped logit a CLIP away from it
            return cls(mean, mean, mean, n)
        logits = special.logit(np.clip(values, CLIP, 100 - CLIP) / 100)
        centre = logits.mean()
        half = stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * logits.std(ddof=1) / math.sqrt(n)
        low, high = float(100 * special.expit(centre - half)), float(100 * special.expit(centre + half))
        # the logit interval is centred on the back-transformed mean logit, not the arithmetic mean: with skewed seeds
        # (nine at 100, one at 50) or clipped ones the mean can fall outside it; it is widened to hold its point
        return cls(mean, min(low, mean), max(high, mean), n)

    def __str__(self) -> str:
        if self.n == 1:
            return f"{self.mean:.1f} (one seed)"
        return f"{self.mean:.1f} [{self.low:.1f}, {self.high:.1f}]"


def pareto_front(table: pd.DataFrame, cost: str, accuracy: str = "top1", tolerance: float = 0.02) -> pd.Series:
    """Boolean mask of the rows no other row beats: no row as cheap (costs within `tolerance` of each other
    count as equal: runs of one time budget end a fraction of a step apart) with accuracy as high, and
    strictly better in one of the two."""
    costs, accs = table[cost].to_numpy(float), table[accuracy].to_numpy(float)
    front = []
    for c, a in zip(costs, accs, strict=True):
        as_cheap = costs <= c * (1 + tolerance)
        cheaper = costs < c * (1 - tolerance)
        dominated = np.any(as_cheap & (accs >= a) & (cheaper | (accs > a)))
        front.append(not dominated)
    return pd.Series(front, index=table.index)
