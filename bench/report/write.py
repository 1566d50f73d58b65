"""`vtbench report STUDY_DIR`: Markdown report, paper-ready figures (PDF and PNG) and tables (LaTeX booktabs,
Markdown and CSV) from a study's runs. Every row is compared with its matched baseline only
(vtbench.studies.comparison), seed by seed (vtbench.report.paired).

The report opens with the equal-accuracy speed-up of each method, then the instrument checks (the positive
control and the placebo) and the study's resolving power, then top-1 at equal budget, then the summary table,
the reproduction section and the figures."""

import math
from pathlib import Path

import pandas as pd

from vtbench.core.budget import Budget
from vtbench.engine.steplog import DATA_BOUND_SHARE, IN_LINE_BOUND_SHARE
from vtbench.errors import VtbenchError
from vtbench.studies.status import ENDED, entry_line, study_status
from vtbench.studies.table import runs_table, stale_runs, study_table

from . import paired
from .analysis import Interval
from .figures import COSTS, WIDTHS, curves_figure, ladder_figure, looks, pareto_figure, save, settings_figure, style
from .reproduction import markdown as reproduction_markdown
from .reproduction import reproduction_table
from .tables import final_table, summary_table, time_to_target_table
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
        has_ladder = ladder_figure(final, table, figures / f"ladder{suffix}", width, styles)
    markdown = _write_tables(table, out / "tables")
    unended = _stale(study_dir) + _unended(study_dir)
    if tuning:  # the trials are the study: their section, then the runs' curves (tables/ has the rest)
        lines = [f"# Study {study_dir.name}", "", *unended, *tuning, "", "## Runs", "",
                 f"{len(final)} runs; their final top-1 and costs in tables/summary.md.", "",
                 "![curves](figures/curves.png)"]
        (out / "report.md").write_text("\n".join(lines) + "\n")
        return out / "report.md"
    targets = time_to_target_table(final)
    lines = [f"# Study {study_dir.name}", "", *unended,
             f"{len(final)} runs. Each row is compared seed by seed with the baseline named in its `baseline` "
             "column (the same settings but the method list); p-values are Holm-adjusted over the study's "
             "comparisons, and a verdict is given only where the adjusted p is below 0.05.", "",
             *_speedup_section(table), *_targets_section(targets, out / "tables"),
             *_instrument_checks(table), *_resolving_power(table, final), *_ladder_section(final),
             *_accuracy_section(final, table),
             "## Summary", "", "Final top-1 on the default evaluation, costs and both comparisons per row "
             "(tables/summary.csv holds every column).", "", markdown, "", *_loaded_runs(runs), *_data_sections(runs),
             *_reproduction(final, evals, table, out / "tables"), "",
             *(["![ladder](figures/ladder.png)", ""] if has_ladder else []),
             *[f"![{cost}](figures/pareto_{cost}.png)" for cost in COSTS], "",
             "![curves](figures/curves.png)"]
    if has_settings:
        lines += ["", "![settings](figures/settings.png)"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out / "report.md"


def _number(value, digits: str = ".2f") -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, digits)


def _ratio_cell(estimate: float, low: float, high: float) -> str:
    if math.isnan(estimate):
        return ""
    if math.isnan(low):
        return f"{estimate:.2f}x"
    return f"{estimate:.2f}x [{low:.2f}, {high:.2f}]"


def _compared(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["baseline"] != table["method"]]


