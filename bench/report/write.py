"""`vtbench report STUDY_DIR`: Markdown report, paper-ready figures (PDF and PNG) and tables (LaTeX booktabs
and Markdown) from a study's runs."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from vtbench.report.analysis import pareto_front, speedup, time_to_reach  # noqa: E402
from vtbench.report.tuning import tuning_section  # noqa: E402
from vtbench.studies.table import study_table  # noqa: E402

COLUMN = (3.4, 2.5)  # inches: one column of a two-column paper
PAGE = (7.0, 2.8)
COSTS = {"device_hours": "device hours", "total_gflops": "training GFLOPs", "peak_memory_gib": "peak memory (GiB)"}


def _style() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"pdf.fonttype": 42, "ps.fonttype": 42, "savefig.bbox": "tight", "figure.dpi": 150})


def final_table(evals: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its final default-setting evaluation plus its totals."""
    final = evals[(evals["setting"] == "default") & (evals["point"] == 1.0)].copy()
    final["device_hours"] = final["train_s"] / 3600
    final["total_gflops"] = final["total_flops"] / 1e9
    memory = final["mem_allocated"].where(final["mem_allocated"].notna(), final["mem_rss"])
    final["peak_memory_gib"] = memory.astype(float) / 2**30
    return final


def summary_table(final: pd.DataFrame, evals: pd.DataFrame) -> pd.DataFrame:
    """Per method and budget: top-1 over seeds, cost, memory, throughput, energy, speed-up to the baseline."""
    rows = []
    for (method, budget), group in final.groupby(["method", "budget"], sort=False):
        row = {"method": method, "budget": budget, "seeds": len(group), "top1": group["top1"].mean(),
               "top1_std": group["top1"].std(ddof=1) if len(group) > 1 else 0.0,
               "device_hours": group["device_hours"].mean(), "total_gflops": group["total_gflops"].mean(),
               "peak_memory_gib": group["peak_memory_gib"].max(),
               "mem_allocated_gib": _gib(group["mem_allocated"]), "mem_reserved_gib": _gib(group["mem_reserved"]),
               "mem_device_gib": _gib(group["mem_device"]), "mem_rss_gib": _gib(group["mem_rss"]),
               "clips_per_s": group["clips_per_s"].mean(),
               "energy_kj": group["energy_j"].astype(float).mean() / 1000 if group["energy_j"].notna().any() else None}
        row.update(_speedup(evals, final, method, budget))
        rows.append(row)
    return pd.DataFrame(rows)


def _gib(values: pd.Series) -> float | None:
    values = values.dropna().astype(float)
    return values.max() / 2**30 if len(values) else None


def _speedup(evals: pd.DataFrame, final: pd.DataFrame, method: str, budget: str) -> dict:
    baseline = final[(final["method"] == "baseline") & (final["budget"] == budget)]
    if baseline.empty:
        return {"speedup": None, "speedup_low": None, "speedup_high": None}
    target = baseline["top1"].mean()
    curves = evals[evals["setting"] == "default"]

    def times(name):
        runs = curves[(curves["method"] == name) & (curves["budget"] == budget)]
        return [time_to_reach(run, target) for _, run in runs.groupby("run_id")]

    estimate, low, high = speedup(times("baseline"), times(method))
    return {"speedup": estimate, "speedup_low": low, "speedup_high": high}


def pareto_figure(table: pd.DataFrame, cost: str, path: Path) -> list[str]:
    """Accuracy against cost, one marker per method and budget, seeds as error bars, the frontier drawn."""
    fig, ax = plt.subplots(figsize=COLUMN)
    palette = dict(zip(table["method"].unique(), sns.color_palette("colorblind", table["method"].nunique()),
                       strict=True))
    for method, group in table.groupby("method", sort=False):
        ax.errorbar(group[cost], group["top1"], yerr=group["top1_std"], fmt="o", ms=4, capsize=2,
                    color=palette[method], label=method)
    front = table[pareto_front(table, cost)].sort_values(cost)
    ax.step(front[cost], front["top1"], where="post", color="0.3", lw=0.8, ls="--", label="Pareto frontier")
    members = [f"{r.method} @ {r.budget}" for r in front.itertuples()]
    for r in front.itertuples():
        ax.annotate(r.budget, (getattr(r, cost), r.top1), textcoords="offset points", xytext=(3, 3), fontsize=6)
    ax.set_xlabel(COSTS[cost])
    ax.set_ylabel("top-1 (%)")
    _readable_x(ax)
    ax.legend(fontsize=6, frameon=False)
    _save(fig, path)
    return members


def _readable_x(ax) -> None:
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 4))


