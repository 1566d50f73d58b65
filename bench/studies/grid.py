"""Ablation grids (docs/design.md, "Grids, tuning, reports"): the cartesian product of method lists x starting
weights (`inits`) x budgets x seeds over a base configuration, run so that a crash, a kill -9 or a reboot loses nothing.

Each cell is an ordinary run under `OUT/<study>/<run_id>/`. Workers claim cells (vtbench.studies.folder.Claim),
so no cell runs twice at once and a dead worker's cell is taken over. Finished cells are skipped, partial ones
resume from their checkpoint, failed ones are retried `retries` more times.
"""

import itertools
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from vtbench.engine import results
from vtbench.engine.config import RunConfig, apply, method_spec
from vtbench.engine.init import check_fits, init_label
from vtbench.engine.launch import execute_or_launch, settle_failure
from vtbench.engine.runner import FINAL_STATUSES, stop_requested
from vtbench.errors import ConfigError
from vtbench.studies.folder import Claim, read_study_yaml, slurm_options, validate_methods

KEYS = ("study", "base", "methods", "inits", "budgets", "seeds", "retries", "slurm", "nproc_per_run")


@dataclass
class Grid:
    study: str
    cells: list[RunConfig]
    retries: int = 1
    slurm: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    labels: dict[str, str] = field(default_factory=dict)  # run_id -> "methods @ budget, seed"
    kind: ClassVar[str] = "grid"

    @property
    def nproc(self) -> int:
        """The most processes a cell runs on (a local worker's group of GPUs)."""
        return max(cell.nproc for cell in self.cells)


def load_grid(path: str | Path, nproc: int | None = None) -> Grid:
    """The grid of a YAML file; `nproc` (the command line's) overrides its `nproc_per_run`."""
    data, where, study, base_values = read_study_yaml(path, KEYS, "grid")
    base = apply(RunConfig(), base_values, where=f"{where}: base")
    if data.get("nproc_per_run") is not None:
        base = apply(base, {"nproc": data["nproc_per_run"]}, where=f"{where}: nproc_per_run")
    forced = {} if nproc is None else {"nproc": nproc}  # the command line's, over a cell's own `set`
    axes = {}
    for axis in ("methods", "budgets", "seeds"):
        values = data.get(axis, [base.methods] if axis == "methods" else [getattr(base, axis[:-1])])
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: {axis} must be a non-empty list, got {values!r}")
        axes[axis] = values
    retries = data.get("retries", 1)
    if not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"{where}: retries must be a whole number >= 0, got {retries!r}")
    slurm = slurm_options(data, where)
    cells, labels = [], {}
    inits = _inits(data.get("inits", [base.init]), where)
    for entry, init, budget, seed in _cells(axes, inits, where):
        methods, overrides = entry, {}
        if isinstance(entry, dict) and "methods" in entry:  # {methods: [...], set: {run settings}, budgets: [...]}
            methods, overrides = entry["methods"], entry.get("set") or {}
        entries = methods if isinstance(methods, list) else [methods]
        specs = [method_spec(m, f"{where}: methods") for m in entries]
        cell = apply(base, {"init": init, **overrides, "budget": budget, "seed": seed, **forced}, where=where)
        cell.methods = specs
        try:
            cell = cell.resolve()
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
        validate_methods(cell, where)
        start = f" from {init_label(cell.init)}" if cell.init else ""
        label = f"{cell.label()}{start} @ {cell.budget}, seed {seed}"
        if cell.run_id() in labels:
            raise ConfigError(f"{where}: the cell {label} is listed twice; each cell must differ in its methods, "
                              "settings, budget or seed")
        labels[cell.run_id()] = label
        cells.append(cell)
    fitted = set()
    for cell in cells:  # a start that does not fit its model is refused before any cell runs
        key = json.dumps([cell.init, cell.model, cell.arch, cell.model_args, cell.frames, cell.size], sort_keys=True)
        if key not in fitted:
            check_fits(cell)
            fitted.add(key)
    return Grid(study, cells, retries, slurm, where, labels)


