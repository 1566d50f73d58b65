"""`vtbench report STUDY_DIR`: Markdown report, paper-ready figures (PDF and PNG) and tables (LaTeX booktabs,
Markdown and CSV) from a study's runs. Every row is compared with its matched baseline only
(vtbench.studies.comparison)."""

from pathlib import Path

import numpy as np
import pandas as pd

from vtbench.studies.table import runs_table, study_table

from .analysis import Interval, compare
from .figures import COSTS, WIDTHS, curves_figure, looks, pareto_figure, save, settings_figure, style
from .reproduction import markdown as reproduction_markdown
from .reproduction import reproduction_table
from .tables import final_table, summary_table
from .tuning import tuning_section


def write_report(study_dir: str | Path, out: str | Path) -> Path:
    style()
    study_dir, out = Path(study_dir), Path(out)
    evals = study_table(study_dir)
    tuning = tuning_section(study_dir, out, save)
    if evals.empty and not tuning:
        raise FileNotFoundError(f"{study_dir} holds no finished run")
    final = final_table(evals) if not evals.empty else evals
    if final.empty:  # a tuning study whose runs were all pruned
        (out / "report.md").write_text("\n".join([f"# Study {study_dir.name}", "", *tuning]) + "\n")
        return out / "report.md"
    runs = runs_table(study_dir)
    table = summary_table(final, evals, runs)
    order = {m: (not m.startswith("baseline"), m) for m in table["method"]}
    table = table.sort_values(["method", "device_hours"], key=lambda c: c.map(order) if c.name == "method" else c,
                              ignore_index=True)
    styles = looks(table["method"])
    figures = out / "figures"
    for suffix, width in WIDTHS.items():
        for cost in COSTS:
            pareto_figure(final, table, cost, figures / f"pareto_{cost}{suffix}", width, styles)
        curves_figure(evals, figures / f"curves{suffix}", width, styles)
        has_settings = settings_figure(evals, figures / f"settings{suffix}", width, styles)
    markdown = _write_tables(table, out / "tables")
    unended = _unended(study_dir)
    if tuning:  # the trials are the study: their section, then the runs' curves (tables/ has the rest)
        lines = [f"# Study {study_dir.name}", "", *unended, *tuning, "", "## Runs", "",
                 f"{len(final)} runs; their final top-1 and costs in tables/summary.md.", "",
                 "![curves](figures/curves.png)"]
        (out / "report.md").write_text("\n".join(lines) + "\n")
        return out / "report.md"
    verdicts = [verdict(final, table, method) for method in table["method"].unique()
                if not method.startswith("baseline")]
    lines = [f"# Study {study_dir.name}", "", *unended,
             f"{len(final)} runs. Final top-1 on the default evaluation; each row is compared with the baseline "
             "named in its `baseline` column (the same settings but the method list).",
             "", markdown, "", *_loaded_runs(runs), "## Verdicts", "",
             "Top-1 at each budget against the method's own baseline at the same budget (equal cost), mean over seeds "
             "with its 95% interval; a method moves the frontier only where its interval clears the baseline's.", "",
             *verdicts, "", *_reproduction(final, evals, table, out / "tables"), "",
             *[f"![{cost}](figures/pareto_{cost}.png)" for cost in COSTS], "",
             "![curves](figures/curves.png)"]
    if has_settings:
        lines += ["", "![settings](figures/settings.png)"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out / "report.md"


def _unended(study_dir: Path) -> list[str]:
    """A study still under way (or one whose failed cells will be retried): what has not ended, so that the
    report is read as covering the ended runs only."""
    from vtbench.errors import VtbenchError
    from vtbench.studies.status import ENDED, entry_line, study_status

    if not (study_dir / "study.json").exists():
        return []
    try:
        status = study_status(study_dir)
    except VtbenchError:  # a tuning study in a database this report cannot reach: its trials table still counts
        return []
    left = [e for e in status["entries"] if e["state"] not in ENDED and not e.get("retried")
            and not (e["state"] == "failed" and not e.get("retries_left"))]
    if not left:
        return []
    noun = "cells" if status["kind"] == "grid" else "trials"
    return ["## Not ended yet", "", f"{len(left)} of {len(status['entries'])} {noun} have not ended (`vtbench status "
            f"{study_dir}` follows them); this report covers the runs that have:", "", "```",
            *[entry_line(e) for e in left], "```", ""]


def _loaded_runs(runs: pd.DataFrame) -> list[str]:
    """A warning section naming the runs whose time budget other processes shared (vtbench.engine.cpu)."""
    if "load_warning" not in runs or not runs["load_warning"].notna().any():
        return []
    loaded = runs[runs["load_warning"].notna()]
    lines = ["## Runs on a busy machine", "",
             f"**{len(loaded)} of {len(runs)} runs** spent part of their time budget waiting for cores that other "
             "processes held, so they trained less than a run on a quiet machine would; their figures are not "
             "comparable with the others'. Run them again on a quiet machine (delete their folders, rerun the grid).",
             ""]
    lines += [f"- {r.method}, {r.budget}, seed {r.seed} ({r.run_id}): {r.threads} threads waited "
              f"{100 * r.wait_share:.0f}% of their time" for r in loaded.itertuples()]
    return [*lines, ""]


def _reproduction(final: pd.DataFrame, evals: pd.DataFrame, table: pd.DataFrame, folder: Path) -> list[str]:
    """The reproduction section (vtbench.report.reproduction), also written to tables/reproduction.*."""
    rows = reproduction_table(final, evals, table)
    if rows.empty:
        return []
    rows.to_csv(folder / "reproduction.csv", index=False)
    (folder / "reproduction.md").write_text(reproduction_markdown(rows) + "\n")
    return ["## Reproduction", "",
            "Each paper's headline claim at this scale (top-1 against the method's own baseline at equal budget; "
            "\"holds\" only where the intervals clear) and, at the paper's own model and input, the method's "
            "compute ratio (training FLOPs per clip, baseline over method, averaged over the run; Flux: the forward "
            "at a quarter of the tokens) and activation-memory ratio (baseline over the method's peak), from "
            "`vtbench estimate`, beside what the paper reports.", "", reproduction_markdown(rows)]


def _write_tables(table: pd.DataFrame, folder: Path) -> str:
    """summary.csv (the figures, with the matched baseline of each row), summary.tex and summary.md."""
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "summary.csv", index=False)
    shown = table.copy()
    shown["speedup"] = [_speedup_text(r) for r in table.itertuples()]
    shown["baseline"] = [b if isinstance(b, str) else f"none: {c}" for b, c in zip(table["baseline"],
                                                                                   table["comparison"], strict=True)]
    shown = shown.drop(columns=["speedup_low", "speedup_high", "comparison"]).rename(columns={"top1_std": "top1_sd"})
    (folder / "summary.tex").write_text(shown.to_latex(index=False, float_format="%.3g", na_rep="--", escape=True))
    markdown = shown.to_markdown(index=False, floatfmt=".3g")
    (folder / "summary.md").write_text(markdown + "\n")
    return markdown


