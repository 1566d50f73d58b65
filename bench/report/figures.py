"""The figures of a report, ready for a paper: each is written at one-column width (3.3 in) and as a two-column
variant (`*_wide`, 7 in), as vector PDF beside a PNG, with fonts of 7 pt. Every method label keeps one colour and
marker across all figures (the Okabe-Ito colour-blind-safe palette, one colour per method family, baselines in
black and grey, dashed); time reads in s, min or h; points and curves carry their 95% interval over seeds; legends
sit outside the axes; one panel per budget where budgets differ.

- `pareto_figure`: top-1 against a cost (device time, training FLOPs, peak memory), the frontier drawn;
- `curves_figure`: top-1 against training time, one panel per budget;
- `settings_figure`: top-1 against the fraction of tokens kept under the shared evaluation settings;
- `ladder_figure`: the baseline's final top-1 against its budget (log2 axis), one panel per settings key, each
  method placed on it with a dashed segment to the budget at which the baseline's mean reaches its top-1 (the
  equal-accuracy speed-up read off the figure).
"""

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from vtbench.core.budget import Budget  # noqa: E402
from vtbench.methods import REGISTRY  # noqa: E402

from .analysis import Interval, pareto_front  # noqa: E402
from .paired import reach  # noqa: E402
from .tables import baseline_rows  # noqa: E402

WIDTHS = {"": 3.3, "_wide": 7.0}  # inches: one column, two columns of a paper
HEIGHT = 2.3
FONT = 7
COSTS = {"train_s": "training time", "total_gflops": "training GFLOPs", "peak_memory_gib": "peak training memory (GiB)"}
# Okabe & Ito's colour-blind-safe palette (then Tol's), one colour per registered method family, in registry order
PALETTE = ("#009E73", "#0072B2", "#D55E00", "#56B4E9", "#E69F00", "#CC79A7", "#F0E442", "#999933", "#882255")
FAMILIES = dict(zip([name for name in REGISTRY if name != "baseline"], PALETTE, strict=False))
OTHERS = PALETTE[len(FAMILIES):] or PALETTE
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")


def style() -> None:
    plt.rcParams.update({
        "pdf.fonttype": 42, "ps.fonttype": 42, "savefig.bbox": "tight", "figure.dpi": 150, "font.size": FONT,
        "axes.titlesize": FONT, "axes.labelsize": FONT, "xtick.labelsize": FONT, "ytick.labelsize": FONT,
        "legend.fontsize": FONT, "axes.grid": True, "grid.color": "0.9", "axes.spines.top": False,
        "axes.spines.right": False, "lines.linewidth": 1.0, "lines.markersize": 4,
    })


@dataclass(frozen=True)
class Look:
    color: str
    marker: str
    dashed: bool


def looks(labels) -> dict[str, Look]:
    """One look per method label, the same in every figure: baselines black (the first) and grey, dashed; other
    labels the colour of their first method's family, variants of a family told apart by their marker."""
    out, per_family, families, others = {}, {}, dict(FAMILIES), iter(OTHERS * 4)
    baselines = [label for label in dict.fromkeys(labels) if label.startswith("baseline")]
    for label in dict.fromkeys(labels):
        if label in baselines:
            index = baselines.index(label)
            out[label] = Look("#000000" if index == 0 else "#777777", MARKERS[index % len(MARKERS)], True)
            continue
        family = label.split(":")[0].split(" ")[0]
        if family not in families:
            families[family] = next(others)
        count = per_family.get(family, 0)
        per_family[family] = count + 1
        out[label] = Look(families[family], MARKERS[count % len(MARKERS)], False)
    return out


def time_unit(seconds: float) -> tuple[float, str]:
    """(divisor, unit) that writes `seconds` in readable numbers: s below 2 min, min below 2 h, else h."""
    if seconds < 120:
        return 1.0, "s"
    if seconds < 7200:
        return 60.0, "min"
    return 3600.0, "h"


def _legend(fig, ax_or_axes, ncol: int) -> None:
    axes = np.atleast_1d(ax_or_axes).ravel()
    handles, labels = {}, []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    if labels:
        fig.legend([handles[label] for label in labels], labels, loc="outside lower center", frameon=False,
                   ncol=max(1, min(ncol, len(labels))), handlelength=2.2)


def _errorbar(ax, x, interval: Interval, look: Look, label: str | None) -> None:
    yerr = None
    if interval.n > 1:
        yerr = [[interval.mean - interval.low], [interval.high - interval.mean]]
    ax.errorbar([x], [interval.mean], yerr=yerr, color=look.color, marker=look.marker, ls="none", capsize=2,
                label=label, mfc="white" if look.dashed else look.color)


