"""Paired, seed-by-seed statistics of a method against its baseline (docs/design.md, "The
verdict protocol"): the equal-accuracy speed-up read off the baseline's budget ladder, time to fixed targets, the
difference in top-1 at equal budget, Holm's correction over a study's comparisons and the verdict texts.

Every interval comes from scipy.stats: a Student t interval, on log ratios for speed-ups and on differences for top-1,
at every number of seeds. A bootstrap over 3 to 9 seeds undercovers badly, and from 10 seeds on its interval is the t
interval's within a few percent while the verdict would still come from the t-test: one test gives both, so a verdict
never contradicts its own interval. One seed gives an estimate only.
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05


@dataclass(frozen=True)
class Effect:
    """An estimate over paired seeds with its 95% interval (NaN bounds for one seed), the p-value of "no effect"
    and the kind of interval ("t, 3 seeds")."""

    estimate: float
    low: float
    high: float
    p: float
    n: int
    kind: str

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))


NO_EFFECT = Effect(math.nan, math.nan, math.nan, math.nan, 0, "")


def _no_spread(values: np.ndarray) -> bool:
    # identical per-seed values (a positive control on a step budget trains exactly the baseline's runs): scipy's
    # t statistic is then 0/0 or a rounding artefact
    return float(np.ptp(values)) <= 1e-12 * max(1.0, float(np.abs(values).max()))


def _point(value: float, n: int, zero: float) -> Effect:
    """The Effect of seeds that all agree: the interval is the point, p is 0 (1 where it is no effect)."""
    return Effect(value, value, value, 1.0 if value == zero else 0.0, n, f"t, {n} seeds")


def paired_difference(method, baseline) -> Effect:
    """Mean of the per-seed differences (method seed s minus baseline seed s), its t interval and ttest_rel's p."""
    method, baseline = np.asarray(method, float), np.asarray(baseline, float)
    differences = method - baseline
    n = len(differences)
    if n == 0:
        return NO_EFFECT
    mean = float(differences.mean())
    if n == 1:
        return Effect(mean, math.nan, math.nan, math.nan, 1, "one seed: no interval")
    if _no_spread(differences):
        return _point(mean, n, 0.0)
    test = stats.ttest_rel(method, baseline)
    interval = test.confidence_interval(1 - ALPHA)
    return Effect(mean, float(interval.low), float(interval.high), float(test.pvalue), n, f"t, {n} seeds")


def ratio_effect(ratios) -> Effect:
    """Geometric mean of per-seed ratios (> 0), the 95% Student t interval of the mean log ratio exponentiated, and
    the same test's p-value of a ratio of 1."""
    ratios = np.asarray(ratios, float)
    logs = np.log(ratios)
    n = len(logs)
    if n == 0 or not np.isfinite(logs).all():
        return NO_EFFECT
    estimate = math.exp(float(logs.mean()))
    if n == 1:
        return Effect(estimate, math.nan, math.nan, math.nan, 1, "one seed: no interval")
    if _no_spread(logs):  # exactly the common ratio, not exp(log(r)) a rounding away from it
        return _point(float(ratios[0]), n, 1.0)
    test = stats.ttest_1samp(logs, 0.0)
    interval = test.confidence_interval(1 - ALPHA)
    return Effect(estimate, math.exp(interval.low), math.exp(interval.high), float(test.pvalue), n, f"t, {n} seeds")


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted): the k-th smallest of m is
    multiplied by m - k + 1, then made non-decreasing in that order and capped at 1."""
    p = np.asarray(pvalues, float)
    adjusted = np.full_like(p, np.nan)
    present = np.flatnonzero(~np.isnan(p))
    order = present[np.argsort(p[present], kind="stable")]
    m, running = len(order), 0.0
    for k, index in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[index]))
        adjusted[index] = running
    return adjusted


# ---- reading a budget ladder -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reach:
    """The budget at which a ladder reaches an accuracy: NaN with `why` where it is undefined; `extrapolated`
    where the accuracy lies outside the ladder's range and an end segment was extended."""

    budget: float
    extrapolated: bool = False
    why: str | None = None


def reach(budgets, top1, target: float) -> Reach:
    """The lowest budget at which top-1, interpolated piecewise-linearly against log(budget), reaches `target`
    (on a ladder that is not monotone, its first crossing). A target below the first rung is reached before the
    ladder starts and one above its highest point after it ends: there the nearest end segment is extended and the
    result marked extrapolated; an end segment that does not rise leaves the budget undefined. A missing (NaN)
    rung is left out; a missing target leaves the budget undefined."""
    if math.isnan(target):
        return Reach(math.nan, why="the method's top-1 is missing")
    b, y = np.asarray(budgets, float), np.asarray(top1, float)
    kept = np.isfinite(b) & np.isfinite(y)
    order = np.argsort(b[kept], kind="stable")
    b, y = b[kept][order], y[kept][order]
    x = np.log(b)
    if len(x) < 2:
        return Reach(math.nan, why="a ladder needs two budgets or more")
    if target < y[0] or target > y.max():
        low_end = target < y[0]
        (x0, x1), (y0, y1) = (x[:2], y[:2]) if low_end else (x[-2:], y[-2:])
        slope = (y1 - y0) / (x1 - x0)
        if slope <= 0:
            side = "below the ladder's first rung, whose first" if low_end else "above the ladder, whose last"
            return Reach(math.nan, True, f"top-1 {target:.4g} lies {side} segment does not rise")
        anchor_x, anchor_y = (x0, y0) if low_end else (x1, y1)
        return Reach(math.exp(anchor_x + (target - anchor_y) / slope), True)
    if y[0] == target:
        return Reach(float(b[0]))
    for i in range(len(x) - 1):  # the first upward crossing: below the target at i, at or above it at i + 1
        if y[i] < target == y[i + 1]:
            return Reach(float(b[i + 1]))  # the rung itself, not exp(log(rung)) a rounding away
        if y[i] < target < y[i + 1]:
            return Reach(math.exp(x[i] + (target - y[i]) / (y[i + 1] - y[i]) * (x[i + 1] - x[i])))
    raise AssertionError("unreachable: y[0] < target <= max(y) has an upward crossing")


