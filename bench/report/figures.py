"""The figures of a report, each written as vector PDF and PNG: accuracy against cost with the Pareto frontier,
accuracy curves, and accuracy under the shared reduced-token evaluation settings beside the baselines'."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .analysis import pareto_front  # noqa: E402

COLUMN = (3.4, 2.5)  # inches: one column of a two-column paper
PAGE = (7.0, 2.8)
COSTS = {"device_hours": "device hours", "total_gflops": "training GFLOPs", "peak_memory_gib": "peak memory (GiB)"}


def style() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"pdf.fonttype": 42, "ps.fonttype": 42, "savefig.bbox": "tight", "figure.dpi": 150})


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
    save(fig, path)
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
    save(fig, path)


def settings_figure(evals: pd.DataFrame, path: Path) -> bool:
    """Final top-1 against the fraction of tokens kept, one panel per selection (random, magnitude, group, and any
    setting of a method's own) and budget; every method label is a line, the baselines included, so each method's
    curve has its baseline's beside it. Points are means over seeds with their standard deviation."""
    final = evals[evals["point"] == 1.0].copy()
    if final["setting"].nunique() < 2:
        return False
    final["selection"] = final["setting"].str.partition(",")[2]
    reduced = final[final["selection"] != ""]
    default = final[final["setting"] == "default"]
    panels = [s for s in ("random", "magnitude", "group") if s in set(reduced["selection"])]
    panels += sorted(set(reduced["selection"]) - set(panels))
    budgets = list(dict.fromkeys(final["budget"]))
    methods = list(dict.fromkeys(final["method"]))
    palette = dict(zip(methods, sns.color_palette("colorblind", len(methods)), strict=True))
    fig, axes = plt.subplots(len(budgets), len(panels), figsize=(PAGE[0], 1.2 + 2.0 * len(budgets)), squeeze=False,
                             sharex=True, sharey=True, layout="constrained")
    for row, budget in enumerate(budgets):
        for col, selection in enumerate(panels):
            ax = axes[row][col]
            here = pd.concat([reduced[reduced["selection"] == selection], default])
            here = here[here["budget"] == budget]
            for method, group in here.groupby("method", sort=False):
                stats = group.groupby("keep")["top1"].agg(["mean", "std"]).reset_index()
                dashed = method.startswith("baseline")
                ax.errorbar(stats["keep"], stats["mean"], yerr=stats["std"].fillna(0), color=palette[method],
                            marker="o", ms=3, lw=1, ls="--" if dashed else "-", capsize=2, label=method)
            ax.set_title(f"{selection} @ {budget}" if len(budgets) > 1 else selection, fontsize=8)
            ax.set_xlim(0, 1.05)
        axes[row][0].set_ylabel("top-1 (%)")
    for ax in axes[-1]:
        ax.set_xlabel("fraction of tokens kept")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=6, frameon=False, loc="outside lower center", ncol=min(4, len(labels)))
    save(fig, path)
    return True


def save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path.with_suffix(".pdf"))
    fig.savefig(path.with_suffix(".png"))
    plt.close(fig)
