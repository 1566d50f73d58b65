"""`vtbench tune`: an Optuna study over method parameters, each trial a budgeted run (docs/design.md, "Grids, tuning,
reports").

    study: keep-ratio
    base: {dataset: synthetic, model: vit_tiny}
    budget: 60s
    methods: [{token_dropout: {keep: {float: [0.1, 1.0]}, mode: {choice: [random, tube]}}}]
    objective: top1                 # or [top1, train_s] for a Pareto search
    trials: 20

Each trial is an ordinary run under `OUT/<study>/<run_id>/` (so a trial whose configuration already ran reuses
it, and a retried trial resumes its run from the checkpoint). Intermediate top-1 is reported at each evaluation
point with the step set to the budget progress in per mille, so pruners compare runs at equal compute.

Counting trials exactly with any number of workers: Optuna numbers trials atomically, and a trial runs only if
fewer than `trials` trials with lower numbers are running, waiting or ended; otherwise it is surplus and is
closed as failed with the user attribute `surplus` (it never ran and the tables leave it out). Trials whose
worker died are failed (by the storage's heartbeat, or on the same host because the worker's process is gone)
and retried up to `retries` times as new trials with the same parameters.
"""

import dataclasses
import datetime
import hashlib
import json
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from vtbench.engine import results
from vtbench.engine.config import RunConfig, apply, load_yaml, save_yaml
from vtbench.engine.launch import execute_or_launch, settle_failure
from vtbench.engine.runner import Pruned, execute
from vtbench.errors import ConfigError, VtbenchError
from vtbench.studies.folder import Claim, process_alive, read_study_yaml, slurm_options, validate_methods
from vtbench.studies.search import SearchSpace, parse_space

KEYS = ("study", "base", "budget", "methods", "objective", "trials", "sampler", "pruner", "prune_after", "storage",
        "retries", "heartbeat", "slurm", "nproc_per_run")
SAMPLERS = ("tpe", "random", "grid", "nsga2", "qmc", "gp")
PRUNERS = ("none", "median", "percentile", "hyperband", "successive_halving")
ENDED = ("diverged", "oom", "failed")  # run outcomes that spend a trial without an objective value
# objective -> (direction, summary.json key)
OBJECTIVES = {
    "top1": ("maximize", "top1"), "top5": ("maximize", "top5"), "clips_per_s": ("maximize", "clips_per_s"),
    "train_s": ("minimize", "train_s"), "used_s": ("minimize", "train_s"),
    "used_flops": ("minimize", "total_flops"), "total_flops": ("minimize", "total_flops"),
    "used_samples": ("minimize", "samples"), "samples": ("minimize", "samples"), "steps": ("minimize", "steps"),
    "energy_j": ("minimize", "energy_j"), "mem_allocated": ("minimize", "mem_allocated"),
    "mem_reserved": ("minimize", "mem_reserved"), "mem_device": ("minimize", "mem_device"),
    "mem_rss": ("minimize", "mem_rss"),
}
POLL_S = 2.0
UNSTAMPED_S = 60.0  # a running trial whose worker has not stamped it for this long is dead


@dataclass
class Tune:
    study: str
    base: RunConfig
    space: SearchSpace
    objectives: list[str]
    trials: int = 20
    sampler: str = "tpe"
    pruner: str = "none"
    prune_after: float = 0.25  # budget progress before which no trial is pruned
    storage: str | None = None
    retries: int = 2
    heartbeat: int = 60
    slurm: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    kind: ClassVar[str] = "tune"

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o][0] for o in self.objectives]

    def config(self, methods) -> RunConfig:
        return dataclasses.replace(self.base, methods=methods).resolve()