@dataclass(frozen=True)
class Multiplier:
    """A speed-up over seeds: the Effect of the per-seed ratios, which seeds were extrapolated, and why it is
    undefined where it is."""

    effect: Effect
    ratios: tuple[float, ...] = ()
    extrapolated_seeds: tuple = ()
    why: str | None = None

    @property
    def extrapolated(self) -> bool:
        return bool(self.extrapolated_seeds)


def compute_multiplier(ladders: dict, method_top1: dict, budget: float) -> Multiplier:
    """Equal-accuracy speed-up of a method run at `budget`: per seed s, the budget b*_s at which baseline seed s's
    ladder (`ladders[s]` = (budgets, top-1s)) reaches the method's seed-s top-1, over `budget`."""
    seeds = [s for s in method_top1 if s in ladders]
    if not seeds:
        return Multiplier(NO_EFFECT, why="no seed of the method has a baseline ladder")
    ratios, extrapolated = [], []
    for s in seeds:
        found = reach(*ladders[s], method_top1[s])
        if found.why:
            return Multiplier(NO_EFFECT, why=f"undefined: seed {s}: {found.why}")
        ratios.append(found.budget / budget)
        if found.extrapolated:
            extrapolated.append(s)
    return Multiplier(ratio_effect(ratios), tuple(ratios), tuple(extrapolated))


def time_to_target(baseline_ladders: dict, method_ladders: dict, target: float) -> Multiplier:
    """AlgoPerf's form: per seed, the budget at which the baseline's ladder reaches `target` over the budget at
    which the method's own ladder does."""
    seeds = [s for s in method_ladders if s in baseline_ladders]
    if not seeds:
        return Multiplier(NO_EFFECT, why="no seed in common")
    ratios, extrapolated = [], []
    for s in seeds:
        theirs, mine = reach(*baseline_ladders[s], target), reach(*method_ladders[s], target)
        if theirs.why or mine.why:
            return Multiplier(NO_EFFECT, why=f"undefined: seed {s}: {theirs.why or mine.why}")
        ratios.append(theirs.budget / mine.budget)
        if theirs.extrapolated or mine.extrapolated:
            extrapolated.append(s)
    return Multiplier(ratio_effect(ratios), tuple(ratios), tuple(extrapolated))


# ---- verdicts ----------------------------------------------------------------------------------------------


def resolved(p_adjusted: float) -> bool:
    return not math.isnan(p_adjusted) and p_adjusted < ALPHA


def speedup_text(effect: Effect, p_adjusted: float, extrapolated: bool = False) -> str:
    """"1.62x [1.41, 1.86] less compute for equal top-1", "needs 1.30x [1.10, 1.50] more compute for equal
    top-1" or "not resolved: 1.05x [0.91, 1.21]"; "(extrapolated)" where a seed's budget was."""
    mark = " (extrapolated)" if extrapolated else ""
    e = effect
    if math.isnan(e.estimate):
        return "undefined"
    if not e.has_interval:
        return f"not resolved: {e.estimate:.2f}x (one seed, no interval){mark}"
    if resolved(p_adjusted) and e.estimate > 1:
        return f"{e.estimate:.2f}x [{e.low:.2f}, {e.high:.2f}] less compute for equal top-1{mark}"
    if resolved(p_adjusted) and e.estimate < 1:
        return f"needs {1 / e.estimate:.2f}x [{1 / e.high:.2f}, {1 / e.low:.2f}] more compute for equal top-1{mark}"
    return f"not resolved: {e.estimate:.2f}x [{e.low:.2f}, {e.high:.2f}]{mark}"


def difference_text(effect: Effect, p_adjusted: float) -> str:
    """"+2.1 [0.8, 3.4] points top-1 at equal budget", or "not resolved: +0.4 [-1.2, 2.0] points"."""
    e = effect
    if math.isnan(e.estimate):
        return "undefined"
    if not e.has_interval:
        return f"not resolved: {e.estimate:+.1f} points (one seed, no interval)"
    if resolved(p_adjusted) and e.estimate != 0:
        return f"{e.estimate:+.1f} [{e.low:+.1f}, {e.high:+.1f}] points top-1 at equal budget"
    return f"not resolved: {e.estimate:+.1f} [{e.low:+.1f}, {e.high:+.1f}] points"


def log_half_width(low: float, high: float) -> float:
    """exp of the half-width of an interval on the log scale: the smallest ratio it resolves from 1."""
    return math.exp((math.log(high) - math.log(low)) / 2)


def spread_resolves(ratios) -> float:
    """exp(t_{0.975, n-1} * sd(log r) / sqrt(n)): the smallest speed-up a paired t interval over these seeds'
    spread resolves from 1."""
    logs = np.log(np.asarray(ratios, float))
    n = len(logs)
    if n < 2:
        return math.nan
    return math.exp(stats.t.ppf(1 - ALPHA / 2, n - 1) * logs.std(ddof=1) / math.sqrt(n))
