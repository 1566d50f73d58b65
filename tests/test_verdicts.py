"""Verdicts that resolve, on one small real study trained once for the module: the baseline on a ladder of step
budgets, a method, the positive control and the placebo, three seeds each; its report (speed-up table,
instrument checks, resolving power, paired top-1, ladder figure) and `vtbench plan`."""

import shutil
from pathlib import Path

import pandas as pd
import pytest

from vtbench.cli import main

# a toy workload whose ladder rises over 4 to 16 steps: with the learned position table (the fixed one, the default
# from scratch, orders frames from the first step and at this scale makes the first rungs flat; its slope at the
# demo's scale is measured in docs/calibration.md)
BASE = ("base: {frames: 4, size: 16, batch_size: 4, eval_clips: 64, eval_every: 0.5, eval_sweep: [],\n"
        "       data_args: {num_classes: 4, grading: 0},\n"
        "       model_args: {dim: 32, depth: 1, heads: 2, tubelet: [2, 4, 4], pos_embed: separable}}\n")
# the baseline's ladder, and a method, two placebos and the positive control at the ladder's first rung, which rises
# for every seed (asserted below)
GRID = ("methods: [{methods: [], budgets: [4steps, 8steps, 16steps]}, [{token_dropout: {keep: 0.5}}], [placebo],\n"
        "          [{placebo: {vary: all}}], [{control: {speedup: 2}}]]\nbudgets: [4steps]\nseeds: [0, 1, 2]\n")


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("verdicts")
    grid = root / "verdicts.yaml"
    grid.write_text(f"study: verdicts\n{BASE}{GRID}")
    assert main(["grid", str(grid), "--out", str(root / "results"), "--no-progress"]) == 0
    return root / "results" / "verdicts"


@pytest.fixture(scope="module")
def report(study) -> Path:
    out = study.parent.parent / "report"
    with pytest.MonkeyPatch.context() as patch:  # the paper-scale estimate (tested in test_report.py) takes 10 s
        patch.setattr("vtbench.report.reproduction.paper_scale",
                      lambda name, claim, params=(): (float("nan"), float("nan")))
        assert main(["report", str(study), "--out", str(out)]) == 0
    return out


def _runs(study):
    from vtbench.studies.table import runs_table

    return runs_table(study).set_index(["method", "budget", "seed"])["final_top1"]


def test_the_speedup_is_a_number_with_an_interval_where_a_baseline_seed_ends_below_the_mean(study, report):
    top1 = _runs(study).sort_index()
    at_4 = top1.loc[("baseline", "4steps")]
    assert (at_4 < at_4.mean()).any()  # the case that read "not reached" before
    summary = pd.read_csv(report / "tables" / "summary.csv").set_index("method")
    row = summary.loc["token_dropout:keep=0.5"]
    assert row["speedup"] > 0 and row["speedup_low"] <= row["speedup"] <= row["speedup_high"]
    assert row["speedup_interval"] == "t, 3 seeds" and row["speedup_seeds"] == 3
    assert 0 <= row["speedup_p"] <= 1 and 0 <= row["speedup_p_holm"] <= 1
    assert row["speedup_extrapolated"] in (True, False)
    for column in ("speedup", "speedup_low", "speedup_high", "speedup_interval", "speedup_extrapolated",
                   "speedup_p", "expected_speedup"):
        assert column in summary
    assert "not reached" not in (report / "tables" / "summary.md").read_text()
    assert pd.isna(summary.loc["token_dropout:keep=0.5", "expected_speedup"])
    assert summary.loc["placebo", "expected_speedup"] == 1


def test_the_positive_control_trains_the_baselines_runs_at_twice_the_budget_and_reads_two(study, report):
    top1 = _runs(study)
    for seed in (0, 1, 2):  # charged half of each step, it trains 8 steps: the baseline's 8-step run exactly
        assert top1.loc[("control:speedup=2", "4steps", seed)] == top1.loc[("baseline", "8steps", seed)]
        assert top1.loc[("baseline", "4steps", seed)] < top1.loc[("baseline", "8steps", seed)]  # a rising rung
    row = pd.read_csv(report / "tables" / "summary.csv").set_index("method").loc["control:speedup=2"]
    assert row["expected_speedup"] == 2
    assert row["speedup"] == pytest.approx(2.0) and row["speedup_low"] <= 2.0 <= row["speedup_high"]
    assert row["speedup_ratios"] == "2 2 2" and not row["speedup_extrapolated"]
    text = (report / "report.md").read_text()
    check = next(x for x in text.splitlines() if x.startswith("- **Instrument check**, control:speedup=2"))
    assert "passes, the interval holds 2 and excludes 1" in check
    placebo = next(x for x in text.splitlines() if x.startswith("- **Instrument check**, placebo"))
    assert "(expected 1x)" in placebo and ("passes" in placebo or "FAILS" in placebo or "cannot" in placebo)