def _speedup_section(table: pd.DataFrame) -> list[str]:
    """The headline table: each method's equal-accuracy speed-up off its baseline's budget ladder."""
    rows = []
    for r in _compared(table).itertuples():
        control = not math.isnan(r.expected_speedup)
        rows.append({"method": r.method + (" (control)" if control else ""), "budget": r.budget,
                     "seeds": int(r.speedup_seeds) or r.seeds,
                     "speed-up": _ratio_cell(r.speedup, r.speedup_low, r.speedup_high),
                     "interval": r.speedup_interval if isinstance(r.speedup_interval, str) else "",
                     "extrapolated": "yes" if r.speedup_extrapolated else "",
                     "p (Holm)": _number(r.speedup_p_holm, ".3g") + (" (unadjusted)" if control and not
                                                                    math.isnan(r.speedup_p_holm) else ""),
                     "resolves": _ratio_cell(paired.log_half_width(r.speedup_low, r.speedup_high), math.nan, math.nan)
                     if not math.isnan(r.speedup_low) and r.speedup_low > 0 else "",
                     "verdict": r.speedup_verdict})
    if not rows:
        return []
    return ["## Speed-up at equal top-1", "",
            "How much less budget the method needs for its own top-1 than its baseline: per seed s, the budget at "
            "which baseline seed s reaches method seed s's final top-1, read off the baseline's ladder (its final "
            "top-1 at each budget, interpolated against log budget; outside the ladder an end segment is extended "
            "and the row marked extrapolated), over the method's budget. The estimate is the geometric mean over "
            "seeds, the interval a Student t interval on the log ratios, "
            "exponentiated. `resolves`: the interval's half-width on the log scale, the smallest speed-up this "
            "row's own spread could resolve. Controls are instrument checks, not claims: their p is unadjusted.",
            "", pd.DataFrame(rows).to_markdown(index=False), ""]


def _targets_section(targets: pd.DataFrame, folder: Path) -> list[str]:
    """Time to fixed targets (AlgoPerf's form), for methods run at several budgets."""
    if targets.empty:
        return []
    targets.to_csv(folder / "time_to_target.csv", index=False)
    shown = pd.DataFrame({"method": targets["method"], "target top-1": targets["target"], "seeds": targets["seeds"],
                          "ratio": [_ratio_cell(*v) for v in zip(targets["ratio"], targets["ratio_low"],
                                                                 targets["ratio_high"], strict=True)],
                          "interval": targets["interval"].fillna(""),
                          "extrapolated": ["yes" if e else "" for e in targets["extrapolated"]],
                          "p (Holm)": [_number(p, ".3g") for p in targets["p_holm"]], "verdict": targets["verdict"]})
    (folder / "time_to_target.md").write_text(shown.to_markdown(index=False) + "\n")
    return ["### Time to fixed targets", "",
            "For methods run at several budgets: the targets are the baseline's mean top-1 at each of its budgets; "
            "per seed, the budget at which the baseline's ladder reaches a target over the budget at which the "
            "method's own ladder does (both interpolated against log budget). A secondary figure; Holm over this "
            "table's rows.", "", shown.to_markdown(index=False), ""]


def _controls(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["expected_speedup"].notna() & (table["baseline"] != table["method"])]


def _instrument_checks(table: pd.DataFrame) -> list[str]:
    """One line per control row (summary.json's expected_speedup, never the method's name): a positive control
    passes when its interval holds its expected speed-up and excludes 1; a placebo when it is not resolved."""
    lines = ["## Instrument checks", ""]
    controls = _controls(table)
    if controls.empty:
        return [*lines, "No control in this study: nothing shows that it could see a known speed-up, or that it "
                "reads none where there is none. Add `{control: {speedup: 2}}` and `placebo` to its methods.", ""]
    for r in controls.itertuples():
        expected, measured = r.expected_speedup, _ratio_cell(r.speedup, r.speedup_low, r.speedup_high)
        head = f"- **Instrument check**, {r.method} at {r.budget} (expected {expected:g}x): "
        if math.isnan(r.speedup):
            lines.append(head + f"cannot be checked: {r.speedup_note or 'no speed-up'}.")
        elif math.isnan(r.speedup_low):
            lines.append(head + f"{measured} from one seed: cannot be checked without an interval.")
        elif expected > 1:
            slack = 1e-9 * expected  # a point interval of identical seeds may sit a rounding away
            holds, excludes = r.speedup_low - slack <= expected <= r.speedup_high + slack, r.speedup_low > 1
            verdict = "passes" if holds and excludes else "FAILS"
            why = (f"the interval holds {expected:g} and excludes 1" if holds and excludes else
                   "; ".join(w for w, bad in ((f"the interval misses {expected:g}", not holds),
                                              ("the interval holds 1", not excludes)) if bad))
            lines.append(head + f"{measured} ({r.speedup_interval}): {verdict}, {why}.")
        else:
            unresolved = not paired.resolved(r.speedup_p)
            lines.append(head + f"{measured} ({r.speedup_interval}, p = {r.speedup_p:.3g}): "
                         + ("passes, not resolved from 1." if unresolved else "FAILS, resolved from 1 at p < 0.05: "
                            "the instrument reads an effect where there is none."))
    return [*lines, ""]


