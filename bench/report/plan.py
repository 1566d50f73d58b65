"""`vtbench plan STUDY_DIR`: how many seeds each comparison of a finished study needs to resolve a given speed-up.

For each method row (controls included, so that a calibration study of the baseline ladder and a placebo is
planned too) the study's own per-seed log multipliers (vtbench.report.paired) give the spread sd; the seeds
needed are the fewest for which a paired one-sample t-test on log ratios at alpha 0.05, two-sided, detects a
true speed-up X with the given power (exact power from the noncentral t distribution). The cost of those
seeds is given in the study's budget unit (the method's budget plus the baseline rungs its comparison reads) and
the time each run spent off the clock (evaluations, checkpoints), from summary.json.
"""

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from vtbench.core.budget import Budget
from vtbench.errors import VtbenchError
from vtbench.studies.table import runs_table, study_table

from .paired import ALPHA
from .tables import baseline_rows, final_table, ladder, summary_table

MOST_SEEDS = 10_000


def t_power(n: int, effect: float, sd: float, alpha: float = ALPHA) -> float:
    """Power of a two-sided one-sample t-test of n values of spread sd against a true mean `effect`."""
    if sd == 0:
        return 1.0 if effect != 0 else alpha
    df, shift = n - 1, effect / sd * math.sqrt(n)
    critical = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift))


def seeds_needed(effect: float, sd: float, power: float, alpha: float = ALPHA) -> int | None:
    """The fewest seeds (2 at least: a t interval needs a spread) reaching `power`; None above MOST_SEEDS. Power
    grows with n, so a doubling search then a bisection finds it."""
    if t_power(MOST_SEEDS, effect, sd, alpha) < power:
        return None
    low, high = 1, 2  # power(low) < power <= power(high), once high is found
    while t_power(high, effect, sd, alpha) < power:
        low, high = high, min(2 * high, MOST_SEEDS)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if t_power(middle, effect, sd, alpha) < power else (low, middle)
    return high


def plan_table(study_dir: str | Path, speedup: float = 1.3, power: float = 0.8) -> pd.DataFrame:
    """One row per compared method row of the study: its spread, the seeds needed, their cost, and whether its
    current seeds are enough. Raises VtbenchError naming what is missing (a finished run, a baseline ladder,
    two seeds)."""
    study_dir = Path(study_dir)
    evals = study_table(study_dir)
    if evals.empty:
        raise VtbenchError(f"{study_dir} holds no finished run")
    final = final_table(evals)
    runs = runs_table(study_dir)
    table = summary_table(final, evals, runs)
    if not _has_ladder(final):
        raise VtbenchError(f"{study_dir}: no baseline ladder: the plan needs the baseline at two or more budgets of "
                           "one unit (e.g. budgets [5s, 10s, 20s, 40s]) to read speed-ups off")
    rows = table[~table["method"].eq(table["baseline"]) & ~_baseline(table, final)]
    if rows.empty:
        raise VtbenchError(f"{study_dir}: no method or placebo beside the baseline: nothing to plan for")
    if (rows["seeds"] < 2).all():
        raise VtbenchError(f"{study_dir}: every comparison has one seed; the plan needs the spread of two seeds or "
                           "more")
    overhead = _overhead(runs)
    return pd.DataFrame([_plan_row(r, final, overhead, speedup, power) for r in rows.itertuples()])


def _baseline(table: pd.DataFrame, final: pd.DataFrame) -> pd.Series:
    baselines = set(final.loc[final["is_baseline"].astype(bool), "method"])
    return table["method"].isin(baselines)


def _has_ladder(final: pd.DataFrame) -> bool:
    base = final[final["is_baseline"].astype(bool)]
    units = base["budget"].map(lambda b: Budget.parse(b).unit)
    return bool((base.assign(unit=units).groupby(["settings", "unit"])["budget"].nunique() >= 2).any())


def _overhead(runs: pd.DataFrame) -> pd.Series:
    """Seconds each run spent off the clock (evaluations and checkpoints), by run id; NaN where not recorded."""
    columns = [c for c in ("eval_s", "checkpoint_s") if c in runs]
    if not columns:
        return pd.Series(np.nan, index=runs["run_id"])
    return runs.set_index("run_id")[columns].astype(float).sum(axis=1, min_count=1)