def curves_figure(evals: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=COLUMN)
    curves = evals[evals["setting"] == "default"]
    sns.lineplot(data=curves, x=curves["used_s"] / 3600, y="top1", hue="method", units="run_id", estimator=None,
                 lw=0.8, ax=ax)
    ax.set_xlabel("device hours")
    ax.set_ylabel("top-1 (%)")
    _readable_x(ax)
    if curves["method"].nunique() <= 8:
        ax.legend(fontsize=6, frameon=False)
    else:  # a tuning study: one run per trial, too many to name
        ax.get_legend().remove()
    _save(fig, path)


def settings_figure(evals: pd.DataFrame, path: Path) -> bool:
    """Final accuracy under each evaluation setting (keep ratios, token budgets) against the baseline's."""
    final = evals[evals["point"] == 1.0]
    if final["setting"].nunique() < 2:
        return False
    fig, ax = plt.subplots(figsize=PAGE)
    sns.barplot(data=final, x="setting", y="top1", hue="method", errorbar="sd", ax=ax)
    ax.set_ylabel("top-1 (%)")
    ax.tick_params(axis="x", labelrotation=30, labelsize=6)
    ax.legend(fontsize=6, frameon=False)
    _save(fig, path)
    return True


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path.with_suffix(".pdf"))
    fig.savefig(path.with_suffix(".png"))
    plt.close(fig)


def write_report(study_dir: str | Path, out: str | Path) -> Path:
    _style()
    study_dir, out = Path(study_dir), Path(out)
    evals = study_table(study_dir)
    tuning = tuning_section(study_dir, out, _save)
    if evals.empty and not tuning:
        raise FileNotFoundError(f"{study_dir} holds no finished run")
    final = final_table(evals) if not evals.empty else evals
    if final.empty:  # a tuning study whose runs were all pruned
        (out / "report.md").write_text("\n".join([f"# Study {study_dir.name}", "", *tuning]) + "\n")
        return out / "report.md"
    table = summary_table(final, evals)
    order = {m: (m != "baseline", m) for m in table["method"]}
    table = table.sort_values(["method", "device_hours"], key=lambda c: c.map(order) if c.name == "method" else c,
                              ignore_index=True)
    frontier = {cost: pareto_figure(table, cost, out / "figures" / f"pareto_{cost}") for cost in COSTS}
    curves_figure(evals, out / "figures" / "curves")
    has_settings = settings_figure(evals, out / "figures" / "settings")
    shown = table.copy()
    shown["speedup"] = [_speedup_text(r) for r in table.itertuples()]
    shown = shown.drop(columns=["speedup_low", "speedup_high"]).rename(columns={"top1_std": "top1_sd"})
    (out / "tables").mkdir(parents=True, exist_ok=True)
    latex = shown.to_latex(index=False, float_format="%.3g", na_rep="--", escape=True)
    (out / "tables" / "summary.tex").write_text(latex)
    markdown = shown.to_markdown(index=False, floatfmt=".3g")
    (out / "tables" / "summary.md").write_text(markdown + "\n")
    if tuning:  # the trials are the study: their section, then the runs' curves (tables/ has the rest)
        lines = [f"# Study {study_dir.name}", "", *tuning, "", "## Runs", "",
                 f"{len(final)} runs; their final top-1 and costs in tables/summary.md.", "",
                 "![curves](figures/curves.png)"]
        (out / "report.md").write_text("\n".join(lines) + "\n")
        return out / "report.md"
    verdicts = [_verdict(method, frontier["device_hours"]) for method in table["method"].unique()
                if method != "baseline"]
    lines = [f"# Study {study_dir.name}", "", f"{len(final)} runs. Final top-1 on the default evaluation.", "",
             markdown, "", "## Verdicts (Pareto frontier of top-1 against device hours)", "", *verdicts, "",
             *[f"![{cost}](figures/pareto_{cost}.png)" for cost in COSTS], "", "![curves](figures/curves.png)"]
    if has_settings:
        lines += ["", "![settings](figures/settings.png)"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out / "report.md"


def _speedup_text(row) -> str:
    if row.speedup is None or (isinstance(row.speedup, float) and np.isnan(row.speedup)):
        return "not reached" if row.method != "baseline" else "1"
    return f"{row.speedup:.2f} [{row.speedup_low:.2f}, {row.speedup_high:.2f}]"


def _verdict(method: str, members: list[str]) -> str:
    mine = [m for m in members if m.startswith(f"{method} @ ")]
    if mine:
        return f"- **{method}** moves the frontier at " + ", ".join(m.split(" @ ")[1] for m in mine) + "."
    return f"- **{method}** does not move the frontier at these budgets."