def load_tune(path: str | Path, nproc: int | None = None) -> Tune:
    """The study of a YAML file; `nproc` (the command line's) overrides its `nproc_per_run`."""
    data, where, study, base_values = read_study_yaml(path, KEYS, "tune config")
    if "methods" in base_values:
        raise ConfigError(f"{where}: base: give the methods under the top-level `methods` key")
    if "budget" in data:
        base_values = {**base_values, "budget": data["budget"]}
    base = apply(RunConfig(), base_values, where=f"{where}: base")
    for value, source in ((data.get("nproc_per_run"), "nproc_per_run"), (nproc, "--nproc")):
        if value is not None:
            base = apply(base, {"nproc": value}, where=f"{where}: {source}")
    space = parse_space(data.get("methods"), where)
    objectives = data.get("objective", "top1")
    objectives = objectives if isinstance(objectives, list) else [objectives]
    for name in objectives:
        if name not in OBJECTIVES:
            raise ConfigError(f"{where}: objective {name!r} is not a run column; allowed: {', '.join(OBJECTIVES)}")
    if not objectives or len(set(objectives)) != len(objectives):
        raise ConfigError(f"{where}: objective must name one run column or a list of different ones")
    tune = Tune(study, base, space, objectives, source=where)
    for key, kind, allowed in (("trials", int, None), ("retries", int, None), ("heartbeat", int, None),
                               ("sampler", str, SAMPLERS), ("pruner", str, PRUNERS), ("storage", str, None)):
        if key in data:
            value = data[key]
            if not isinstance(value, kind) or isinstance(value, bool) or (allowed and value not in allowed):
                expected = ", ".join(allowed) if allowed else f"a {kind.__name__}"
                raise ConfigError(f"{where}: {key} must be {expected}, got {value!r}")
            setattr(tune, key, value)
    prune_after = data.get("prune_after", tune.prune_after)
    if not isinstance(prune_after, (int, float)) or isinstance(prune_after, bool) or not 0 <= prune_after < 1:
        raise ConfigError(f"{where}: prune_after is the budget progress before which nothing is pruned, in [0, 1); "
                          f"got {prune_after!r}")
    tune.prune_after = float(prune_after)
    if tune.trials < 1 or tune.retries < 0 or tune.heartbeat < 1:
        raise ConfigError(f"{where}: trials and heartbeat must be at least 1 and retries at least 0")
    if tune.pruner != "none" and len(objectives) > 1:
        raise ConfigError(f"{where}: pruner {tune.pruner!r} needs a single objective; Optuna cannot prune a "
                          f"multi-objective study ({', '.join(objectives)}): use pruner: none")
    if tune.pruner != "none" and objectives != ["top1"]:
        raise ConfigError(f"{where}: pruner {tune.pruner!r} compares top-1 at the evaluation points; objective "
                          f"{objectives[0]} has no intermediate values: use objective: top1 or pruner: none")
    if tune.sampler == "grid":
        tune.space.grid()  # every range needs a step
    tune.slurm = slurm_options(data, where)
    for param in tune.space.params:  # every value the search can reach must make a valid method list
        for value in param.extremes():
            values = {p.name: p.extremes()[0] for p in tune.space.params} | {param.name: value}
            try:
                validate_methods(tune.config(tune.space.fill(values)), where)
            except ConfigError as err:
                raise ConfigError(f"{err} (searched parameter {param.name} = {value!r})") from None
    return tune


# ---- storage, sampler, pruner -----------------------------------------------------------------------------


def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats, retries


def open_storage(tune: Tune, folder: Path, url: str | None, workers: int):
    """Optuna storage: a journal file in the study folder by default, or an RDB URL (PostgreSQL)."""
    _quiet_optuna()
    url = url or tune.storage
    if not url or "://" not in url:
        path = Path(url) if url else folder / "optuna.journal"
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path), JournalFileOpenLock(str(path))))
    scheme = url.split("://", 1)[0]
    if scheme.startswith("sqlite") and workers > 1:
        raise ConfigError(f"storage {url}: SQLite takes one writer at a time and its file locks fail across "
                          f"machines; for {workers} workers use the default journal file (one machine) or a "
                          "postgresql:// URL")
    try:
        return optuna.storages.RDBStorage(
            _with_driver(url), engine_kwargs={"pool_pre_ping": True} if not scheme.startswith("sqlite") else None,
            heartbeat_interval=tune.heartbeat, grace_period=2 * tune.heartbeat,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=tune.retries))
    except ImportError as err:
        raise ConfigError(f"storage {_hide_password(url)}: {err}; for PostgreSQL: pip install 'vtbench[postgres]'"
                          ) from None
    except Exception as err:  # sqlalchemy's OperationalError and friends: say which host and why
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise ConfigError(f"storage {_hide_password(url)} cannot be reached: {reason}") from None