def _plan_row(r, final: pd.DataFrame, overhead: pd.Series, speedup: float, power: float) -> dict:
    row = {"method": r.method, "budget": r.budget, "control": "" if math.isnan(r.expected_speedup) else
           f"expects {r.expected_speedup:g}x", "seeds now": r.seeds}
    if not isinstance(r.speedup_ratios, str) or len(r.speedup_ratios.split()) < 2:
        why = r.speedup_note if isinstance(r.speedup_note, str) else "fewer than two seeds"
        return {**row, "sd(log r)": math.nan, "seeds needed": "", "power now": math.nan, "budget cost": "",
                "overhead (s)": math.nan, "status": f"cannot plan: {why}"}
    ratios = [float(x) for x in r.speedup_ratios.split()]
    sd = float(np.std(np.log(ratios), ddof=1))
    effect = math.log(speedup)
    needed = seeds_needed(effect, sd, power)
    now = t_power(len(ratios), effect, sd)
    nominal = Budget.parse(r.budget)
    rungs = _rungs(final, r, nominal, ratios, speedup)
    per_seed = nominal.amount + sum(rungs)
    runs_per_seed = 1 + len(rungs)
    settings = final.loc[(final["method"] == r.method) & (final["budget"] == r.budget), "settings"].iloc[0]
    observed = overhead.reindex(final.loc[final["settings"] == settings, "run_id"]).dropna()
    per_run = float(observed.mean()) if len(observed) else math.nan
    cost = "" if needed is None else f"{needed} x ({_amount(nominal.amount)} + {' + '.join(map(_amount, rungs))}) = " \
        f"{_amount(needed * per_seed)}{nominal.unit}"
    status = (f"under-powered: power {now:.2f} at {len(ratios)} seeds" if needed is None or needed > len(ratios)
              else f"enough: power {now:.2f} at {len(ratios)} seeds")
    return {**row, "sd(log r)": round(sd, 4), "seeds needed": needed or f">{MOST_SEEDS}",
            "power now": round(now, 3), "budget cost": cost,
            "overhead (s)": round(per_run * runs_per_seed * needed, 1) if needed and not math.isnan(per_run)
            else math.nan, "status": status}


def _rungs(final: pd.DataFrame, r, nominal: Budget, ratios: list[float], speedup: float) -> list[float]:
    """The baseline ladder's budgets a comparison reads: those bracketing the budgets it was found to need
    (b*_s = r_s x B) and the one it would need at the planned speed-up, within the ladder."""
    settings = final.loc[(final["method"] == r.method) & (final["budget"] == r.budget), "settings"].iloc[0]
    ladders = ladder(baseline_rows(final, settings), nominal.unit)
    rungs = sorted({b for budgets, _ in ladders.values() for b in budgets})
    wanted = [x * nominal.amount for x in (*ratios, speedup)]
    low = max([b for b in rungs if b <= min(wanted)], default=rungs[0])
    high = min([b for b in rungs if b >= max(wanted)], default=rungs[-1])
    chosen = [b for b in rungs if low <= b <= high]
    if len(chosen) < 2:  # a segment is two rungs: add the next one up, or down at the ladder's top
        i = rungs.index(chosen[0])
        chosen = rungs[i:i + 2] if i + 1 < len(rungs) else rungs[i - 1:i + 1]
    return chosen


def _amount(value: float) -> str:
    return f"{value:g}"


def markdown(plan: pd.DataFrame, speedup: float, power: float) -> str:
    head = (f"Seeds for a paired t-test on log multipliers (alpha 0.05, two-sided) to detect a true speed-up of "
            f"{speedup:g}x with power {power:g}, at each row's observed spread. `budget cost`: seeds x (the method's "
            "budget + the baseline rungs its comparison reads), nominal; the baseline's runs serve every method of "
            "its settings, so a study pays for them once, at the largest seed count. `overhead (s)`: the time off "
            "the clock (evaluations, checkpoints) those runs would take, at the mean of this study's runs of the same "
            "settings.")
    return head + "\n\n" + plan.to_markdown(index=False)
