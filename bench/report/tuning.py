"""The tuning part of `vtbench report`: optimisation history, each searched parameter against the objective,
parameter importances and, for several objectives, the Pareto front with its trials named. Reads the study
folder's trials.parquet and tuning.json (written by `vtbench tune`), never the Optuna storage."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from vtbench.engine import results

LABELS = {"top1": "top-1 (%)", "top5": "top-5 (%)", "train_s": "training seconds", "used_s": "training seconds",
          "used_flops": "training FLOPs", "total_flops": "training FLOPs", "clips_per_s": "clips per second"}


def tuning_section(study_dir: Path, out: Path, save) -> list[str]:
    """Markdown lines (figures written through `save(fig, path)`); empty when the study is not a tuning study."""
    if not (study_dir / "tuning.json").exists() or not (study_dir / "trials.parquet").exists():
        return []
    info = results.read_json(study_dir / "tuning.json")
    trials = pd.read_parquet(study_dir / "trials.parquet")
    objective, direction = info["objectives"][0], info["directions"][0]
    complete = trials[trials["state"] == "complete"]
    states = ", ".join(f"{n} {s}" for s, n in trials["state"].value_counts().sort_index().items())
    lines = ["## Tuning", "", f"{len(trials)} trials ({states}); sampler {info['sampler']}, pruner {info['pruner']}; "
             f"objective{'s' if len(info['objectives']) > 1 else ''}: "
             + ", ".join(f"{o} ({d})" for o, d in zip(info["objectives"], info["directions"], strict=True)) + "."]
    if complete.empty:
        return [*lines, "", "No trial has completed yet."]
    history_figure(trials, objective, direction, out / "figures" / "tuning_history", save)
    params_figure(trials, info["params"], objective, out / "figures" / "tuning_params", save)
    lines += ["", "![history](figures/tuning_history.png)", "", "![parameters](figures/tuning_params.png)"]
    if info.get("importances", {}).get(objective):
        importance_figure(info["importances"][objective], objective, out / "figures" / "tuning_importances", save)
        lines += ["", "![importances](figures/tuning_importances.png)"]
    if len(info["objectives"]) > 1:
        front = pareto_figure(trials, info, out / "figures" / "tuning_pareto", save)
        lines += ["", f"Pareto front: trials {', '.join(str(n) for n in front)}.", "",
                  "![pareto](figures/tuning_pareto.png)"]
    columns = ["trial", "state", *info["objectives"], *[f"param {p}" for p in info["params"]], "run_id"]
    best = complete.sort_values(objective, ascending=direction == "minimize").head(10)
    best_numbers = info.get("best", [])
    lines += ["", f"Best trial{'s' if len(best_numbers) > 1 else ''}: {', '.join(map(str, best_numbers))} "
              "(its run configuration: best.yaml in the study folder).", "",
              best[columns].to_markdown(index=False, floatfmt=".4g")]
    (out / "tables").mkdir(parents=True, exist_ok=True)
    trials[columns].to_latex(out / "tables" / "trials.tex", index=False, float_format="%.4g", na_rep="--")
    return lines


def history_figure(trials: pd.DataFrame, objective: str, direction: str, path: Path, save) -> None:
    fig, ax = plt.subplots(figsize=(3.4, 2.5))
    complete = trials[trials["state"] == "complete"].sort_values("trial")
    pruned = trials[trials["state"] == "pruned"]
    ax.plot(complete["trial"], complete[objective], "o", ms=3, label="complete")
    if not pruned.empty:
        ax.plot(pruned["trial"], np.full(len(pruned), complete[objective].min()), "x", ms=3, color="0.5",
                label="pruned")
    best = complete[objective].cummax() if direction == "maximize" else complete[objective].cummin()
    ax.step(complete["trial"], best, where="post", color="0.3", lw=0.8, label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(LABELS.get(objective, objective))
    ax.legend(fontsize=6, frameon=False)
    save(fig, path)


def params_figure(trials: pd.DataFrame, params: list[str], objective: str, path: Path, save) -> None:
    complete = trials[trials["state"] == "complete"]
    fig, axes = plt.subplots(1, len(params), figsize=(min(7.0, 2.4 * len(params)), 2.4), sharey=True,
                             squeeze=False)
    for ax, name in zip(axes[0], params, strict=True):
        column = f"param {name}"
        if pd.api.types.is_numeric_dtype(complete[column]):
            sns.scatterplot(data=complete, x=column, y=objective, hue="trial", palette="viridis", s=14, ax=ax,
                            legend=False)
        else:
            sns.stripplot(data=complete, x=column, y=objective, size=3, ax=ax)
        ax.set_xlabel(name)
        ax.set_ylabel(LABELS.get(objective, objective))
    save(fig, path)


def importance_figure(importances: dict[str, float], objective: str, path: Path, save) -> None:
    fig, ax = plt.subplots(figsize=(3.4, 0.5 + 0.35 * len(importances)))
    names = list(importances)
    ax.barh(names[::-1], [importances[n] for n in names[::-1]])
    ax.set_xlabel(f"importance for {objective} (PED-ANOVA)")
    save(fig, path)


def pareto_figure(trials: pd.DataFrame, info: dict, path: Path, save) -> list[int]:
    (y, dy), (x, dx) = list(zip(info["objectives"], info["directions"], strict=True))[:2]  # cost on x
    complete = trials[trials["state"] == "complete"]
    front = complete[complete["trial"].isin(info.get("best", []))].sort_values(x)
    fig, ax = plt.subplots(figsize=(3.4, 2.5))
    ax.plot(complete[x], complete[y], "o", ms=3, color="0.6", label="trials")
    ax.plot(front[x], front[y], "o-", ms=4, lw=0.8, label="Pareto front")
    for _, row in front.iterrows():
        ax.annotate(str(row["trial"]), (row[x], row[y]), textcoords="offset points", xytext=(3, 3), fontsize=6)
    ax.set_xlabel(LABELS.get(x, x) + (" (lower is better)" if dx == "minimize" else ""))
    ax.set_ylabel(LABELS.get(y, y) + (" (lower is better)" if dy == "minimize" else ""))
    ax.legend(fontsize=6, frameon=False)
    save(fig, path)
    return front["trial"].tolist()