def _with_driver(url: str) -> str:
    """A bare `postgresql://` (or `postgres://`) URL names psycopg 3, which `vtbench[postgres]` installs: SQLAlchemy
    before 2.1 reads a bare scheme as psycopg2."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql+psycopg://{rest}" if scheme in ("postgresql", "postgres") else url


def _hide_password(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as given
        return url


def make_sampler(tune: Tune, seed: int | None):
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, multivariate=True),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "grid": lambda: optuna.samplers.GridSampler(tune.space.grid(), seed=seed),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
    }
    return samplers[tune.sampler]()


def make_pruner(tune: Tune):
    """Pruners see top-1 at each evaluation point, the step being budget progress in per mille; none prunes
    before `prune_after` (early accuracy says little on tasks that sit at chance before they learn)."""
    warmup = round(1000 * tune.prune_after)
    first = max(warmup, round(1000 * min(1.0, tune.base.eval_every)))
    pruners = {
        "none": optuna.pruners.NopPruner,
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=warmup),
        "percentile": lambda: optuna.pruners.PercentilePruner(25.0, n_startup_trials=3, n_warmup_steps=warmup),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=first, max_resource=1000),
        "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=first),
    }
    return pruners[tune.pruner]()


def open_study(tune: Tune, folder: Path, url: str | None = None, workers: int = 1, worker: int = 0):
    storage = open_storage(tune, folder, url, workers)
    study = optuna.create_study(study_name=tune.study, storage=storage, directions=tune.directions,
                                pruner=make_pruner(tune), load_if_exists=True)
    stored = study.user_attrs.get("objectives")
    if stored is None:
        study.set_user_attr("objectives", tune.objectives)
    elif stored != tune.objectives:
        raise ConfigError(f"{tune.source}: study {tune.study!r} in this storage optimises {', '.join(stored)}, not "
                          f"{', '.join(tune.objectives)}; use another study name to search another objective")
    # Reproducible for a new study on one machine; a continued study, another worker or another machine does
    # not redraw the same values.
    seed = sampler_seed(tune.base.seed, worker, len(study.get_trials(deepcopy=False)), socket.gethostname())
    study.sampler = make_sampler(tune, seed)
    return study


def sampler_seed(base_seed: int, worker: int, trials_so_far: int, host: str) -> int:
    """The sampler's seed, a 32-bit digest of its inputs: the same in every process (Python's hash() of a string
    is salted per process by PYTHONHASHSEED, so it would make a new study draw other values on each start)."""
    text = json.dumps([base_seed, worker, trials_so_far, host])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big")


# ---- counting trials ----------------------------------------------------------------------------------------


def counts(trials) -> dict[str, int]:
    """done (ended, objective or not), running, waiting; surplus and dead-worker failures are not counted."""
    out = {"done": 0, "running": 0, "waiting": 0}
    for t in trials:
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or _ended(t):
            out["done"] += 1
        elif t.state == TrialState.RUNNING:
            out["running"] += 1
        elif t.state == TrialState.WAITING:
            out["waiting"] += 1
    return out


def _ended(trial) -> bool:
    return trial.state == TrialState.FAIL and trial.user_attrs.get("status") in ENDED


def _counted(trial) -> bool:
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING) \
        or _ended(trial)


def is_surplus(study, number: int, limit: int) -> bool:
    return sum(_counted(t) for t in study.get_trials(deepcopy=False) if t.number < number) >= limit


def fail_dead_workers(study, retries: int) -> list[int]:
    """Fail the running trials whose worker process is gone from this host, and queue their retries: the
    journal file's stand-in for a heartbeat, as its workers share one machine."""
    failed = []
    host = socket.gethostname()
    now = datetime.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker") or {}
        if worker.get("trial") != trial.number:  # a retry popped a moment ago still carries the dead worker's
            started = trial.datetime_start or now  # stamp; only a worker that died before stamping it is dead
            if (now - started).total_seconds() < UNSTAMPED_S:
                continue
        elif worker.get("host") != host or _alive(worker.get("pid")):
            continue
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "status", "worker died")
            if study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                failed.append(trial.number)
                RetryHeartbeatStaleTrialCallback(max_retry=retries)(study, study._storage.get_trial(trial._trial_id))
        except UpdateFinishedTrialError:
            pass  # another worker got there first
    return failed


def _alive(pid: int | None) -> bool:
    return pid is None or process_alive(pid)


# ---- a worker ---------------------------------------------------------------------------------------------


class RunEnded(Exception):
    """A run that ended without an objective value (diverged, oom, failed): the trial fails, counted as spent."""


class Surplus(Exception):
    """The study already has `trials` trials running or ended: this one does not run."""


