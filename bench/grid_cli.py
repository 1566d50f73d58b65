"""`vtbench grid`: executors around `vtbench.grid.run_worker`, with a progress bar over cells."""

import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from . import results
from .errors import VtbenchError
from .grid import Grid, cell_status, load_grid, prepare_study, run_worker


def _finished(grid: Grid, folder: Path) -> int:
    return sum(cell_status(folder, cell.run_id())[0] is not None for cell in grid.cells)


def _line(label: str, run_dir: Path) -> str:
    s = results.read_json(run_dir / results.SUMMARY)
    top1 = "n/a" if s.get("top1") is None else f"{s['top1']:.1f}%"
    return f"{s['status']:>9}  top-1 {top1:>6}  {s['train_s']:7.1f}s  {label}  ({run_dir.name})"


def run_grid(args) -> int:
    grid = load_grid(args.config)
    folder = prepare_study(Path(args.out), grid)
    if args.workers < 1:
        raise VtbenchError(f"--workers must be at least 1, got {args.workers}")
    bar = tqdm(total=len(grid.cells), initial=_finished(grid, folder), desc=grid.study, unit="cell",
               disable=args.no_progress)
    if args.executor == "inline":
        def done(run_id, label, run_dir):
            bar.update(1)
            bar.write(_line(label, run_dir))

        run_worker(grid, folder, progress_bar=not args.no_progress, on_done=done)  # the cell's own bar below
    elif args.executor == "local":
        _run_local(args, grid, folder, bar)
    else:
        _run_slurm(args, grid, folder, bar)
    bar.close()
    counts: dict[str, int] = {}
    for cell in grid.cells:
        status = cell_status(folder, cell.run_id())[0] or "not run"
        counts[status] = counts.get(status, 0) + 1
    print(", ".join(f"{n} {status}" for status, n in sorted(counts.items())), file=sys.stderr)
    print(folder)
    return 0 if counts.get("completed", 0) == len(grid.cells) else 1


def slurm_worker(config: str, out: str) -> int:
    """One array task: the same claim loop as a local worker, on whatever node SLURM gave it."""
    grid = load_grid(config)
    return run_worker(grid, prepare_study(Path(out), grid), progress_bar=False)


def _run_slurm(args, grid: Grid, folder: Path, bar: tqdm) -> None:
    """An array of `--workers` SLURM tasks through submitit, sharing the claims; waits for them."""
    try:
        import submitit
    except ImportError:
        raise VtbenchError("--executor slurm needs submitit: pip install 'vtbench[slurm]'") from None
    cluster = os.environ.get("VTBENCH_SUBMITIT_CLUSTER")  # "local" runs the array as local processes (tests)
    executor = submitit.AutoExecutor(folder=folder / "slurm", cluster=cluster)
    options = grid.slurm
    parameters = {"timeout_min": options.get("time_min", 24 * 60), "slurm_array_parallelism": args.workers}
    names = {"partition": "slurm_partition", "gpus_per_task": "slurm_gpus_per_task",
             "cpus_per_task": "slurm_cpus_per_task", "mem_gb": "slurm_mem_gb", "account": "slurm_account",
             "qos": "slurm_qos"}
    parameters.update({names[k]: v for k, v in options.items() if k in names})
    if executor.cluster != "slurm":  # submitit's local executor takes only the portable options
        parameters = {"timeout_min": parameters["timeout_min"]}
    executor.update_parameters(**parameters)
    jobs = executor.map_array(slurm_worker, [str(Path(args.config).resolve())] * args.workers,
                              [str(Path(args.out).resolve())] * args.workers)
    print(f"submitted {len(jobs)} workers: {', '.join(j.job_id for j in jobs)} (logs in {folder / 'slurm'})",
          file=sys.stderr)
    seen = _finished(grid, folder)
    while not all(j.done() for j in jobs):
        time.sleep(2.0)
        now = _finished(grid, folder)
        bar.update(now - seen)
        seen = now
    bar.update(_finished(grid, folder) - seen)
    for job in jobs:
        if job.state not in ("COMPLETED", "FINISHED") and job.exception() is not None:
            print(f"worker {job.job_id} failed: {job.exception()}", file=sys.stderr)


def _run_local(args, grid: Grid, folder: Path, bar: tqdm) -> None:
    """N worker processes sharing the claims; on GPUs one per device through CUDA_VISIBLE_DEVICES."""
    gpus = torch.cuda.device_count()
    workers = []
    for index in range(args.workers):
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
        command = [sys.executable, "-m", "vtbench.cli", "grid", args.config, "--executor", "inline",
                   "--out", args.out, "--no-progress"]
        workers.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL))
    seen = _finished(grid, folder)
    while any(w.poll() is None for w in workers):
        time.sleep(1.0)
        now = _finished(grid, folder)
        bar.update(now - seen)
        seen = now
    bar.update(_finished(grid, folder) - seen)
