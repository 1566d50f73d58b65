import shutil
from pathlib import Path

import pandas as pd

from vtbench.cli import main
from vtbench.report.analysis import pareto_front
from vtbench.report.write import _loaded_runs
from vtbench.studies.table import runs_table, stale_runs


def test_pareto_front_on_a_hand_made_table():
    table = pd.DataFrame({"cost": [1, 2, 3, 2, 4, 1], "top1": [50, 60, 55, 70, 80, 40]})
    assert pareto_front(table, "cost").tolist() == [True, False, False, True, True, False]


def test_equal_points_are_both_on_the_front():
    table = pd.DataFrame({"cost": [1, 1], "top1": [50, 50]})
    assert pareto_front(table, "cost").tolist() == [True, True]


def test_the_report_renders_from_a_small_real_grid(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "study: tiny\n"
        "base: {frames: 4, size: 16, batch_size: 4, eval_clips: 16, eval_every: 0.5,\n"
        "       eval_sweep: ['keep=0.5,random', 'keep=0.5,magnitude'],\n"
        "       model_args: {dim: 32, depth: 1, heads: 2, tubelet: [2, 4, 4]}}\n"
        "methods: [[], [{token_dropout: {keep: 0.5}}], [pss]]\nbudgets: [8steps, 16steps]\nseeds: [0, 1]\n")
    out = tmp_path / "results"
    assert main(["grid", str(grid), "--out", str(out), "--no-progress"]) == 0  # in process, as the report
    report = tmp_path / "report"
    assert main(["report", str(out / "tiny"), "--out", str(report)]) == 0  # in process: shares the estimate cache
    text = (report / "report.md").read_text()
    assert "12 runs" in text and "baseline" in text
    accuracy = _section(text, "## Top-1 at equal budget")
    speed = _section(text, "## Speed-up at equal top-1")  # the baseline at 8 and 16 steps is a ladder
    for method in ("token_dropout:keep=0.5", "pss"):  # two seeds: a paired interval each, at both budgets
        for budget in ("8steps", "16steps"):
            row = next(x for x in accuracy if x.startswith(f"| {method} ") and f"| {budget} " in x)
            assert row.count("[") >= 3  # the method's top-1, the baseline's, their difference (and the verdict)
            assert any(x.startswith(f"| {method} ") and f"| {budget} " in x for x in speed)
    for name in ("pareto_train_s", "pareto_total_gflops", "pareto_peak_memory_gib", "curves", "settings", "ladder",
                 "pareto_train_s_wide", "curves_wide", "settings_wide", "ladder_wide"):
        assert (report / "figures" / f"{name}.pdf").stat().st_size > 0
        assert (report / "figures" / f"{name}.png").stat().st_size > 0
    tex = (report / "tables" / "summary.tex").read_text()
    assert "\\toprule" in tex and "token\\_dropout" in tex
    assert (report / "tables" / "summary.md").read_text().count("\n") == 2 + 6
    # a run whose config no longer gives its own id (a method's default changed since it ran) is left out
    first = next(p for p in sorted((out / "tiny").iterdir()) if (p / "summary.json").exists())
    shutil.copytree(first, out / "tiny" / "000000000000")
    assert stale_runs(out / "tiny") == ["000000000000"] and len(runs_table(out / "tiny")) == 12


def _section(text: str, heading: str) -> list[str]:
    """The table rows of a report's section."""
    lines = text.split(heading + "\n", 1)[1].split("\n## ", 1)[0].splitlines()
    return [x for x in lines if x.startswith("| ") and not x.startswith("| method")]


def test_runs_of_one_time_budget_count_as_equally_costly():
    table = pd.DataFrame({"cost": [45.01, 45.00, 20.0], "top1": [78.0, 46.0, 27.0]})
    assert pareto_front(table, "cost").tolist() == [True, False, True]
    assert pareto_front(table, "cost", tolerance=0).tolist() == [True, True, True]


def _grid(tmp_path, methods: str, name="match") -> Path:
    grid = tmp_path / f"{name}.yaml"
    grid.write_text(
        f"study: {name}\n"
        "base: {frames: 4, size: 16, batch_size: 4, eval_clips: 16, eval_every: 0.5, eval_sweep: [],\n"
        "       model_args: {dim: 32, depth: 1, heads: 2, tubelet: [2, 4, 4]}}\n"
        f"methods: {methods}\nbudgets: [6steps]\nseeds: [0, 1]\n")
    out = tmp_path / "results"
    assert main(["grid", str(grid), "--out", str(out), "--no-progress"]) == 0
    return out / name