def _resolving_power(table: pd.DataFrame, final: pd.DataFrame) -> list[str]:
    """The smallest speed-up the study could resolve: from the positive control's interval and from the
    placebo's paired spread; each method's own is the `resolves` column of the speed-up table."""
    lines = ["## Resolving power", ""]
    for r in _controls(table).itertuples():
        lines += _control_power(r)
        if r.expected_speedup == 1:
            lines += _placebo_spread(final, r)
    if len(lines) == 2:
        lines.append("- Unknown: no control with an interval (two seeds or more) in this study.")
    lines.append("- Per method: the `resolves` column of the speed-up table, the half-width of its own interval "
                 "(`vtbench plan STUDY_DIR` gives the seeds needed for a given speed-up).")
    return [*lines, ""]


def _control_power(r) -> list[str]:
    """What one control's speed-up says of the smallest speed-up the study resolves."""
    if r.expected_speedup == 1 and isinstance(r.speedup_note, str):
        return [f"- From the placebo ({r.method}, {r.budget}): none, its speed-up is {r.speedup_note} (a longer "
                "ladder would hold it); its top-1 at equal budget is in the paired table below."]
    if math.isnan(r.speedup_low) or r.speedup_low <= 0:
        return []
    if r.expected_speedup > 1:
        half = paired.log_half_width(r.speedup_low, r.speedup_high)
        line = (f"- From the positive control ({r.method}, {r.budget}, {r.speedup_interval}): the half-width of "
                f"its interval on the log scale, exp(half-width) = **{half:.2f}x**.")
        if half == 1:
            line += (" Its seeds agree exactly: it trains the baseline's own runs (the clock charges it less, "
                     "nothing else differs), so it carries none of the runs' noise; read the placebo's figure.")
        return [line]
    if not isinstance(r.speedup_ratios, str):
        return []
    ratios = [float(x) for x in r.speedup_ratios.split()]
    return [f"- From the placebo's paired spread ({r.method}, {r.budget}, {len(ratios)} seeds): "
            f"exp(t_0.975,{len(ratios) - 1} x sd(log r) / sqrt({len(ratios)})) = "
            f"**{paired.spread_resolves(ratios):.2f}x**: a true speed-up smaller than this is not "
            "resolved from 1 at this spread and seed count."]


def _placebo_spread(final: pd.DataFrame, r) -> list[str]:
    """The placebo's paired spread in points of top-1, with the clips its runs were scored on."""
    differences = _paired_differences(final, r.method, r.baseline, r.budget)
    if len(differences) < 2:
        return []
    clips = final.loc[(final["method"] == r.method) & (final["budget"] == r.budget), "clips"].iloc[0]
    return [f"- The placebo's paired spread in top-1 ({r.method}, {r.budget}): sd over seeds of (placebo minus "
            f"baseline, same seed) = **{differences.std(ddof=1):.2f} points** ({len(differences)} seeds, each run "
            f"scored on {int(clips)} clips)."]


def _paired_differences(final: pd.DataFrame, method: str, baseline: str, budget: str) -> pd.Series:
    """Top-1 of `method` minus that of `baseline` at `budget`, seed by seed, over the seeds both have."""
    at = final[final["budget"] == budget]
    mine = at[at["method"] == method].set_index("seed")["top1"]
    theirs = at[at["method"] == baseline].set_index("seed")["top1"]
    return (mine - theirs).dropna()