def _inits(values: Any, where: str) -> list[dict]:
    """The `inits` axis: each a start as `init` takes it, `scratch` (or an empty mapping) for random weights."""
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: inits must be a non-empty list of starts (scratch, or {{file: PATH, format: "
                          f"timm | videomae | vtbench}}), got {values!r}")
    out = []
    for value in values:
        if value in ("scratch", None):
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: inits: each start is scratch or a mapping such as {{file: PATH, format: "
                              f"timm}}, got {value!r}")
        out.append(value)
    return out


def _cells(axes: dict[str, list], inits: list[dict], where: str):
    """(methods entry, init, budget, seed) of every cell: the product of the axes, where an entry of the form
    {methods: [...], set: {...}, budgets: [...]} runs at its own budgets (a baseline's ladder beside methods
    at one budget)."""
    for entry in axes["methods"]:
        budgets = axes["budgets"]
        if isinstance(entry, dict) and "methods" in entry:
            extra = sorted(set(entry) - {"methods", "set", "budgets"})
            if extra:
                raise ConfigError(f"{where}: methods entry {entry!r}: unknown key {extra[0]!r}; "
                                  "allowed: methods, set, budgets")
            if not isinstance(entry.get("set") or {}, dict):
                raise ConfigError(f"{where}: methods entry {entry!r}: set must be a mapping of run settings, "
                                  f"got {entry['set']!r}")
            budgets = entry.get("budgets", budgets)
            if not isinstance(budgets, list) or not budgets:
                raise ConfigError(f"{where}: methods entry {entry!r}: budgets must be a non-empty list, "
                                  f"got {budgets!r}")
        for init, budget, seed in itertools.product(inits, budgets, axes["seeds"]):
            yield entry, init, budget, seed


# ---- running ----------------------------------------------------------------------------------------------


def cell_status(folder: Path, run_id: str) -> tuple[str | None, int]:
    """(status in summary.json or None, failed attempts so far)."""
    summary = folder / run_id / results.SUMMARY
    attempts_file = folder / run_id / "attempts.json"
    attempts = results.read_json(attempts_file)["failed"] if attempts_file.exists() else 0
    status = results.read_json(summary).get("status") if summary.exists() else None
    return status, attempts


def _left(grid: Grid, folder: Path, run_id: str) -> tuple[bool, int]:
    """Whether a worker would still run the cell (not ended, not failed more often than the grid retries), and
    how often it failed."""
    status, failed = cell_status(folder, run_id)
    return not (status in FINAL_STATUSES or (status == "failed" and failed > grid.retries)), failed


def cells_left(grid: Grid, folder: Path) -> list[RunConfig]:
    """The cells a worker would still run."""
    return [cell for cell in grid.cells if _left(grid, folder, cell.run_id())[0]]


def run_worker(grid: Grid, folder: Path, progress_bar: bool = True, on_done=None, world=None) -> int:
    """Run every cell this worker can claim; returns how many it ran. Safe to run in many processes at once.

    A worker of several processes (`world`, the tasks of one SLURM job) runs each cell on all of them: rank 0
    claims it and tells the others which. A cell that fails there ends the worker, since its processes may no
    longer agree; rerunning the grid resumes the cell."""
    main = world is None or world.main
    ran, start = 0, 0
    while True:
        # a worker asked to stop (a scheduler's SIGTERM) claims nothing more
        taken = _claim_next(grid, folder, start) if main and not stop_requested() else None
        index = taken[0] if taken else len(grid.cells)
        if world is not None:
            try:
                index = int(world.agree([float(index)])[0])
            except BaseException:
                if taken:
                    taken[1].release()
                raise
        if index >= len(grid.cells):
            return ran
        cell, run_id, start = grid.cells[index], grid.cells[index].run_id(), index + 1
        began = time.time()
        try:
            execute_or_launch(cell, folder, progress_bar=progress_bar)
        except Exception as err:  # noqa: BLE001 - recorded by the run (status failed); the grid goes on
            several = world is not None and world.size > 1
            if main:
                error = (settle_failure(folder / run_id, began, world.size) if several else None) \
                    or f"{type(err).__name__}: {err}"
                results.write_json(folder / run_id / "attempts.json", {"failed": taken[2] + 1, "error": error})
            if several:
                raise
        finally:
            if taken:
                taken[1].release()
        ran += 1
        if main:
            with open(folder / "workers.log", "a") as log:  # one short line: an atomic append
                log.write(f"{run_id} {socket.gethostname()} {os.getpid()} {time.time():.3f}\n")
        if on_done:
            on_done(run_id, grid.labels.get(run_id, run_id), folder / run_id)


def _claim_next(grid: Grid, folder: Path, start: int) -> tuple[int, Claim, int] | None:
    """The first cell from `start` on that is left and that this worker could claim: (index, claim, failures)."""
    for index in range(start, len(grid.cells)):
        run_id = grid.cells[index].run_id()
        if not _left(grid, folder, run_id)[0]:
            continue
        claim = Claim.take(folder / f"{run_id}.claim")
        if claim is None:
            continue
        left, failed = _left(grid, folder, run_id)  # another worker may have finished it meanwhile
        if left:
            return index, claim, failed
        claim.release()
    return None
