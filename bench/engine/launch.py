"""`vtbench run --nproc N`: one run carried by N processes on this machine, started by torch's elastic launcher
(what `torchrun --standalone --nproc-per-node N` runs), one GPU per process where there are GPUs, gloo on the CPU.

The launcher process trains nothing: it starts the ranks, waits, and if one fails it ends the run as `failed`
with that rank and its error (the others are stopped by the launcher). Rerunning the command resumes the run
from its last checkpoint.
"""

import logging
import os
import time
from pathlib import Path

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, record
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from vtbench.engine import cpu, results
from vtbench.engine.config import RunConfig
from vtbench.engine.distributed import launched_size
from vtbench.engine.runner import FAILURE_PREFIX, execute


class RankFailed(Exception):
    """A rank of a run ended with an error; the run's summary says which and why."""


def execute_or_launch(config: RunConfig, out: str | Path, progress_bar: bool = True, on_eval=None) -> Path:
    """Train `config` (resolved) here, or in `config.nproc` local processes when it asks for several and no
    launcher started this process as one of them. `on_eval` as `runner.execute` takes it; launched, it must be
    picklable (rank 0 calls it in its own process)."""
    if config.nproc > 1 and launched_size() <= 1:
        return launch(config, out, progress_bar, on_eval)
    return execute(config, out, progress_bar=progress_bar, on_eval=on_eval)


def launch(config: RunConfig, out: str | Path, progress_bar: bool = True, on_eval=None) -> Path:
    """Train `config` (resolved, `nproc` > 1) in `config.nproc` local processes; returns the run directory."""
    run_dir = Path(out) / config.run_id()
    began = time.time()
    spec = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=config.nproc, run_id=f"vtbench-{run_dir.name}",
                        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1,
                        start_method="spawn")
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # a failure is told in one line below
    saved = os.environ.get("VTBENCH_THREADS")
    os.environ["VTBENCH_THREADS"] = str(max(1, cpu.threads_for_run() // config.nproc))  # the ranks share the cores
    try:
        elastic_launch(spec, _rank)(config, str(out), progress_bar, on_eval)
    except ChildFailedError as err:
        failure = _root_cause(err, _rank_accounts(run_dir, began))
        error = f"rank {failure['rank']} of {config.nproc}: {failure['error']}"
        if record_failure(run_dir, error, began, config.nproc, failure) == "failed":
            raise RankFailed(error) from None
        # an end of its own (oom, or rank 0 had ended the run before a rank failed on its way out): told as any run's
    finally:
        if saved is None:
            os.environ.pop("VTBENCH_THREADS", None)
        else:
            os.environ["VTBENCH_THREADS"] = saved
    return run_dir


@record
def _rank(config: RunConfig, out: str, progress_bar: bool, on_eval=None) -> None:
    execute(config, out, progress_bar=progress_bar, on_eval=on_eval)


def _rank_accounts(run_dir: Path, since: float) -> list[dict]:
    """The failed ranks' own accounts of this attempt (the runner writes one as a rank fails)."""
    accounts = []
    for path in run_dir.glob(f"{FAILURE_PREFIX}*.json"):
        account = results.read_json(path)
        path.unlink(missing_ok=True)
        if account.get("time", 0) >= since:
            accounts.append(account)
    return accounts


def _root_cause(err: ChildFailedError, accounts: list[dict]) -> dict:
    """The rank that failed first: one killed by a signal (it could write nothing), else the earliest account of an
    error of its own, before those of ranks that failed waiting on it (a closed connection, a timeout); else what
    the launcher saw."""
    killed = sorted(rank for rank, f in err.failures.items() if f.exitcode < 0)
    if killed:
        failure = err.failures[killed[0]]
        return {"rank": killed[0], "status": "failed", "error": f"ended by signal {failure.signal_name()}"}
    if accounts:
        return _first(accounts)
    rank, failure = min(err.failures.items(), key=lambda item: (_waiting(_message(item[1])), item[0]))
    return {"rank": rank, "status": "failed", "error": _reason(failure), "traceback": _traceback(failure)}


def _first(accounts: list[dict]) -> dict:
    return min(accounts, key=lambda a: (_waiting(a["error"]), a["time"], a["rank"]))


def settle_failure(run_dir: Path, since: float, world_size: int) -> str | None:
    """End a run whose ranks another launcher started (SLURM) with the rank that failed first, from the ranks' own
    accounts, once the run has failed on rank 0 too; returns the error it ends with (None: no account found)."""
    accounts = _rank_accounts(run_dir, since)
    if not accounts:
        return None
    failure = _first(accounts)
    error = f"rank {failure['rank']} of {world_size}: {failure['error']}"
    if _waiting(failure["error"]):  # every account is of a wait: the rank that failed first could write none
        error = f"a rank ended without an account (killed?); {error}"
    record_failure(run_dir, error, since, world_size, failure)
    return error


WAITING = ("Connection closed by peer", "Connection reset by peer", "DistBackendError", "DistNetworkError",
           "Timed out", "timed out")


def _waiting(message: str) -> bool:
    return any(sign in message for sign in WAITING)


def _message(failure) -> str:
    message = failure.message
    return str(message.get("message", "") if isinstance(message, dict) else message).strip()


def _reason(failure) -> str:
    message = _message(failure)
    return message.splitlines()[0][:500] if message else f"exit code {failure.exitcode}"


def _traceback(failure) -> str | None:
    message = failure.message
    return message.get("extraInfo", {}).get("py_callstack") if isinstance(message, dict) else None


def record_failure(run_dir: Path, error: str, since: float, world_size: int, failure: dict) -> str:
    """End the run with the failed rank's status (`failed`, or `oom` with its shape), `error` and traceback: rank
    0's summary of this attempt keeps its figures; without one (rank 0 was stopped first) a summary of the failure
    alone. A run that rank 0 ended before the failure (a rank failed on its way out) keeps its end. Returns the
    status the run ends with."""
    path = run_dir / results.SUMMARY
    summary = results.read_json(path) if path.exists() and path.stat().st_mtime >= since else None
    if summary is not None and summary.get("status") not in ("failed", "oom"):
        return summary["status"]
    summary = summary or {"run_id": run_dir.name, "world_size": world_size}
    summary.update(status=failure.get("status", "failed"), error=error)
    summary.pop("traceback", None)  # rank 0's, of its wait on the rank that failed
    summary.update({k: failure[k] for k in ("traceback", "oom_shape", "oom_during") if failure.get(k)})
    run_dir.mkdir(parents=True, exist_ok=True)
    results.write_json(path, summary)
    return summary["status"]