def _ladder_section(final: pd.DataFrame) -> list[str]:
    """The baseline's ladder, one per settings key and budget unit with two budgets or more (as the speed-ups read
    them): top-1 at each budget, and what each doubling of budget buys, seed by seed."""
    lines = []
    for _, rows in final[final["is_baseline"].astype(bool)].groupby("settings", sort=False):
        units = rows["budget"].map(lambda b: Budget.parse(b).unit)
        for unit in units.unique():
            ladder = sorted(rows[units == unit].groupby("budget"), key=lambda item: Budget.parse(item[0]).amount)
            if len(ladder) >= 2:
                table = _ladder_rows(ladder).to_markdown(index=False, disable_numparse=True)
                lines += [f"**{rows['method'].iloc[0]}**, budgets in {unit}", "", table, ""]
    if not lines:
        return []
    return ["## The baseline's ladder", "",
            "Final top-1 at each budget of the baseline's ladder (mean over seeds, 95% interval on the logit scale); "
            "the gain per doubling of budget is the mean over the seeds run at both rungs (`paired seeds`) of seed "
            "s's gain from the rung below, over the doublings between them. A workload whose gain falls toward zero "
            "has stopped learning within the ladder, and speed-ups read off it lose their resolution.", "", *lines]


def _ladder_rows(ladder: list[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    out, below = [], None
    for budget, group in ladder:
        top1 = group.set_index("seed")["top1"]
        row = {"budget": budget, "seeds": str(len(top1)), "top-1": str(Interval.of(top1)),
               "sd over seeds": f"{top1.std(ddof=1):.2f}" if len(top1) > 1 else "",
               "gain per doubling": "", "smallest seed's gain": "", "paired seeds": ""}
        if below is not None:
            doublings = math.log2(Budget.parse(budget).amount / Budget.parse(below[0]).amount)
            gains = (top1 - below[1]).dropna() / doublings
            if len(gains):
                row.update({"gain per doubling": f"{gains.mean():+.1f}", "smallest seed's gain": f"{gains.min():+.1f}",
                            "paired seeds": str(len(gains))})
        out.append(row)
        below = (budget, top1)
    return pd.DataFrame(out)


def _accuracy_section(final: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    """Top-1 at equal budget: the paired difference with its baseline, seed by seed."""
    rows = []
    for r in _compared(table).itertuples():
        if not isinstance(r.baseline, str):
            rows.append({"method": r.method, "budget": r.budget, "seeds": r.seeds, "top-1": "", "baseline": "",
                         "difference": "", "p (Holm)": "", "verdict": f"not compared: {r.comparison}"})
            continue
        mine = Interval.of(final[(final["method"] == r.method) & (final["budget"] == r.budget)]["top1"])
        theirs = Interval.of(final[(final["method"] == r.baseline) & (final["budget"] == r.budget)]["top1"])
        difference = "" if math.isnan(r.top1_diff) else (
            f"{r.top1_diff:+.1f}" + ("" if math.isnan(r.top1_diff_low) else
                                     f" [{r.top1_diff_low:+.1f}, {r.top1_diff_high:+.1f}]"))
        rows.append({"method": r.method, "budget": r.budget, "seeds": int(r.top1_diff_seeds), "top-1": str(mine),
                     "baseline": f"{r.baseline} {theirs}", "difference": difference,
                     "p (Holm)": _number(r.top1_diff_p_holm, ".3g"), "verdict": r.top1_diff_verdict})
    if not rows:
        return []
    return ["## Top-1 at equal budget", "",
            "Final top-1 (mean over seeds, 95% interval on the logit scale) against the baseline's at the same "
            "budget; the difference is paired by seed (method seed s minus baseline seed s, Student t).", "",
            pd.DataFrame(rows).to_markdown(index=False), ""]


def _stale(study_dir: Path) -> list[str]:
    """Runs left out because their settings now make another run (a method's default changed since they ran)."""
    stale = stale_runs(study_dir)
    if not stale:
        return []
    return [f"**{len(stale)} runs left out**: their config.yaml now names another run (a method's default changed "
            f"since they ran), so they are not its results: {', '.join(stale)}. Delete them, or give the old value "
            "(`vtbench methods NAME` lists each parameter's default) to keep them in a study.", ""]


def _unended(study_dir: Path) -> list[str]:
    """A study still under way (or one whose failed cells will be retried): what has not ended, so that the
    report is read as covering the ended runs only."""
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
    """A warning section naming the runs that waited for cores other processes held (vtbench.engine.cpu): under a
    time budget they trained less; under any other budget they trained as much, and with the threads they began
    with their results are a quiet run's (runs of versions that adapted threads under every budget may have
    changed them)."""
    if "load_warning" not in runs or not runs["load_warning"].notna().any():
        return []
    loaded = runs[runs["load_warning"].notna()]
    timed = loaded["budget"].map(lambda b: Budget.parse(str(b)).unit == "s")
    fewest = loaded["fewest_threads"] if "fewest_threads" in loaded else pd.Series(None, index=loaded.index)
    kept = ~timed & (fewest == loaded["threads"])  # unknown (older summaries): not vouched for
    changed = ~timed & ~kept
    lines = ["## Runs on a busy machine", ""]
    if timed.any():
        lines += [f"**{int(timed.sum())} of {len(runs)} runs** spent part of their time budget waiting for cores that "
                  "other processes held, so they trained less than a run on a quiet machine would; their figures are "
                  "not comparable with the others'. Run them again on a quiet machine (delete their folders, rerun the "
                  "grid).", ""]
    if kept.any():
        lines += [f"**{int(kept.sum())} of {len(runs)} runs** under a budget of FLOPs, steps or samples waited for "
                  "cores that other processes held: they trained as much as on a quiet machine, with the same "
                  "threads throughout, so their accuracy stands, but their time figures (clips/s, MFU, energy) are "
                  "not comparable with a quiet run's.", ""]
    if changed.any():
        lines += [f"**{int(changed.sum())} of {len(runs)} runs** under a budget of FLOPs, steps or samples waited for "
                  "cores that other processes held and changed their thread count on the way (or do not say), which "
                  "changes the order their sums add up in: they trained as much, but their results are not bitwise "
                  "a quiet run's and their time figures are not comparable. Run them again on a quiet machine to "
                  "reproduce them.", ""]
    lines += [f"- {r.method}, {r.budget}, seed {r.seed} ({r.run_id}): {r.threads} threads waited "
              f"{100 * r.wait_share:.0f}% of their time" for r in loaded.itertuples()]
    return [*lines, ""]


def _data_sections(runs: pd.DataFrame) -> list[str]:
    """The runs that were data-bound (their batches came slower than their model took them: a loader that fell behind
    by more than DATA_BOUND_SHARE of the time, or batches made in line over more than IN_LINE_BOUND_SHARE of it), and
    the runs that made their batches in line for more than DATA_BOUND_SHARE of their time without being bound: their
    figures count (a user's run pays the same), but a method's saving in model work shows less or not at all."""
    if "data_bound" not in runs or "data_wait_share" not in runs:
        return []
    ahead = runs["data_ahead"] if "data_ahead" in runs else pd.Series(None, index=runs.index, dtype=object)
    bound = runs["data_bound"] == True  # noqa: E712 - None where not measured
    share = pd.to_numeric(runs["data_wait_share"], errors="coerce")
    in_line = (ahead == False) & ~bound & (share > DATA_BOUND_SHARE)  # noqa: E712
    lines = []
    if bound.any():
        lines += ["## Data-bound runs", ""]
        groups = ((ahead == True, "waited for a loader that prepares batches while the model trains for more than "  # noqa: E712
                   f"{100 * DATA_BOUND_SHARE:.0f}% of their training time: the loader fell behind, so a method's "
                   "saving in model work cannot show in them"),
                  (ahead == False, "made their batches in line, between steps, and spent more than "  # noqa: E712
                   f"{100 * IN_LINE_BOUND_SHARE:.0f}% of their training time on them: their data took longer than "
                   "their model, so a method's saving in model work shows on less than half of their time"),
                  (ahead.isna(), "waited for their batches more than "
                   f"{100 * DATA_BOUND_SHARE:.0f}% of their training time (made by a version that did not record "
                   "whether its batches were prepared ahead)"))
        lines += [f"**{int((bound & rows).sum())} of {len(runs)} runs** {text}." for rows, text in groups
                  if (bound & rows).any()]
        lines += ["", "The time is on their clock, as it would be for a user, so their figures stand; on a time "
                  "budget a method saves less time than its FLOPs promise (a FLOP budget does not count the data's "
                  "time). Real videos can be fed faster (docs/data.md: decoding workers, a re-encoded copy, the "
                  "decoded cache, repeats).", ""]
        how = (ahead == False).map({True: "in line", False: "waiting"})  # noqa: E712
        lines += [f"- {r.method}, {r.budget}, seed {r.seed} ({r.run_id}): {100 * r.data_wait_share:.0f}% {way}"
                  for r, way in zip(runs[bound].itertuples(), how[bound], strict=True)]
        lines += [""]
    if in_line.any():
        typical = float(share[in_line].median())
        low, high = f"{100 * share[in_line].min():.0f}", f"{100 * share[in_line].max():.0f}"
        spread = f"{low}%" if low == high else f"{low} to {high}%"
        median = "" if low == high else f" (median {100 * typical:.0f}%)"
        lines += ["## Data made in line", "",
                  f"**{int(in_line.sum())} of {len(runs)} runs** made their batches in the training process, between "
                  f"steps (the synthetic renderer on a CPU, or decoding without workers), for {spread} of their "
                  f"training time{median}. Each method pays for its own clips there, and a saving in model work shows "
                  "on the rest of the time: at the median share, a method that halves the model's work runs at most "
                  f"{1 / (typical + (1 - typical) / 2):.2f}x as fast on a time budget, not 2x. These runs are not "
                  "data-bound: their data took less time than their model.", ""]
    return lines


def _reproduction(final: pd.DataFrame, evals: pd.DataFrame, table: pd.DataFrame, folder: Path) -> list[str]:
    """The reproduction section (vtbench.report.reproduction), also written to tables/reproduction.*."""
    rows = reproduction_table(final, evals, table)
    if rows.empty:
        return []
    rows.to_csv(folder / "reproduction.csv", index=False)
    (folder / "reproduction.md").write_text(reproduction_markdown(rows) + "\n")
    return ["## Reproduction", "",
            "Each paper's headline claim at this scale (top-1 against the method's own baseline at equal budget, "
            "paired by seed; \"holds\" only where the difference is resolved above zero after Holm's correction "
            "over this table's claims) and, at the paper's own model and input, the method's "
            "compute ratio (training FLOPs per clip, baseline over method, averaged over the run; Flux: the forward "
            "at a quarter of the tokens) and activation-memory ratio (baseline over the method's peak), from "
            "`vtbench estimate`, beside what the paper reports.", "", reproduction_markdown(rows)]


DETAIL = ("speedup_low", "speedup_high", "speedup_interval", "speedup_extrapolated", "speedup_p", "speedup_p_holm",
          "speedup_note", "speedup_seeds", "speedup_ratios", "speedup_verdict", "top1_diff_low", "top1_diff_high",
          "top1_diff_p", "top1_diff_p_holm", "top1_diff_seeds", "top1_diff_verdict", "comparison")


def _write_tables(table: pd.DataFrame, folder: Path) -> str:
    """summary.csv (every figure, with the matched baseline of each row), summary.tex and summary.md (the speed-up
    and the top-1 difference as text)."""
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "summary.csv", index=False)
    shown = table.copy()
    shown["speedup"] = [_speedup_text(r) for r in table.itertuples()]
    shown["top1_diff"] = [r.top1_diff_verdict if isinstance(r.top1_diff_verdict, str) else "" for r in
                          table.itertuples()]
    shown["baseline"] = [b if isinstance(b, str) else f"none: {c}" for b, c in zip(table["baseline"],
                                                                                   table["comparison"], strict=True)]
    shown = shown.drop(columns=list(DETAIL)).rename(columns={"top1_std": "top1_sd"})
    (folder / "summary.tex").write_text(shown.to_latex(index=False, float_format="%.3g", na_rep="--", escape=True))
    markdown = shown.to_markdown(index=False, floatfmt=".3g")
    (folder / "summary.md").write_text(markdown + "\n")
    return markdown


def _speedup_text(row) -> str:
    if row.baseline == row.method:
        return "1 (the baseline)"
    return row.speedup_verdict or ""
