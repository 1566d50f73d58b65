"""A study's runs as one pandas table: one row per run and evaluation (docs/design.md, "What a run writes").

Reports, grids and tuning all read this table. Runs are the folders of a study that hold a summary.json;
columns come from config.yaml (method, parameters, budget, seed), summary.json (status, totals, memory, the time
spent off the clock on evaluations and checkpoints, and a control's `expected_speedup`: NaN for real methods),
evals.parquet (progress, budget used, setting, top-1, top-5, loss) and, in a tuning study, trials.parquet
(the number, state, objective values and parameters of the trial that ended with the run: `trial`,
`trial_*` columns; a configuration drawn twice keeps its first trial, a retried one the retry).
"""

from pathlib import Path

import pandas as pd

from vtbench.engine import results
from vtbench.engine.config import RunConfig, load_run_config
from vtbench.engine.init import init_label
from vtbench.errors import VtbenchError
from vtbench.studies import comparison

SUMMARY_COLUMNS = ("status", "train_s", "steps", "samples", "total_flops", "clips_per_s", "mem_allocated",
                   "mem_reserved", "mem_device", "mem_rss", "eval_mem_allocated", "eval_mem_reserved", "eval_mem_rss",
                   "energy_j", "trainable_params", "threads", "fewest_threads", "wait_share", "load_warning",
                   "data_wait_share", "data_ahead", "data_bound", "expected_speedup", "eval_s", "checkpoint_s", "top1")


def runs_table(study_dir: str | Path) -> pd.DataFrame:
    """One row per run: its configuration and summary, its label and settings key (vtbench.studies.comparison).
    Runs whose settings now mean another run (`stale_runs`) are left out."""
    rows, configs = [], []
    for run_dir in sorted(Path(study_dir).iterdir()):
        summary_path = run_dir / results.SUMMARY
        if not run_dir.is_dir() or not summary_path.exists():
            continue
        config, summary = _read_run(run_dir)
        if _stale(config, run_dir.name):
            continue
        row = {"run_id": run_dir.name, "budget": config.budget, "seed": config.seed, "model": config.model,
               "dataset": config.dataset, "init": init_label(config.init),
               "settings": comparison.settings_key(comparison.settings_of(config)), "is_baseline": not config.methods}
        row.update({k: summary.get(k) for k in SUMMARY_COLUMNS})
        row["final_top1"] = row.pop("top1")
        rows.append(row)
        configs.append(config)
    table = pd.DataFrame(rows)
    if not table.empty:
        table.insert(1, "method", comparison.labels(configs))
    trials_file = Path(study_dir) / "trials.parquet"
    if trials_file.exists() and not table.empty:  # a tuning study: the trial that ended with each run
        trials = pd.read_parquet(trials_file)
        ended = trials["state"].isin(["complete", "pruned"])
        trials = trials.assign(_rank=~ended).sort_values(["_rank", "trial"]).drop_duplicates("run_id")
        trials = trials.drop(columns=["_rank"]).add_prefix("trial_").rename(columns={"trial_trial": "trial",
                                                                                     "trial_run_id": "run_id"})
        table = table.merge(trials, on="run_id", how="left")
    return table


def stale_runs(study_dir: str | Path) -> list[str]:
    """The finished runs of a study whose configuration no longer gives their own id: a method's default changed
    since they ran (`Param.previously`), so the settings their config.yaml names now make another run, and they
    are not that run's results."""
    stale = []
    for run_dir in sorted(Path(study_dir).iterdir()):
        if run_dir.is_dir() and (run_dir / results.SUMMARY).exists() and _stale(_read_run(run_dir)[0], run_dir.name):
            stale.append(run_dir.name)
    return stale


def _stale(config: RunConfig, run_id: str) -> bool:
    try:
        return config.run_id() != run_id
    except (OSError, VtbenchError):  # a start whose file is gone cannot be hashed again: the run stands as it is
        return False


def _read_run(run_dir: Path) -> tuple[RunConfig, dict]:
    """A run's configuration and summary; a damaged file is one error naming it."""
    config = load_run_config(run_dir / results.CONFIG)
    summary_path = run_dir / results.SUMMARY
    try:
        summary = results.read_json(summary_path)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise VtbenchError(f"{summary_path}: unreadable ({type(err).__name__}: {err}); rerun the same command to "
                           "finish the run, or delete its folder") from None
    if not isinstance(summary, dict):
        raise VtbenchError(f"{summary_path}: not a run summary (a {type(summary).__name__})")
    return config, summary


def study_table(study_dir: str | Path) -> pd.DataFrame:
    """One row per run and evaluation setting and point."""
    runs = runs_table(study_dir)
    frames = []
    for run in runs.to_dict("records"):
        evals_path = Path(study_dir) / run["run_id"] / results.EVALS
        if evals_path.exists():
            evals = pd.read_parquet(evals_path)
            for key, value in run.items():
                if key not in evals:  # an evaluation's own figures (its eval_mem_* peaks) stay its own
                    evals[key] = value
            frames.append(evals)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