def work(tune: Tune, folder: Path, url: str | None = None, workers: int = 1, worker: int = 0,
         progress_bar: bool = True, on_trial=None, world=None) -> int:
    """Run trials until the study has `trials` ended ones; returns how many this worker ran. Safe in parallel.

    With `world` (the tasks of one SLURM job; this is its rank 0, the others `follow`), each trial's run is
    trained by all of them; a run that fails there ends the worker, whose processes may no longer agree."""
    study = open_study(tune, folder, url, workers, worker)
    ran: list[int] = []  # numbers of the trials this worker ran
    several = world is not None and world.size > 1

    def ended(study, trial) -> None:
        if trial.user_attrs.get("surplus"):
            return
        ran.append(trial.number)
        write_outputs(tune, study, folder)
        if on_trial:
            on_trial(study, trial)
        if trial.user_attrs.get("ranks_broken"):
            raise VtbenchError(f"trial {trial.number}'s run of {world.size} processes failed "
                               f"({trial.user_attrs.get('run_id')}); this worker ends, and rerunning goes on")

    heartbeat = is_heartbeat_enabled(study._storage)
    while True:
        if heartbeat:
            fail_stale_trials(study)  # the storage's heartbeat, across machines
        else:
            fail_dead_workers(study, tune.retries)  # a journal file: workers share this host
        n = counts(study.get_trials(deepcopy=False))
        if n["done"] >= tune.trials:
            break
        if not n["waiting"] and n["done"] + n["running"] >= tune.trials:
            time.sleep(POLL_S)  # the last trials run elsewhere; stay to retry them if their workers die
            continue
        study.optimize(lambda t: objective(tune, folder, t, progress_bar, url, world), n_trials=1,
                       catch=(RunEnded, Surplus), callbacks=[ended])
    write_outputs(tune, study, folder)
    if several:
        world.share(None)  # the other tasks stop following
    return len(ran)


def follow(world, folder: Path) -> int:
    """A task of a SLURM job other than rank 0: train each run rank 0 shares, as one of its ranks, until rank 0
    shares None; returns how many."""
    ran = 0
    while (config := world.share(None)) is not None:
        execute(config, folder, progress_bar=False)
        ran += 1
    return ran


@dataclass
class TrialReporter:
    """A run's `on_eval` in a study: reports top-1 at each evaluation to the trial and prunes the run when the
    pruner says so. Picklable: rank 0 of a run of several processes calls it in its own process, where it opens
    the study's storage again."""
    tune: Tune
    folder: Path
    url: str | None
    trial_id: int
    trial: Any = field(default=None, repr=False)  # the live trial, in the process that drew it

    def __getstate__(self) -> dict[str, Any]:
        return {**vars(self), "trial": None}

    def __call__(self, point: float, top1: float) -> None:
        if self.tune.objectives != ["top1"]:
            return
        trial = self.trial or self._open()
        trial.report(top1, step=round(1000 * point))
        if point < 1.0 and self.tune.pruner != "none" and trial.should_prune():
            raise Pruned(f"pruned by {self.tune.pruner} at progress {point:g} (top-1 {top1:.1f}%)")

    def _open(self):
        study = optuna.load_study(study_name=self.tune.study, pruner=make_pruner(self.tune),
                                  storage=open_storage(self.tune, self.folder, self.url, 1))
        self.trial = optuna.Trial(study, self.trial_id)
        return self.trial


def objective(tune: Tune, folder: Path, trial, progress_bar: bool, url: str | None = None,
              world=None) -> float | list[float]:
    trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid(), "trial": trial.number})
    if is_surplus(trial.study, trial.number, tune.trials):
        trial.set_user_attr("surplus", True)
        raise Surplus(f"trial {trial.number}: the study already has {tune.trials} trials")
    config = tune.config(tune.space.suggest(trial))
    run_id = config.run_id()
    run_dir = folder / run_id
    # what optuna-dashboard shows beside each trial: where its run is, its budget and methods
    for key, value in (("run_id", run_id), ("run_dir", str(run_dir.resolve())), ("budget", config.budget),
                       ("methods", config.label())):
        trial.set_user_attr(key, value)
    single = len(tune.objectives) == 1

    claim = None
    while claim is None:  # another trial may be running this very configuration: wait for its result
        claim = Claim.take(folder / f"{run_id}.claim")
        if claim is None:
            time.sleep(POLL_S)
    several = world is not None and world.size > 1
    if several:
        try:
            world.share(config)  # the job's other tasks train it with this one (a dead one fails the trial here)
        except BaseException:
            claim.release()
            raise
    began = time.time()
    try:
        _record_trial(run_dir, trial.number)
        execute_or_launch(config, folder, progress_bar=progress_bar,
                          on_eval=TrialReporter(tune, folder, url, trial._trial_id, trial))
    except KeyboardInterrupt:  # the same parameters wait at the head of the queue; their run resumes
        trial.set_user_attr("status", "interrupted")
        trial.study.enqueue_trial(trial.params, user_attrs={"resumes": trial.number}, skip_if_exists=False)
        raise
    except Exception as err:  # noqa: BLE001 - the run recorded it (status failed)
        error = (settle_failure(run_dir, began, world.size) if several else None) or f"{type(err).__name__}: {err}"
        trial.set_user_attr("status", "failed")
        if several:  # the job's processes may no longer agree: its worker ends after recording this trial
            trial.set_user_attr("ranks_broken", True)
        raise RunEnded(f"run {run_id} failed: {error}") from None
    finally:
        claim.release()
    summary = results.read_json(run_dir / results.SUMMARY)
    trial.set_user_attr("status", summary["status"])
    if summary["status"] == "pruned":
        raise optuna.TrialPruned(summary.get("error") or "pruned")
    if summary["status"] != "completed":
        raise RunEnded(f"run {run_id} ended {summary['status']}: {summary.get('error')}")
    values = [summary.get(OBJECTIVES[name][1]) for name in tune.objectives]
    if any(v is None for v in values):
        missing = [n for n, v in zip(tune.objectives, values, strict=True) if v is None]
        trial.set_user_attr("status", "failed")
        raise RunEnded(f"run {run_id} did not measure {', '.join(missing)} (see its env.json not_measured)")
    return values[0] if single else values


