"""`vtbench tune`: executors around `vtbench.studies.tune.work`, with a progress bar over ended trials."""

import os
import sys
from pathlib import Path

from tqdm import tqdm

from vtbench.engine.distributed import World, launched_size
from vtbench.errors import VtbenchError
from vtbench.studies.executors import run_local, run_slurm
from vtbench.studies.folder import prepare_study, writable_folder
from vtbench.studies.status import write_plan
from vtbench.studies.tune import Tune, best_trials, counts, follow, load_tune, open_storage, open_study, work


def _prepare(args) -> tuple[Tune, Path]:
    if launched_size() > 1:
        raise VtbenchError("vtbench tune runs its trials' processes itself (nproc_per_run); start it without torchrun")
    tune = load_tune(args.config, getattr(args, "nproc", None))
    if args.trials is not None:
        if args.trials < 1:
            raise VtbenchError(f"--trials must be at least 1, got {args.trials}")
        tune.trials = args.trials
    if args.workers < 1:
        raise VtbenchError(f"--workers must be at least 1, got {args.workers}")
    url = args.storage or tune.storage
    if url and "://" in url:  # an RDB is checked before anything is written (a journal lives in the folder)
        open_storage(tune, Path(args.out) / tune.study, url, args.workers)
    folder = prepare_study(writable_folder(Path(args.out)), tune)
    if "VTBENCH_WORKER" not in os.environ:  # the launcher's, not each local worker's
        write_plan(folder, {"kind": "tune", "trials": tune.trials, "budget": tune.base.budget,
                            "nproc": tune.base.nproc, "storage": "database" if url and "://" in url else "journal"})
    return tune, folder


def run_tune(args) -> int:
    if args.executor is None:
        args.executor = "local" if args.workers > 1 else "inline"
    tune, folder = _prepare(args)
    study = open_study(tune, folder, args.storage, args.workers)  # checks the storage before any trial runs

    def ended() -> int:
        return min(tune.trials, counts(study.get_trials(deepcopy=False))["done"])

    bar = tqdm(total=tune.trials, initial=ended(), desc=tune.study, unit="trial", disable=args.no_progress)
    if args.executor == "inline":
        worker = int(os.environ.get("VTBENCH_WORKER", "0"))

        def done(study, trial):
            bar.update(ended() - bar.n)
            values = ", ".join(f"{n} {v:.4g}" for n, v in zip(tune.objectives, trial.values or [], strict=False))
            outcome = values or trial.user_attrs.get("status")
            bar.write(f"trial {trial.number:>3} {trial.state.name.lower():>8}  {outcome}  {trial.params}  "
                      f"({trial.user_attrs.get('run_id')})")

        work(tune, folder, args.storage, args.workers, worker, progress_bar=not args.no_progress, on_trial=done)
    else:
        common = ["--out", args.out, "--trials", str(tune.trials), "--workers", str(args.workers)]
        if args.storage:
            common += ["--storage", args.storage]
        if getattr(args, "nproc", None):
            common += ["--nproc", str(args.nproc)]
        if args.executor == "local":
            run_local(["tune", args.config, "--executor", "inline", "--no-progress", *common], args.workers, bar,
                      ended, devices_per_worker=tune.base.nproc)
        else:
            if not (args.storage or tune.storage or "").startswith(("postgresql", "postgres", "mysql")):
                raise VtbenchError("--executor slurm needs --storage postgresql://...: SLURM workers run on other "
                                   "nodes, and a journal file cannot tell that a worker there died")
            arguments = [(str(Path(args.config).resolve()), str(Path(args.out).resolve()), tune.trials, args.storage,
                          args.workers, index, getattr(args, "nproc", None)) for index in range(args.workers)]
            run_slurm(slurm_worker, arguments, folder, tune.slurm, args.workers, bar, ended, tasks=tune.base.nproc)
    bar.close()
    if "VTBENCH_WORKER" in os.environ:  # a worker its launcher started: the launcher reports
        return 0
    return _print_outcome(tune, folder, study)


def slurm_worker(config: str, out: str, trials: int, storage: str | None, workers: int, index: int,
                 nproc: int | None = None) -> int:
    """One array job: trials until the study has enough, on whatever nodes SLURM gave it; a job of several tasks
    trains each trial's run on all of them (rank 0 draws the trials, the other tasks follow)."""
    tune = load_tune(config, nproc)
    tune.trials = trials
    world = World.join_slurm_job() if tune.base.nproc > 1 else None
    try:
        folder = prepare_study(Path(out), tune)
        if world is not None and not world.main:
            return follow(world, folder)
        return work(tune, folder, storage, workers, index, progress_bar=False, world=world)
    finally:
        if world is not None:
            world.leave()


def _print_outcome(tune: Tune, folder: Path, study) -> int:
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        if not t.user_attrs.get("surplus"):
            name = t.user_attrs.get("status") if t.state.name == "FAIL" else t.state.name.lower()
            states[name or "failed"] = states.get(name or "failed", 0) + 1
    print(", ".join(f"{n} {s}" for s, n in sorted(states.items())), file=sys.stderr)
    best = best_trials(study, tune)
    if best:
        for t in best:
            values = ", ".join(f"{n} = {v:.4g}" for n, v in zip(tune.objectives, t.values, strict=True))
            print(f"best trial {t.number}: {values}  {t.params}", file=sys.stderr)
        print(f"best configuration: {folder / 'best.yaml'}", file=sys.stderr)
    print(folder)
    return 0 if counts(study.get_trials(deepcopy=False))["done"] >= tune.trials and best else 1
