"""The tables of a report: one row per run at its final evaluation, then one row per method label and budget
with its figures over seeds, compared with its matched baseline (vtbench.studies.comparison)."""

import pandas as pd

from vtbench.studies.comparison import match_baselines

from .analysis import Interval, speedup, time_to_reach


def final_table(evals: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its final default-setting evaluation plus its totals."""
    final = evals[(evals["setting"] == "default") & (evals["point"] == 1.0)].copy()
    final["device_hours"] = final["train_s"] / 3600
    final["total_gflops"] = final["total_flops"] / 1e9
    memory = final["mem_allocated"].where(final["mem_allocated"].notna(), final["mem_rss"])
    final["peak_memory_gib"] = memory.astype(float) / 2**30  # a training peak: evaluation has its own columns
    return final


def summary_table(final: pd.DataFrame, evals: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per method label and budget: top-1 over seeds, cost, memory, throughput, energy, the matched baseline and
    the speed-up to reach its accuracy. `runs` (every run, whatever its status) decides the matching."""
    matched = match_baselines(runs).set_index(["method", "budget"])
    rows = []
    for (method, budget), group in final.groupby(["method", "budget"], sort=False):
        interval = Interval.of(group["top1"])
        row = {"method": method, "budget": budget, "seeds": len(group), "top1": interval.mean,  # completed seeds
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
        row.update(_speedup(evals, final, method, baseline, budget))
        rows.append(row)
    return pd.DataFrame(rows)


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


def _speedup(evals: pd.DataFrame, final: pd.DataFrame, method: str, baseline: str | None, budget: str) -> dict:
    """Baseline time / method time to reach the baseline's final top-1, with a bootstrap interval over seeds."""
    reference = final[(final["method"] == baseline) & (final["budget"] == budget)]
    if baseline is None or reference.empty:
        return {"speedup": None, "speedup_low": None, "speedup_high": None}
    target = reference["top1"].mean()
    curves = evals[evals["setting"] == "default"]

    def times(name):
        runs = curves[(curves["method"] == name) & (curves["budget"] == budget)]
        return [time_to_reach(run, target) for _, run in runs.groupby("run_id")]

    estimate, low, high = speedup(times(baseline), times(method))
    return {"speedup": estimate, "speedup_low": low, "speedup_high": high}