def pareto_figure(final: pd.DataFrame, table: pd.DataFrame, cost: str, path: Path, width: float,
                  styles: dict[str, Look]) -> None:
    """Top-1 against `cost`, one point per method label and budget (mean, 95% interval over seeds), the frontier
    of the means drawn."""
    fig, ax = plt.subplots(figsize=(width, HEIGHT + 0.5), layout="constrained")
    scale, unit = time_unit(table["train_s"].max()) if cost == "train_s" else (1.0, "")
    costs = table[cost].astype(float)
    if costs.max() <= costs.min() * 1.02:  # one equal cost (a single time budget): the methods side by side
        for x, row in enumerate(table.itertuples()):
            runs = final[(final["method"] == row.method) & (final["budget"] == row.budget)]
            _errorbar(ax, x, Interval.of(runs["top1"]), styles[row.method], None)
        ax.set_xticks(range(len(table)), [f"{m} ({b})" for m, b in zip(table["method"], table["budget"],
                                                                        strict=True)], rotation=30, ha="right")
        value = f"{costs.mean() / scale:.3g} {unit}".strip()
        ax.set_title(f"equal {COSTS[cost].split(' (')[0]}: {value} per run")
        ax.set_ylabel("top-1 (%)")
        save(fig, path)
        return
    seen = set()
    for row in table.itertuples():
        runs = final[(final["method"] == row.method) & (final["budget"] == row.budget)]
        interval = Interval.of(runs["top1"])
        _errorbar(ax, getattr(row, cost) / scale, interval, styles[row.method],
                  None if row.method in seen else row.method)
        seen.add(row.method)
    front = table[pareto_front(table, cost)].sort_values(cost)
    ax.step(front[cost] / scale, front["top1"], where="post", color="0.5", lw=0.7, ls=":", label="frontier")
    ax.set_xlabel(f"{COSTS[cost]} ({unit})" if unit else COSTS[cost])
    ax.set_ylabel("top-1 (%)")
    _legend(fig, ax, 2 if width < 5 else 4)
    save(fig, path)


