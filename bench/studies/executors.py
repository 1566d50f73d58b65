"""Executors shared by `vtbench grid` and `vtbench tune`: N local worker processes, or a SLURM array through
submitit. Workers coordinate through their study folder (grid claims) or storage (Optuna), never through the
launcher, so the launcher only starts them, shows progress and waits."""

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from vtbench.engine.cpu import cores_allowed
from vtbench.errors import VtbenchError

SLURM_OPTIONS = {"partition": "slurm_partition", "gpus_per_task": "slurm_gpus_per_task",
                 "cpus_per_task": "slurm_cpus_per_task", "mem_gb": "slurm_mem_gb", "account": "slurm_account",
                 "qos": "slurm_qos"}


def _follow(bar: tqdm, finished: Callable[[], int], running: Callable[[], bool], every: float) -> None:
    seen = finished()
    while running():
        time.sleep(every)
        now = finished()
        bar.update(now - seen)
        seen = now
    bar.update(finished() - seen)


def run_local(arguments: list[str], workers: int, bar: tqdm, finished: Callable[[], int],
              devices_per_worker: int = 1) -> list[int]:
    """`workers` processes of `python -m vtbench.cli ARGUMENTS`, the worker's index in VTBENCH_WORKER: on GPUs
    each with its group of `devices_per_worker` devices (CUDA_VISIBLE_DEVICES; a cell of several processes runs one
    on each), on a CPU each with its share of the cores. Returns their exit codes."""
    gpus = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")  # the devices the user left us, by their own names
    devices = visible.split(",") if visible else [str(k) for k in range(gpus)]
    groups = [devices[k:k + devices_per_worker] for k in range(0, len(devices) - devices_per_worker + 1,
                                                                devices_per_worker)]
    if gpus and not groups:
        raise VtbenchError(f"a cell runs on {devices_per_worker} GPUs, and {len(devices)} are visible here")
    processes = []
    given = os.environ.get("VTBENCH_THREADS") or os.environ.get("OMP_NUM_THREADS") or ""
    threads = int(given) if given.isdigit() and int(given) >= 1 else max(1, cores_allowed() // workers)
    if not gpus:
        print(f"{workers} local workers on {cores_allowed()} cores: {threads} thread{'s' * (threads > 1)} each"
              + (" (as the environment sets)" if given.isdigit() else ""), file=sys.stderr)
    for index in range(workers):
        env = dict(os.environ, VTBENCH_WORKER=str(index))
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(groups[index % len(groups)])
        else:  # CPU workers share the cores instead of each starting a thread per core
            env.update(VTBENCH_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
        processes.append(subprocess.Popen([sys.executable, "-m", "vtbench.cli", *arguments], env=env,
                                          stdout=subprocess.DEVNULL))
    _follow(bar, finished, lambda: any(p.poll() is None for p in processes), 1.0)
    return [p.returncode for p in processes]


def run_slurm(function: Callable, arguments: list[list], folder: Path, options: dict, parallel: int, bar: tqdm,
              finished: Callable[[], int], tasks: int = 1) -> None:
    """An array of SLURM jobs, `function(*arguments[i])` each, through submitit; waits for them. A job of `tasks`
    tasks (a run of several processes) runs the function in each task, `nodes` of them sharing the tasks out.

    A job counts as ended once `squeue` no longer lists it, so waiting needs no accounting (`sacct`, which
    submitit's own wait needs: without it, a cancelled job would be waited for forever)."""
    try:
        import submitit
    except ImportError:
        raise VtbenchError("--executor slurm needs submitit: pip install 'vtbench[slurm]'") from None
    nodes = options.get("nodes", 1)
    if tasks % nodes:
        raise VtbenchError(f"slurm: nodes {nodes} does not divide the {tasks} processes of a cell (nproc_per_run)")
    cluster = os.environ.get("VTBENCH_SUBMITIT_CLUSTER")  # "local" runs the array as local processes (tests)
    executor = submitit.AutoExecutor(folder=folder / "slurm", cluster=cluster)
    parameters = {"timeout_min": options.get("time_min", 24 * 60), "slurm_array_parallelism": parallel,
                  "nodes": nodes, "tasks_per_node": tasks // nodes}
    parameters.update({SLURM_OPTIONS[k]: v for k, v in options.items() if k in SLURM_OPTIONS})
    if executor.cluster != "slurm":  # submitit's local executor takes only the portable options
        parameters = {k: parameters[k] for k in ("timeout_min", "nodes", "tasks_per_node")}
    executor.update_parameters(**parameters)
    jobs = executor.map_array(function, *zip(*arguments, strict=True))
    print(f"submitted {len(jobs)} workers: {', '.join(j.job_id for j in jobs)} (logs in {folder / 'slurm'})",
          file=sys.stderr)
    if executor.cluster == "slurm":
        queue = Queue({j.job_id.split("_")[0] for j in jobs})
        _follow(bar, finished, queue.holds_any, 2.0)
    else:
        _follow(bar, finished, lambda: not all(j.done() for j in jobs), 2.0)
    for line in (line for job in jobs for line in _outcome(job)):
        print(line, file=sys.stderr)


class Queue:
    """Whether SLURM still holds any job of some arrays (pending, running, completing...), from `squeue`."""

    STATES = "PENDING,RUNNING,CONFIGURING,COMPLETING,SUSPENDED,REQUEUED,RESIZING"  # whatever SQUEUE_STATES says
    PATIENCE_S = 600.0  # how long squeue may keep failing (a controller restarting) before the launcher gives up

    def __init__(self, arrays: set[str]):
        self.arrays = arrays
        self.failing_since: float | None = None

    def holds_any(self) -> bool:
        command = ["squeue", "--noheader", "--array", "--format=%i", f"--states={self.STATES}",
                   "--jobs=" + ",".join(sorted(self.arrays))]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            raise VtbenchError("squeue is not on this machine's PATH: the SLURM launcher needs it to follow its "
                               "workers") from None
        except subprocess.TimeoutExpired:
            return self._failed("squeue did not answer within 60 s")
        if result.returncode and "Invalid job id" in result.stderr:  # every job ended long enough ago
            return False
        if result.returncode:
            return self._failed(f"squeue failed: {result.stderr.strip()[:200]}")
        self.failing_since = None
        return any(line.split("_")[0] in self.arrays for line in result.stdout.split())

    def _failed(self, reason: str) -> bool:
        """The jobs may still run (the controller may be busy or restarting): ask again, for a while."""
        now = time.monotonic()
        self.failing_since = self.failing_since or now
        if now - self.failing_since > self.PATIENCE_S:
            raise VtbenchError(f"{reason}, for {self.PATIENCE_S / 60:.0f} minutes: the launcher stops following "
                               f"jobs {', '.join(sorted(self.arrays))}; they may still run (see squeue), and "
                               "rerunning the command picks up their cells")
        print(f"{reason}; asking again", file=sys.stderr)
        return True


def _outcome(job) -> list[str]:
    """What became of a job that has left the queue, one line per task that failed."""
    tasks = [job.task(k) for k in range(job.num_tasks)] if job.num_tasks > 1 else [job]
    lines = []
    for task in tasks:
        name = job.job_id + (f" task {task.task_id}" if job.num_tasks > 1 else "")
        if not task.paths.result_pickle.exists():  # killed, cancelled or out of time before it could return
            lines.append(f"worker {name} ended without a result (cancelled, out of time or killed); its log: "
                         f"{task.paths.stderr}")
        elif task.exception() is not None:
            lines.append(f"worker {name} failed; its log: {task.paths.stderr}")
    return lines
