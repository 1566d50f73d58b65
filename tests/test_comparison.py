"""Labels and baseline matching (vtbench.studies.comparison), on hand-made runs tables."""

import pandas as pd

from vtbench.engine.config import MethodSpec, RunConfig
from vtbench.studies.comparison import labels, match_baselines, settings_key, settings_of


def _runs(configs, seeds=None):
    configs = [c.resolve() for c in configs]
    return pd.DataFrame({
        "method": labels(configs), "budget": [c.budget for c in configs],
        "seed": seeds or [c.seed for c in configs],
        "settings": [settings_key(settings_of(c)) for c in configs], "is_baseline": [not c.methods for c in configs]})


TD = [MethodSpec("token_dropout", {"keep": 0.5})]


def test_labels_name_only_what_tells_rows_apart():
    configs = [RunConfig(), RunConfig(lr=0.01), RunConfig(methods=TD), RunConfig(arch="factorised"),
               RunConfig(model_args={"depth": 4}, methods=TD), RunConfig(seed=1), RunConfig(budget="20s")]
    assert labels([c.resolve() for c in configs]) == [
        "baseline", "baseline (lr=0.01)", "token_dropout:keep=0.5", "baseline (factorised)",
        "token_dropout:keep=0.5 (model_args.depth=4)", "baseline", "baseline"]


def test_a_baseline_matches_on_settings_budget_and_seeds():
    configs = [RunConfig(seed=s) for s in (0, 1)] + [RunConfig(methods=TD, seed=s) for s in (0, 1)] + [
        RunConfig(methods=TD, lr=0.01, seed=0), RunConfig(methods=TD, budget="20s", seed=0),
        RunConfig(lr=0.01, seed=1), RunConfig(methods=TD, lr=0.01, seed=1)]
    matched = match_baselines(_runs(configs)).set_index(["method", "budget"])
    assert matched.loc[("token_dropout:keep=0.5", "60s"), "baseline"] == "baseline"
    lr = matched.loc[("token_dropout:keep=0.5 (lr=0.01)", "60s")]
    assert pd.isna(lr["baseline"]) and "seeds [1] differ from [0, 1]" in lr["comparison"]
    other_budget = matched.loc[("token_dropout:keep=0.5", "20s")]
    assert pd.isna(other_budget["baseline"]) and other_budget["comparison"].startswith("no baseline run")


def test_a_failed_seed_stays_part_of_the_comparison():
    configs = [RunConfig(seed=s) for s in (0, 1)] + [RunConfig(methods=TD, seed=s) for s in (0, 1)]
    runs = _runs(configs)  # whatever their status: a diverged seed is an outcome, not a missing run
    matched = match_baselines(runs).set_index("method")
    assert matched.loc["token_dropout:keep=0.5", "baseline"] == "baseline"
    assert matched["runs"].tolist() == [2, 2]


def test_a_baseline_without_a_completed_run_gives_no_comparison():
    from vtbench.report.tables import summary_table

    configs = [RunConfig(seed=0), RunConfig(methods=TD, seed=0)]
    runs = _runs(configs)
    final = pd.DataFrame([{  # only the method's run completed; the baseline's diverged
        "run_id": "b", "method": "token_dropout:keep=0.5", "budget": "60s", "setting": "default", "point": 1.0,
        "seed": 0, "settings": runs["settings"].iloc[1], "is_baseline": False, "expected_speedup": None,
        "top1": 50.0, "train_s": 60.0, "device_hours": 1 / 60, "total_gflops": 1.0, "peak_memory_gib": 1.0,
        "mem_allocated": None, "mem_reserved": None, "mem_device": None, "mem_rss": 2**30, "clips_per_s": 100.0,
        "energy_j": None, "used_s": 60.0}])
    row = summary_table(final, final, runs).iloc[0]
    assert pd.isna(row["baseline"]) and row["comparison"] == "its baseline (baseline) has no completed run"
    assert pd.isna(row["top1_diff"]) and pd.isna(row["speedup"])
    assert row["speedup_note"].startswith("no baseline ladder")


def test_the_verdict_rule_pairs_seeds_and_gives_a_verdict_only_when_holm_resolves():
    from vtbench.report.tables import with_verdicts

    def row(method, diffs, p):
        from scipy import stats

        test = stats.ttest_1samp(diffs, 0)
        low, high = test.confidence_interval()
        return {"method": method, "budget": "20s", "baseline": "baseline", "seeds": len(diffs),
                "expected_speedup": float("nan"), "top1_diff": sum(diffs) / len(diffs), "top1_diff_low": low,
                "top1_diff_high": high, "top1_diff_p": test.pvalue if p is None else p,
                "top1_diff_seeds": len(diffs), "speedup": float("nan"), "speedup_low": float("nan"),
                "speedup_high": float("nan"), "speedup_p": float("nan"), "speedup_interval": None,
                "speedup_extrapolated": False, "speedup_note": "no baseline ladder", "speedup_seeds": 0}

    table = with_verdicts(pd.DataFrame([
        row("a", [10.0, 10.5, 9.5], None),  # every seed far above its own baseline seed
        row("b", [-3.0, -2.5, -3.5], None),
        row("c", [1.0, -2.0, 4.0], None),   # means differ, the paired spread is wider
        row("d", [0.5, 0.6, 0.7], 0.03),    # resolved alone (p 0.03), not after Holm over four comparisons
    ])).set_index("method")
    assert table.loc["a", "top1_diff_verdict"].endswith("points top-1 at equal budget")
    assert table.loc["a", "top1_diff_verdict"].startswith("+10.0 [")
    assert table.loc["b", "top1_diff_verdict"].startswith("-3.0 [")
    assert table.loc["c", "top1_diff_verdict"].startswith("not resolved: +1.0 [")
    assert table.loc["d", "top1_diff_p_holm"] > 0.05 and table.loc["d", "top1_diff_verdict"].startswith("not resolved")
    assert table.loc["a", "speedup_verdict"] == "no baseline ladder"
