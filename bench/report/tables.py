"""The tables of a report: one row per run at its final evaluation, then one row per method label and budget
with its figures over seeds, compared seed by seed with its matched baseline (vtbench.studies.comparison): the
equal-accuracy speed-up read off the baseline's budget ladder (the baseline runs of the same settings at every
budget of the same unit), top-1 at equal budget, Holm-adjusted p-values and verdicts (vtbench.report.paired);
and, for methods run at several budgets, time to fixed targets."""

import math

import numpy as np
import pandas as pd

from vtbench.core.budget import Budget
from vtbench.studies.comparison import match_baselines

from . import paired
from .analysis import Interval


def final_table(evals: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its final default-setting evaluation plus its totals."""
    final = evals[(evals["setting"] == "default") & (evals["point"] == 1.0)].copy()
    final["device_hours"] = final["train_s"] / 3600
    final["total_gflops"] = final["total_flops"] / 1e9
    memory = final["mem_allocated"].where(final["mem_allocated"].notna(), final["mem_rss"])
    final["peak_memory_gib"] = memory.astype(float) / 2**30  # a training peak: evaluation has its own columns
    return final


def summary_table(final: pd.DataFrame, evals: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per method label and budget: top-1 over seeds, cost, memory, throughput, energy, the matched baseline, the
    equal-accuracy speed-up and the paired top-1 difference with their Holm-adjusted p-values and verdicts.
    `runs` (every run, whatever its status) decides the matching."""
    matched = match_baselines(runs).set_index(["method", "budget"])
    rows = []
    for (method, budget), group in final.groupby(["method", "budget"], sort=False):
        interval = Interval.of(group["top1"])
        row = {"method": method, "budget": budget, "init": group["init"].iloc[0] if "init" in group else "scratch",
               "seeds": len(group), "top1": interval.mean,  # completed seeds
               "top1_low": interval.low, "top1_high": interval.high,  # 95% interval of the mean over seeds
               "top1_std": group["top1"].std(ddof=1) if len(group) > 1 else 0.0, "train_s": group["train_s"].mean(),
               "device_hours": group["device_hours"].mean(), "total_gflops": group["total_gflops"].mean(),
               "peak_memory_gib": group["peak_memory_gib"].max(),
               "mem_allocated_gib": _gib(group["mem_allocated"]), "mem_reserved_gib": _gib(group["mem_reserved"]),
               "mem_device_gib": _gib(group["mem_device"]), "mem_rss_gib": _gib(group["mem_rss"]),
               **{f"eval_{k}_gib": _gib(group.get(f"eval_{k}", pd.Series(dtype=float)))
                  for k in ("mem_allocated", "mem_reserved", "mem_rss")},
               "clips_per_s": group["clips_per_s"].mean(),
               "energy_kj": group["energy_j"].astype(float).mean() / 1000 if group["energy_j"].notna().any() else None}
        runs, baseline, note = matched.loc[(method, budget), ["runs", "baseline", "comparison"]]
        if isinstance(baseline, str) and final[(final["method"] == baseline) & (final["budget"] == budget)].empty:
            baseline, note = None, f"its baseline ({baseline}) has no completed run"
        row.update(runs=runs, eval_input=_eval_input(group), baseline=baseline, comparison=note)
        row["expected_speedup"] = _expected(group)
        row.update(_speedup(final, group, budget) if not _is_baseline(group) else _NO_SPEEDUP)
        row.update(_difference(final, method, baseline, budget))
        rows.append(row)
    return with_verdicts(pd.DataFrame(rows))


def _eval_input(group: pd.DataFrame) -> str | None:
    """The evaluation clips: frames x size and the sampling (a run's own: Flux samples segments)."""
    if "stride" not in group or group["stride"].isna().all():
        return None
    first = group.iloc[0]
    sampling = "segments" if first["stride"] == 0 else f"stride {int(first['stride'])}"
    return f"{int(first['frames'])}x{int(first['size'])}px, {sampling}"


def _gib(values: pd.Series) -> float | None:
    values = values.dropna().astype(float)
    return values.max() / 2**30 if len(values) else None


def _is_baseline(group: pd.DataFrame) -> bool:
    return bool(group["is_baseline"].iloc[0]) if "is_baseline" in group else False


def _expected(group: pd.DataFrame) -> float:
    """A control's known speed-up (summary.json's expected_speedup): NaN for every real method."""
    if "expected_speedup" not in group or group["expected_speedup"].isna().all():
        return math.nan
    return float(group["expected_speedup"].dropna().iloc[0])


def ladder(rows: pd.DataFrame, unit: str) -> dict:
    """Per seed: (budgets, top-1s) of `rows` at every budget in `unit` (Budget.parse's amounts)."""
    out = {}
    for seed, runs in rows.groupby("seed"):
        budgets = [Budget.parse(b) for b in runs["budget"]]
        kept = [(b.amount, t) for b, t in zip(budgets, runs["top1"], strict=True) if b.unit == unit]
        if kept:
            out[seed] = ([b for b, _ in kept], [t for _, t in kept])
    return out


def baseline_rows(final: pd.DataFrame, settings: str) -> pd.DataFrame:
    """The baseline runs of one settings key: the rows match_baselines would match at each budget."""
    return final[(final["settings"] == settings) & final["is_baseline"].astype(bool)]


_NO_SPEEDUP = {"speedup": math.nan, "speedup_low": math.nan, "speedup_high": math.nan, "speedup_interval": None,
               "speedup_extrapolated": False, "speedup_p": math.nan, "speedup_note": None, "speedup_seeds": 0,
               "speedup_ratios": None}


def _speedup(final: pd.DataFrame, group: pd.DataFrame, budget: str) -> dict:
    """The equal-accuracy speed-up (compute multiplier) of one row against its baseline's ladder."""
    nominal = Budget.parse(budget)
    ladders = ladder(baseline_rows(final, group["settings"].iloc[0]), nominal.unit)
    ladders = {s: v for s, v in ladders.items() if len(v[0]) >= 2}
    if not ladders:
        return {**_NO_SPEEDUP, "speedup_note": f"no baseline ladder: the baseline of these settings needs two or "
                                               f"more budgets in {nominal.unit}"}
    multiplier = paired.compute_multiplier(ladders, dict(zip(group["seed"], group["top1"], strict=True)),
                                           nominal.amount)
    e = multiplier.effect
    return {"speedup": e.estimate, "speedup_low": e.low, "speedup_high": e.high, "speedup_interval": e.kind or None,
            "speedup_extrapolated": multiplier.extrapolated, "speedup_p": e.p, "speedup_note": multiplier.why,
            "speedup_seeds": e.n, "speedup_ratios": " ".join(f"{r:.4g}" for r in multiplier.ratios) or None}


def _difference(final: pd.DataFrame, method: str, baseline: str | None, budget: str) -> dict:
    """Top-1 at equal budget: method seed s minus baseline seed s, over the seeds both completed."""
    none = {"top1_diff": math.nan, "top1_diff_low": math.nan, "top1_diff_high": math.nan, "top1_diff_p": math.nan,
            "top1_diff_seeds": 0}
    if not isinstance(baseline, str) or baseline == method:
        return none
    mine = final[(final["method"] == method) & (final["budget"] == budget)].set_index("seed")["top1"]
    theirs = final[(final["method"] == baseline) & (final["budget"] == budget)].set_index("seed")["top1"]
    seeds = sorted(set(mine.index) & set(theirs.index))
    e = paired.paired_difference(mine.loc[seeds], theirs.loc[seeds])
    return {"top1_diff": e.estimate, "top1_diff_low": e.low, "top1_diff_high": e.high, "top1_diff_p": e.p,
            "top1_diff_seeds": e.n}


def with_verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """Holm-adjusted p-values and verdicts. One family per figure (speed-up, top-1 difference) holds every
    method-versus-baseline comparison of the study, at every budget; controls (expected_speedup set) are checks
    of the instrument, not claims, and keep their own unadjusted p."""
    table = table.copy()
    claims = table["expected_speedup"].isna()
    for figure in ("speedup", "top1_diff"):
        table[f"{figure}_p_holm"] = np.nan
        table.loc[claims, f"{figure}_p_holm"] = paired.holm(table.loc[claims, f"{figure}_p"])
        table.loc[~claims, f"{figure}_p_holm"] = table.loc[~claims, f"{figure}_p"]
    table["speedup_verdict"] = [_speedup_verdict(r) for r in table.itertuples()]
    table["top1_diff_verdict"] = [
        paired.difference_text(effect(r, "top1_diff"), r.top1_diff_p_holm) if not math.isnan(r.top1_diff) else None
        for r in table.itertuples()]
    return table


def effect(row, figure: str) -> paired.Effect:
    """A summary row's figure ("speedup" or "top1_diff") back as an Effect."""
    n = int(getattr(row, f"{figure}_seeds"))
    kind = (row.speedup_interval or "") if figure == "speedup" else f"t, {n} seeds"
    return paired.Effect(getattr(row, figure), getattr(row, f"{figure}_low"), getattr(row, f"{figure}_high"),
                         getattr(row, f"{figure}_p"), n, kind)


def _speedup_verdict(row) -> str | None:
    if row.baseline == row.method:
        return None
    if isinstance(row.speedup_note, str) and math.isnan(row.speedup):
        return row.speedup_note
    return paired.speedup_text(effect(row, "speedup"), row.speedup_p_holm, bool(row.speedup_extrapolated))


def time_to_target_table(final: pd.DataFrame) -> pd.DataFrame:
    """AlgoPerf's form, for each method label run at two budgets or more of one unit: per target (the baseline's
    mean top-1 at each ladder budget), the ratio of the budgets at which the baseline and the method reach it,
    seed by seed, with a t interval on the logs and Holm over the table's rows."""
    rows = []
    methods = final[~final["is_baseline"].astype(bool)]
    for (method, settings), runs in methods.groupby(["method", "settings"], sort=False):
        if "expected_speedup" in runs and runs["expected_speedup"].notna().any():
            continue  # a control: an instrument check, read at its own budget
        units = {Budget.parse(b).unit for b in runs["budget"]}
        for unit in sorted(units):
            mine = {s: v for s, v in ladder(runs, unit).items() if len(v[0]) >= 2}
            base = baseline_rows(final, settings)
            theirs = {s: v for s, v in ladder(base, unit).items() if len(v[0]) >= 2}
            if not mine or not theirs:
                continue
            for budget, at in base.groupby("budget", sort=False):
                if Budget.parse(budget).unit != unit:
                    continue
                target = float(at["top1"].mean())
                m = paired.time_to_target(theirs, mine, target)
                rows.append({"method": method, "target": f"{target:.1f} (baseline at {budget})",
                             "target_budget": Budget.parse(budget).amount, "seeds": m.effect.n,
                             "ratio": m.effect.estimate, "ratio_low": m.effect.low, "ratio_high": m.effect.high,
                             "interval": m.effect.kind or None, "extrapolated": m.extrapolated, "p": m.effect.p,
                             "note": m.why})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table = table.sort_values(["method", "target_budget"], ignore_index=True).drop(columns="target_budget")
    table["p_holm"] = paired.holm(table["p"])
    table["verdict"] = [r.note if isinstance(r.note, str) else paired.speedup_text(
        paired.Effect(r.ratio, r.ratio_low, r.ratio_high, r.p, r.seeds, r.interval or ""), r.p_holm, r.extrapolated)
        for r in table.itertuples()]
    return table
