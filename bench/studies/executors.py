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
              finished: Callable[[], int]) -> None:
    """An array of SLURM tasks, `function(*arguments[i])` each, through submitit; waits for them."""
    try:
        import submitit
    except ImportError:
        raise VtbenchError("--executor slurm needs submitit: pip install 'vtbench[slurm]'") from None
    cluster = os.environ.get("VTBENCH_SUBMITIT_CLUSTER")  # "local" runs the array as local processes (tests)
    executor = submitit.AutoExecutor(folder=folder / "slurm", cluster=cluster)
    parameters = {"timeout_min": options.get("time_min", 24 * 60), "slurm_array_parallelism": parallel}
    parameters.update({SLURM_OPTIONS[k]: v for k, v in options.items() if k in SLURM_OPTIONS})
    if executor.cluster != "slurm":  # submitit's local executor takes only the portable options
        parameters = {"timeout_min": parameters["timeout_min"]}
    executor.update_parameters(**parameters)
    jobs = executor.map_array(function, *zip(*arguments, strict=True))
    print(f"submitted {len(jobs)} workers: {', '.join(j.job_id for j in jobs)} (logs in {folder / 'slurm'})",
          file=sys.stderr)
    _follow(bar, finished, lambda: not all(j.done() for j in jobs), 2.0)
    for job in jobs:
        if job.state not in ("COMPLETED", "FINISHED") and job.exception() is not None:
            print(f"worker {job.job_id} failed: {job.exception()}", file=sys.stderr)
