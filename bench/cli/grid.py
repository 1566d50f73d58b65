"""`vtbench grid`: executors around `vtbench.studies.grid.run_worker`, with a progress bar over cells."""

import signal
import sys
from pathlib import Path

from tqdm import tqdm

from vtbench.engine import results
from vtbench.engine.distributed import World, launched_size
from vtbench.engine.runner import Stopped, request_stop
from vtbench.errors import VtbenchError
from vtbench.studies.executors import run_local, run_slurm
from vtbench.studies.folder import prepare_study, writable_folder
from vtbench.studies.grid import Grid, cell_status, cells_left, load_grid, run_worker
from vtbench.studies.status import write_plan


def _finished(grid: Grid, folder: Path) -> int:
    return sum(cell_status(folder, cell.run_id())[0] is not None for cell in grid.cells)


def _line(label: str, run_dir: Path) -> str:
    if not (run_dir / results.SUMMARY).exists():  # it failed before it could start
        error = results.read_json(run_dir / "attempts.json").get("error", "")
        return f"{'failed':>9}  before training: {error}  {label}  ({run_dir.name})"
    s = results.read_json(run_dir / results.SUMMARY)
    top1 = "n/a" if s.get("top1") is None else f"{s['top1']:.1f}%"
    return f"{s['status']:>9}  top-1 {top1:>6}  {s['train_s']:7.1f}s  {label}  ({run_dir.name})"


def run_grid(args) -> int:
    if launched_size() > 1:
        raise VtbenchError("vtbench grid runs its cells' processes itself (nproc_per_run); start it without torchrun")
    nproc = getattr(args, "nproc", None)
    grid = load_grid(args.config, nproc)
    if args.workers < 1:
        raise VtbenchError(f"--workers must be at least 1, got {args.workers}")
    if args.executor == "slurm" and len({cell.nproc for cell in grid.cells}) > 1:
        counts = sorted({cell.nproc for cell in grid.cells})
        raise VtbenchError(f"{grid.source}: under --executor slurm every cell runs on the same number of processes "
                           f"(one SLURM job of that many tasks per worker); these cells ask for {counts}: run them "
                           "as separate grids")
    folder = prepare_study(writable_folder(Path(args.out)), grid)
    write_plan(folder, {"kind": "grid", "retries": grid.retries, "cells": [
        {"run_id": c.run_id(), "label": grid.labels[c.run_id()], "budget": c.budget, "nproc": c.nproc}
        for c in grid.cells]})
    bar = tqdm(total=len(grid.cells), initial=_finished(grid, folder), desc=grid.study, unit="cell",
               disable=args.no_progress)
    if args.executor != "inline" and not cells_left(grid, folder):
        print("every cell has ended: no worker started", file=sys.stderr)
    elif args.executor == "inline":
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


def slurm_worker(config: str, out: str, nproc: int | None = None) -> int:
    """One array job: the same claim loop as a local worker, on whatever nodes SLURM gave it; a job of several
    tasks runs each cell on all of them (one process per task)."""
    # scancel, preemption and the time limit's warning (submitit asks for SIGUSR2) stop the cell at its next step
    # with a checkpoint, instead of the SIGKILL that follows losing what it trained since the last one
    for signum in (signal.SIGTERM, signal.SIGUSR2):
        signal.signal(signum, request_stop)
    grid = load_grid(config, nproc)
    world = World.join_slurm_job() if grid.nproc > 1 else None
    try:
        return run_worker(grid, prepare_study(Path(out), grid), progress_bar=False, world=world)
    except Stopped as stop:
        print(f"vtbench: worker stopped by a signal: {stop}", file=sys.stderr)
        return 0
    finally:
        if world is not None:
            world.leave()


def _run_slurm(args, grid: Grid, folder: Path, bar: tqdm) -> None:
    config, out = str(Path(args.config).resolve()), str(Path(args.out).resolve())
    nproc = getattr(args, "nproc", None)
    run_slurm(slurm_worker, [(config, out, nproc)] * args.workers, folder, grid.slurm, args.workers, bar,
              lambda: _finished(grid, folder), tasks=grid.nproc)


def _run_local(args, grid: Grid, folder: Path, bar: tqdm) -> None:
    nproc = ["--nproc", str(args.nproc)] if getattr(args, "nproc", None) else []
    run_local(["grid", args.config, "--executor", "inline", "--out", args.out, "--no-progress", *nproc], args.workers,
              bar, lambda: _finished(grid, folder), devices_per_worker=grid.nproc)