def _record_trial(run_dir: Path, number: int) -> None:
    """The run records which trials used it (a configuration drawn twice is run once)."""
    path = run_dir / "trials.json"
    numbers = results.read_json(path)["trials"] if path.exists() else []
    results.write_json(path, {"trials": sorted({*numbers, number})})


# ---- outputs ----------------------------------------------------------------------------------------------


def trial_rows(study, tune: Tune) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("surplus"):
            continue
        row = {"trial": t.number, "state": t.state.name.lower(), "status": t.user_attrs.get("status"),
               "run_id": t.user_attrs.get("run_id"), "retry_of": t.system_attrs.get("failed_trial"),
               "started": t.datetime_start, "duration_s": t.duration.total_seconds() if t.duration else None}
        for i, name in enumerate(tune.objectives):
            row[name] = t.values[i] if t.values else None
        row.update({f"param {k}": v for k, v in t.params.items()})
        rows.append(row)
    return rows


def best_trials(study, tune: Tune) -> list:
    """Single objective: the best trial. Several: the Pareto front, best first objective first."""
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return []
    if len(tune.objectives) == 1:
        return [study.best_trial]
    sign = 1 if tune.directions[0] == "maximize" else -1
    return sorted(study.best_trials, key=lambda t: -sign * t.values[0])


def write_outputs(tune: Tune, study, folder: Path) -> None:
    """trials.parquet, tuning.json and best.yaml in the study folder: what reports read, without the storage."""
    rows = trial_rows(study, tune)
    if rows:
        results.write_parquet(folder / "trials.parquet", rows)
    best = best_trials(study, tune)
    info = {"study": tune.study, "objectives": tune.objectives, "directions": tune.directions,
            "trials": tune.trials, "sampler": tune.sampler, "pruner": tune.pruner,
            "params": [p.name for p in tune.space.params], "best": [t.number for t in best],
            "importances": _importances(study, tune)}
    results.write_json(folder / "tuning.json", info)
    if best:
        run_dir = folder / best[0].user_attrs["run_id"]
        values = ", ".join(f"{n} = {v:.4g}" for n, v in zip(tune.objectives, best[0].values, strict=True))
        header = (f"# best trial {best[0].number} of study {tune.study}: {values}\n"
                  f"# params: {best[0].params}\n# vtbench run --config best.yaml\n")
        config = load_yaml(run_dir / results.CONFIG)
        results.write_text(folder / "best.yaml", header + save_yaml(config))


def _importances(study, tune: Tune) -> dict[str, dict[str, float]]:
    """PED-ANOVA importance of each searched parameter, per objective (empty until enough trials ended)."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(complete) < 3 or len(tune.space.params) < 1:
        return {}
    out = {}
    for i, name in enumerate(tune.objectives):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                evaluator = optuna.importance.PedAnovaImportanceEvaluator()
                values = optuna.importance.get_param_importances(study, evaluator=evaluator,
                                                                 target=lambda t, i=i: t.values[i])
        except (RuntimeError, ValueError):  # too few distinct values to tell
            continue
        out[name] = {k: float(v) for k, v in values.items()}
    return out