def test_the_report_opens_with_the_speedup_then_checks_power_and_paired_top1(report):
    text = (report / "report.md").read_text()
    headings = ["## Speed-up at equal top-1", "## Instrument checks", "## Resolving power",
                "## The baseline's ladder", "## Top-1 at equal budget", "## Summary", "## Reproduction",
                "![ladder](figures/ladder.png)"]
    positions = [text.index(h) for h in headings]
    assert positions == sorted(positions)
    speed = text.split(headings[0])[1].split("\n## ")[0]
    assert "| verdict" in speed and "| p (Holm)" in speed and "t, 3 seeds" in speed
    assert "control:speedup=2 (control)" in speed and "| 2.00x [2.00, 2.00]" in speed
    power = text.split(headings[2])[1].split("\n## ")[0]
    assert "From the positive control" in power
    for placebo in ("placebo", "placebo:vary=all"):  # its paired spread, or why its speed-up has none
        assert any(x.startswith("- From the placebo") and f"({placebo}, 4steps" in x for x in power.splitlines())
    assert "Per method" in power
    paired = text.split(headings[4])[1].split("\n## ")[0]
    assert "| token_dropout:keep=0.5 " in paired and "| placebo " in paired
    for name in ("ladder", "ladder_wide", "pareto_train_s", "curves"):
        assert (report / "figures" / f"{name}.png").stat().st_size > 0
        assert (report / "figures" / f"{name}.pdf").stat().st_size > 0


def test_the_report_gives_the_ladders_gain_per_doubling_and_the_placebos_spread_in_points(study, report):
    top1 = _runs(study).sort_index()
    text = (report / "report.md").read_text()
    ladder = text.split("## The baseline's ladder")[1].split("\n## ")[0]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in ladder.splitlines() if line.startswith("| ") and "steps" in line}
    assert list(rows) == ["4steps", "8steps", "16steps"]
    for budget, below, doublings in (("8steps", "4steps", 1), ("16steps", "8steps", 1)):
        gains = (top1.loc[("baseline", budget)] - top1.loc[("baseline", below)]) / doublings
        assert rows[budget][3] == f"{gains.mean():+.1f}" and rows[budget][4] == f"{gains.min():+.1f}"
        assert rows[budget][5] == "3"
    assert rows["4steps"][3] == "" and float(rows["4steps"][2]) == pytest.approx(
        top1.loc[("baseline", "4steps")].std(), abs=0.0051)
    spread = next(x for x in text.splitlines() if x.startswith("- The placebo's paired spread in top-1 (placebo, "))
    differences = top1.loc[("placebo", "4steps")] - top1.loc[("baseline", "4steps")]
    assert f"**{differences.std():.2f} points** (3 seeds, each run scored on 64 clips)" in spread


def test_plan_gives_the_seeds_each_comparison_needs(study, tmp_path, capsys):
    assert main(["plan", str(study), "--speedup", "1.5", "--out", str(tmp_path / "plan")]) == 0
    printed = capsys.readouterr().out
    assert "speed-up of 1.5x with power 0.8" in printed and "seeds needed" in printed
    plan = pd.read_csv(tmp_path / "plan" / "plan.csv").set_index("method")
    assert set(plan.index) == {"token_dropout:keep=0.5", "placebo", "placebo:vary=all", "control:speedup=2"}
    assert (tmp_path / "plan" / "plan.md").read_text().startswith("Seeds for a paired t-test")
    control = plan.loc["control:speedup=2"]  # no spread: two seeds resolve anything
    assert float(control["seeds needed"]) == 2 and control["status"] == "enough: power 1.00 at 3 seeds"
    assert control["budget cost"] == "2 x (4 + 4 + 8) = 32steps" and control["overhead (s)"] > 0
    for method in ("token_dropout:keep=0.5", "placebo", "placebo:vary=all"):
        row = plan.loc[method]
        assert row["status"].startswith(("under-powered", "enough", "cannot plan"))
        if not row["status"].startswith("cannot plan"):
            assert row["sd(log r)"] > 0 and int(row["seeds needed"]) >= 2


def _copy(study: Path, to: Path, keep) -> Path:
    """A study folder holding the runs of `study` whose (method, budget, seed) `keep` accepts."""
    from vtbench.studies.table import runs_table

    to.mkdir(parents=True)
    for run in runs_table(study).itertuples():
        if keep(run.method, run.budget, run.seed):
            shutil.copytree(study / run.run_id, to / run.run_id)
    return to


def test_plan_works_on_a_calibration_study_of_the_ladder_and_a_placebo(study, tmp_path, capsys):
    calibration = _copy(study, tmp_path / "calibration", lambda m, b, s: m in ("baseline", "placebo"))
    assert main(["plan", str(calibration)]) == 0
    assert "| placebo " in capsys.readouterr().out


def test_plan_names_what_is_missing(study, tmp_path, capsys):
    no_ladder = _copy(study, tmp_path / "no_ladder", lambda m, b, s: b == "4steps")
    assert main(["plan", str(no_ladder)]) == 2
    assert "no baseline ladder" in capsys.readouterr().err
    one_seed = _copy(study, tmp_path / "one_seed", lambda m, b, s: s == 0)
    assert main(["plan", str(one_seed)]) == 2
    assert "one seed" in capsys.readouterr().err
    assert main(["plan", str(study), "--power", "1.5"]) == 2
