"""The numbers a report shows, as plain functions of pandas tables: Pareto frontiers, intervals over seeds, the
verdict rule, time to reach the baseline's accuracy with bootstrap confidence intervals."""

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """Mean over seeds with its 95% Student-t interval (NaN bounds for a single seed: no spread, no interval)."""

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
        half = stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * values.std(ddof=1) / math.sqrt(n)
        return cls(mean, float(mean - half), float(mean + half), n)

    def __str__(self) -> str:
        if self.n == 1:
            return f"{self.mean:.1f} (one seed)"
        return f"{self.mean:.1f} [{self.low:.1f}, {self.high:.1f}]"


def compare(method: Interval, baseline: Interval) -> str:
    """The verdict rule: "above" only when the method's interval clears the baseline's, "below" when it lies
    wholly beneath it, "not resolved" otherwise (overlapping intervals, or a side without an interval)."""
    if any(math.isnan(v) for v in (method.low, method.high, baseline.low, baseline.high)):
        return "not resolved"
    if method.low > baseline.high:
        return "above"
    if method.high < baseline.low:
        return "below"
    return "not resolved"


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


def time_to_reach(curve: pd.DataFrame, target: float, cost: str = "used_s", accuracy: str = "top1") -> float:
    """The cost at which a run's accuracy curve first reaches `target`, linearly interpolated between its
    evaluations; NaN if it never does."""
    curve = curve.sort_values(cost)
    previous_cost, previous_acc = 0.0, None
    for c, a in zip(curve[cost], curve[accuracy], strict=True):
        if a >= target:
            if previous_acc is None or a == previous_acc:
                return float(c)
            return float(previous_cost + (target - previous_acc) / (a - previous_acc) * (c - previous_cost))
        previous_cost, previous_acc = c, a
    return float("nan")


def speedup(baseline_times: list[float], method_times: list[float], baseline_final: float | None = None,
            resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Speed-up (baseline time / method time to reach the baseline's final accuracy) and a 95% bootstrap
    interval over seeds: (estimate, low, high). NaN where the method never reaches it."""
    base, method = np.asarray(baseline_times, float), np.asarray(method_times, float)
    if np.isnan(method).any() or len(method) == 0:
        return float("nan"), float("nan"), float("nan")
    estimate = base.mean() / method.mean()
    rng = np.random.default_rng(seed)
    b = rng.choice(base, (resamples, len(base))).mean(axis=1)
    m = rng.choice(method, (resamples, len(method))).mean(axis=1)
    low, high = np.percentile(b / m, [2.5, 97.5])
    return float(estimate), float(low), float(high)
