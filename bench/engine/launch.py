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


class RankFailed(Exception):
    """A rank of a run ended with an error; the run's summary says which and why."""


def execute_or_launch(config: RunConfig, out: str | Path, progress_bar: bool = True) -> Path:
    """Train `config` (resolved) here, or in `config.nproc` local processes when it asks for several and no
    launcher started this process as one of them."""
    from vtbench.engine.distributed import launched_size
    from vtbench.engine.runner import execute

    if config.nproc > 1 and launched_size() <= 1:
        return launch(config, out, progress_bar)
    return execute(config, out, progress_bar=progress_bar)


def launch(config: RunConfig, out: str | Path, progress_bar: bool = True) -> Path:
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
        elastic_launch(spec, _rank)(config, str(out), progress_bar)
    except ChildFailedError as err:
        rank, failure = _root_cause(err)
        error = f"rank {rank} of {config.nproc}: {_reason(failure)}"
        record_failure(run_dir, error, began, config.nproc, _traceback(failure))
        raise RankFailed(error) from None
    finally:
        if saved is None:
            os.environ.pop("VTBENCH_THREADS", None)
        else:
            os.environ["VTBENCH_THREADS"] = saved
    return run_dir


@record
def _rank(config: RunConfig, out: str, progress_bar: bool) -> None:
    from vtbench.engine.runner import execute

    execute(config, out, progress_bar=progress_bar)


def _root_cause(err: ChildFailedError):
    """The rank that failed first: one killed by a signal, else one with an error of its own, before those that
    failed waiting on it (a closed connection, a timeout); the earliest, then the lowest rank."""
    def order(item):
        rank, failure = item
        waiting = any(sign in _message(failure) for sign in WAITING)
        return failure.exitcode >= 0, waiting, failure.timestamp, rank

    return min(err.failures.items(), key=order)


WAITING = ("Connection closed by peer", "Connection reset by peer", "DistBackendError", "DistNetworkError",
           "Timed out", "timed out")


def _message(failure) -> str:
    message = failure.message
    return str(message.get("message", "") if isinstance(message, dict) else message).strip()


def _reason(failure) -> str:
    if failure.exitcode < 0:
        return f"ended by signal {failure.signal_name()}"
    message = _message(failure)
    return message.splitlines()[0][:500] if message else f"exit code {failure.exitcode}"


def _traceback(failure) -> str | None:
    message = failure.message
    return message.get("extraInfo", {}).get("py_callstack") if isinstance(message, dict) else None


def record_failure(run_dir: Path, error: str, since: float, world_size: int, trace: str | None) -> None:
    """End the run as `failed` with `error` and the failed rank's traceback: rank 0's summary of this attempt
    keeps its figures; without one (rank 0 was stopped first) a summary of the failure alone."""
    path = run_dir / results.SUMMARY
    summary = results.read_json(path) if path.exists() and path.stat().st_mtime >= since else None
    if summary is not None and summary.get("status") != "failed":
        return  # rank 0 ended the run before the failure (a rank failed on its way out)
    summary = summary or {"run_id": run_dir.name, "world_size": world_size}
    summary.update(status="failed", error=error)
    summary.pop("traceback", None)  # rank 0's, of its wait on the rank that failed
    if trace:
        summary["traceback"] = trace
    run_dir.mkdir(parents=True, exist_ok=True)
    results.write_json(path, summary)