def test_each_row_is_compared_with_the_baseline_of_its_own_settings(tmp_path, monkeypatch):
    study = _grid(tmp_path, "[[], {methods: [], set: {arch: factorised}},\n"
                            "          {methods: [frozen_spatial], set: {arch: factorised}}, [token_dropout]]")
    report = tmp_path / "report"
    # the paper-scale estimates of the reproduction section (tested above) took 40 of 56 s here: ViViT-FE, 32 x 320^2
    monkeypatch.setattr("vtbench.report.reproduction.paper_scale",
                        lambda name, claim, params=(): (float("nan"), float("nan")))
    assert main(["report", str(study), "--out", str(report)]) == 0
    table = pd.read_csv(report / "tables" / "summary.csv").set_index("method")
    assert table.loc["frozen_spatial (factorised)", "baseline"] == "baseline (factorised)"
    assert table.loc["token_dropout", "baseline"] == "baseline"
    assert table.loc["baseline (factorised)", "baseline"] == "baseline (factorised)"
    text = (report / "report.md").read_text()
    line = next(x for x in _section(text, "## Top-1 at equal budget") if x.startswith("| frozen_spatial (factorised)"))
    assert "| baseline (factorised) " in line


def test_a_row_without_its_baseline_says_so_rather_than_borrowing_another(tmp_path):
    study = _grid(tmp_path, "[[], {methods: [frozen_spatial], set: {arch: factorised}}]", name="lonely")
    report = tmp_path / "report"
    assert main(["report", str(study), "--out", str(report)]) == 0
    row = pd.read_csv(report / "tables" / "summary.csv").set_index("method").loc["frozen_spatial (factorised)"]
    assert pd.isna(row["baseline"]) and row["comparison"] == "no baseline run with the same settings and budget"
    assert "none: no baseline run" in (report / "tables" / "summary.md").read_text()
    line = next(x for x in _section((report / "report.md").read_text(), "## Top-1 at equal budget")
                if x.startswith("| frozen_spatial (factorised)"))
    assert "not compared: no baseline run with the same settings and budget" in line


def test_reproduction_rows_follow_the_paired_verdict_and_the_paper_scale_estimate():
    from vtbench.report.reproduction import reproduction_table

    def final(method_top1):
        return pd.DataFrame([{"method": method, "budget": "20s", "setting": "default", "point": 1.0, "top1": top1,
                              "seed": seed} for method, values in method_top1.items()
                             for seed, top1 in enumerate(values)])

    table = pd.DataFrame([{"method": m, "budget": "20s", "baseline": "baseline"}
                          for m in ("baseline", "token_dropout:keep=0.5")])
    clear = final({"baseline": [40.0, 41.0, 42.0], "token_dropout:keep=0.5": [50.0, 51.5, 52.0]})
    rows = reproduction_table(clear, clear, table)
    assert rows["method"].tolist() == ["token_dropout:keep=0.5"]  # the baseline is no claim
    row = rows.iloc[0]
    assert row["holds here"] == "yes" and row["seeds"] == 3 and row["top1"].startswith("51.2 [")
    assert row["difference"] == "+10.2 [+9.4, +10.9]" and row["p (Holm)"] < 0.01
    assert 2.0 < row["compute ratio"] < 2.6 and row["memory ratio"] > 1.5  # keep 0.5 at ViT-B, 16 x 224^2
    # overlapping intervals, but every seed 1 point above its own baseline seed: resolved when paired
    shifted = final({"baseline": [30.0, 41.0, 52.0], "token_dropout:keep=0.5": [31.0, 42.1, 52.9]})
    assert reproduction_table(shifted, shifted, table).iloc[0]["holds here"] == "yes"
    # the same numbers paired the other way round: no consistent difference
    crossed = final({"baseline": [30.0, 41.0, 52.0], "token_dropout:keep=0.5": [52.9, 42.1, 31.0]})
    assert reproduction_table(crossed, crossed, table).iloc[0]["holds here"] == "not resolved"
    below = final({"baseline": [40.0, 41.0, 42.0], "token_dropout:keep=0.5": [35.0, 35.5, 37.0]})
    assert reproduction_table(below, below, table).iloc[0]["holds here"] == "no"


def test_busy_machine_runs_are_told_apart_by_what_the_crowd_could_change():
    runs = pd.DataFrame({
        "method": ["baseline", "tome", "tome", "tome"], "budget": ["20s", "6e11flops", "6e11flops", "6e11flops"],
        "seed": [0, 0, 1, 2], "run_id": ["a", "b", "c", "d"], "threads": [2, 2, 2, 2],
        "fewest_threads": [1, 2, 2, 1], "wait_share": [0.3, 0.2, 0.0, 0.3], "load_warning": ["w", "w", None, "w"]})
    text = "\n".join(_loaded_runs(runs))
    assert "**1 of 4 runs** spent part of their time budget" in text
    assert "**1 of 4 runs** under a budget of FLOPs, steps or samples waited" in text and "accuracy stands" in text
    assert "changed their thread count on the way" in text  # run d: made when every budget adapted its threads
    assert "(a)" in text and "(b)" in text and "(d)" in text and "(c)" not in text
    assert _loaded_runs(runs.iloc[2:3]) == []
    older = runs.drop(columns="fewest_threads").iloc[1:2]  # a summary table without the column: not vouched for
    assert "accuracy stands" not in "\n".join(_loaded_runs(older))