def curves_figure(evals: pd.DataFrame, path: Path, width: float, styles: dict[str, Look]) -> None:
    """Top-1 against training time, one panel per budget: the mean over seeds at each evaluation point, its 95%
    interval shaded."""
    curves = evals[evals["setting"] == "default"]
    budgets = list(dict.fromkeys(curves["budget"]))
    columns = len(budgets) if width > 5 else min(2, len(budgets))
    rows = math.ceil(len(budgets) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(width, HEIGHT * rows + 0.4), squeeze=False, sharey=True,
                             layout="constrained")
    scale, unit = time_unit(curves["used_s"].max())
    for ax, budget in zip(axes.ravel(), budgets, strict=False):
        here = curves[curves["budget"] == budget]
        for method, group in here.groupby("method", sort=False):
            points = group.groupby("point")
            x = points["used_s"].mean() / scale
            intervals = [Interval.of(g["top1"]) for _, g in points]
            look = styles[method]
            mean = [i.mean for i in intervals]
            ax.plot(x, mean, color=look.color, marker=look.marker, ms=2.5, ls="--" if look.dashed else "-",
                    label=method)
            if all(i.n > 1 for i in intervals):
                ax.fill_between(x, [i.low for i in intervals], [i.high for i in intervals], color=look.color,
                                alpha=0.15, lw=0)
        ax.set_title(f"budget {budget}")
        ax.set_xlabel(f"training time ({unit})")
    for ax in axes.ravel()[len(budgets):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel("top-1 (%)")
    if curves["method"].nunique() <= 12:
        _legend(fig, axes, 2 if width < 5 else 4)
    save(fig, path)


def settings_figure(evals: pd.DataFrame, path: Path, width: float, styles: dict[str, Look]) -> bool:
    """Final top-1 against the fraction of tokens kept, one panel per selection (random, magnitude, group, and any
    setting of a method's own) and budget; every method label is a line, the baselines' dashed, so each method's
    curve has its baseline's beside it. Means over seeds with their 95% interval."""
    final = evals[evals["point"] == 1.0].copy()
    if final["setting"].nunique() < 2:
        return False
    final["selection"] = final["setting"].str.partition(",")[2]
    reduced = final[final["selection"] != ""]
    default = final[final["setting"] == "default"]
    panels = [s for s in ("random", "magnitude", "group") if s in set(reduced["selection"])]
    panels += sorted(set(reduced["selection"]) - set(panels))
    budgets = list(dict.fromkeys(final["budget"]))
    fig, axes = plt.subplots(len(budgets), len(panels), figsize=(width, 0.5 + HEIGHT * len(budgets)), squeeze=False,
                             sharex=True, sharey=True, layout="constrained")
    for row, budget in enumerate(budgets):
        for col, selection in enumerate(panels):
            ax = axes[row][col]
            here = pd.concat([reduced[reduced["selection"] == selection], default])
            for method, group in here[here["budget"] == budget].groupby("method", sort=False):
                by_keep = sorted(group.groupby(group["keep"].round(3)), key=lambda kv: kv[0])
                keeps = [k for k, _ in by_keep]
                intervals = [Interval.of(g["top1"]) for _, g in by_keep]
                look = styles[method]
                ax.plot(keeps, [i.mean for i in intervals], color=look.color, marker=look.marker, ms=2.5,
                        ls="--" if look.dashed else "-", label=method)
                if all(i.n > 1 for i in intervals):
                    ax.fill_between(keeps, [i.low for i in intervals], [i.high for i in intervals],
                                    color=look.color, alpha=0.15, lw=0)
            ax.set_title(f"{selection}, budget {budget}" if len(budgets) > 1 else selection)
            ax.set_xlim(0, 1.05)
        axes[row][0].set_ylabel("top-1 (%)")
    axes[-1][len(panels) // 2].set_xlabel("fraction of tokens kept")  # once: per-panel labels collide
    _legend(fig, axes, 2 if width < 5 else 4)
    save(fig, path)
    return True


def ladder_figure(final: pd.DataFrame, table: pd.DataFrame, path: Path, width: float,
                  styles: dict[str, Look]) -> bool:
    """The baseline's top-1 against budget (mean over seeds, 95% band), per settings key with a ladder of two
    budgets or more in one unit; each other row of those settings as a point (mean, 95% interval) at its budget,
    joined by a dashed segment to where the baseline's mean curve reaches its top-1 (dotted where extrapolated).
    False where no ladder."""
    panels = []
    for settings, rows in final[final["is_baseline"].astype(bool)].groupby("settings", sort=False):
        units = rows["budget"].map(lambda b: Budget.parse(b).unit)
        for unit in units.unique():
            if rows[units == unit]["budget"].nunique() >= 2:
                panels.append((settings, unit))
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(width, HEIGHT + 0.5), squeeze=False, layout="constrained")
    for ax, (settings, unit) in zip(axes[0], panels, strict=True):
        base = baseline_rows(final, settings)
        base = base[base["budget"].map(lambda b: Budget.parse(b).unit) == unit]
        points = sorted((Budget.parse(b).amount, Interval.of(g["top1"])) for b, g in base.groupby("budget"))
        x = [b for b, _ in points]
        mean = [i.mean for _, i in points]
        label = base["method"].iloc[0]
        look = styles[label]
        ax.plot(x, mean, color=look.color, marker=look.marker, ls="--", label=label, mfc="white")
        if all(i.n > 1 for _, i in points):
            ax.fill_between(x, [i.low for _, i in points], [i.high for _, i in points], color=look.color, alpha=0.15,
                            lw=0)
        mine = table[(~table["method"].isin(base["method"])) & table["method"].isin(
            final[final["settings"] == settings]["method"])]
        mine = mine[mine["budget"].map(lambda b: Budget.parse(b).unit) == unit]
        for row in mine.itertuples():
            budget = Budget.parse(row.budget).amount
            runs = final[(final["method"] == row.method) & (final["budget"] == row.budget)]
            interval = Interval.of(runs["top1"])
            # rows at one budget side by side, a few percent apart on the log axis
            same = list(mine.loc[mine["budget"] == row.budget, "method"])
            dodged = budget * 2 ** (0.04 * (same.index(row.method) - (len(same) - 1) / 2))
            _errorbar(ax, dodged, interval, styles[row.method], row.method)
            found = reach(x, mean, interval.mean)
            if not math.isnan(found.budget):
                ax.plot([dodged, found.budget], [interval.mean] * 2, color=styles[row.method].color, ls=":"
                        if found.extrapolated else "--", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [f"{b:g}" for b in x])
        ax.minorticks_off()
        ax.set_xlabel(f"budget ({unit})")
        ax.set_title(label if len(panels) > 1 else "")
    axes[0][0].set_ylabel("top-1 (%)")
    _legend(fig, axes, 2 if width < 5 else 4)
    save(fig, path)
    return True


def save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path.with_suffix(".pdf"))
    fig.savefig(path.with_suffix(".png"), dpi=200)
    plt.close(fig)