def _speedup_text(row) -> str:
    if row.baseline == row.method:
        return "1"
    if not isinstance(row.baseline, str):
        return "no baseline"
    if row.speedup is None or (isinstance(row.speedup, float) and np.isnan(row.speedup)):
        return "not reached"
    return f"{row.speedup:.2f} [{row.speedup_low:.2f}, {row.speedup_high:.2f}]"


VERDICTS = {"above": "moves the frontier", "below": "below its baseline", "not resolved": "not resolved at this budget"}


def verdict(final: pd.DataFrame, table: pd.DataFrame, method: str) -> str:
    """Per budget: does `method` move the frontier its own baseline draws at equal cost? Only when its 95%
    interval over seeds clears the baseline's (vtbench.report.analysis.compare)."""
    parts = []
    for row in table[table["method"] == method].itertuples():
        if not isinstance(row.baseline, str):
            parts.append(f"{row.budget}: not compared ({row.comparison})")
            continue
        mine = Interval.of(final[(final["method"] == method) & (final["budget"] == row.budget)]["top1"])
        theirs = Interval.of(final[(final["method"] == row.baseline) & (final["budget"] == row.budget)]["top1"])
        parts.append(f"{row.budget}: {VERDICTS[compare(mine, theirs)]} ({mine} against {row.baseline} {theirs})")
    return f"- **{method}**: " + "; ".join(parts) + "."
