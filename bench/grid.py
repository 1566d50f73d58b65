"""Ablation grids (DESIGN.md, "Grids, tuning, reports"): the cartesian product of method lists x budgets x
seeds over a base configuration, run so that a crash, a kill -9 or a reboot loses nothing.

Each cell is an ordinary run under `OUT/<study>/<run_id>/`. Workers claim cells atomically (an exclusive
create of `<run_id>.claim`); a claim whose worker died (its process is gone on this host, or its heartbeat is
older than `STALE_S` elsewhere) is taken over. Finished cells are skipped, partial ones resume from their
checkpoint, failed ones are retried `retries` more times.
"""

import itertools
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import results
from .config import RunConfig, apply, load_yaml, method_spec
from .errors import ConfigError

KEYS = ("study", "base", "methods", "budgets", "seeds", "retries", "slurm")
SLURM_KEYS = ("partition", "time_min", "gpus_per_task", "cpus_per_task", "mem_gb", "account", "qos")
FORMAT = 1  # of a study folder; bump when runs of an older vtbench can no longer be read
STALE_S = 120.0  # a claim whose heartbeat is older than this is taken over (other hosts)
HEARTBEAT_S = 20.0


@dataclass
class Grid:
    study: str
    cells: list[RunConfig]
    retries: int = 1
    slurm: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    labels: dict[str, str] = field(default_factory=dict)  # run_id -> "methods @ budget, seed"


def read_study_yaml(path: str | Path, keys: tuple[str, ...], kind: str) -> tuple[dict, str, str, dict]:
    """A grid's or tune's YAML, checked up to its name and base: (data, where, study, base settings)."""
    data = load_yaml(path)
    where = str(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a {kind} is a mapping with keys {', '.join(keys)}; got {type(data).__name__}")
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(keys)}")
    study = data.get("study")
    if not isinstance(study, str) or not study or "/" in study:
        raise ConfigError(f"{where}: study must be a folder name, got {study!r}")
    base_values = data.get("base") or {}
    if not isinstance(base_values, dict):
        raise ConfigError(f"{where}: base must be a mapping of run settings, got {base_values!r}")
    return data, where, study, base_values


def slurm_options(data: dict, where: str) -> dict[str, Any]:
    slurm = data.get("slurm") or {}
    if not isinstance(slurm, dict) or set(slurm) - set(SLURM_KEYS):
        extra = sorted(set(slurm) - set(SLURM_KEYS)) if isinstance(slurm, dict) else slurm
        raise ConfigError(f"{where}: slurm: unknown option {extra}; allowed: {', '.join(SLURM_KEYS)}")
    return slurm


def load_grid(path: str | Path) -> Grid:
    data, where, study, base_values = read_study_yaml(path, KEYS, "grid")
    base = apply(RunConfig(), base_values, where=f"{where}: base")
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
    for methods, budget, seed in itertools.product(axes["methods"], axes["budgets"], axes["seeds"]):
        overrides = {}
        if isinstance(methods, dict) and "methods" in methods:  # {methods: [...], set: {run settings}}
            overrides = methods.get("set") or {}
            methods = methods["methods"]
        entries = methods if isinstance(methods, list) else [methods]
        specs = [method_spec(m, f"{where}: methods") for m in entries]
        cell = apply(base, {**overrides, "budget": budget, "seed": seed}, where=where)
        cell.methods = specs
        cell = cell.resolve()
        validate_methods(cell, where)
        labels[cell.run_id()] = f"{cell.label()} @ {cell.budget}, seed {seed}"
        cells.append(cell)
    return Grid(study, cells, retries, slurm, where, labels)


def validate_methods(cell: RunConfig, where: str) -> None:
    from vtbench.budget import Budget
    from vtbench.methods import build_methods

    try:
        Budget.parse(cell.budget)
        build_methods(cell.methods)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def prepare_study(out: Path, owner: "Grid | Any") -> Path:
    """The study folder of a Grid or a Tune, created or checked: a folder of another study, kind or format is
    refused, never reused."""
    kind = "grid" if isinstance(owner, Grid) else "tune"
    folder = out / owner.study
    marker = folder / "study.json"
    if marker.exists():
        found = results.read_json(marker)
        if found.get("study") != owner.study:
            raise ConfigError(f"{folder} holds study {found.get('study')!r}, not {owner.study!r}; choose another --out")
        if found.get("format") != FORMAT:
            raise ConfigError(f"{folder} was written in study format {found.get('format')} by vtbench "
                              f"{found.get('vtbench')}; this vtbench reads format {FORMAT}")
        if found.get("kind", "grid") != kind:
            raise ConfigError(f"{folder} holds a {found.get('kind', 'grid')} study named {owner.study!r}, not a "
                              f"{kind}; choose another study name or --out")
    else:
        import vtbench

        results.write_json(marker, {"study": owner.study, "kind": kind, "format": FORMAT,
                                    "vtbench": vtbench.__version__})
    return folder


# ---- claims -----------------------------------------------------------------------------------------------


class Claim:
    """An exclusive hold on one cell, kept fresh by a heartbeat thread while its run trains."""

    def __init__(self, path: Path):
        self.path = path
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def owner() -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}

    @classmethod
    def take(cls, path: Path) -> "Claim | None":
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not _abandoned(path):
                    return None
                try:  # take over: move the dead claim aside atomically, one worker wins
                    os.rename(path, path.with_suffix(f".dead.{os.getpid()}"))
                    os.unlink(path.with_suffix(f".dead.{os.getpid()}"))
                except FileNotFoundError:
                    return None
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(cls.owner(), f)
            claim = cls(path)
            claim._start()
            return claim
        return None

    def _start(self) -> None:
        def beat():
            while not self._stop.wait(HEARTBEAT_S):
                try:
                    os.utime(self.path)
                except FileNotFoundError:
                    return

        self._thread = threading.Thread(target=beat, daemon=True, name="vtbench-claim-heartbeat")
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        self.path.unlink(missing_ok=True)


def _abandoned(path: Path) -> bool:
    try:
        owner = json.loads(path.read_text())
        age = time.time() - path.stat().st_mtime
    except (OSError, ValueError):
        return False  # being written right now, or just released
    if owner.get("host") == socket.gethostname():
        try:
            os.kill(owner["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return age > STALE_S


# ---- running ----------------------------------------------------------------------------------------------


def cell_status(folder: Path, run_id: str) -> tuple[str | None, int]:
    """(status in summary.json or None, failed attempts so far)."""
    summary = folder / run_id / results.SUMMARY
    attempts_file = folder / run_id / "attempts.json"
    attempts = results.read_json(attempts_file)["failed"] if attempts_file.exists() else 0
    status = results.read_json(summary).get("status") if summary.exists() else None
    return status, attempts


def run_worker(grid: Grid, folder: Path, progress_bar: bool = True, on_done=None) -> int:
    """Run every cell this worker can claim; returns how many it ran. Safe to run in many processes at once."""
    from .runner import FINAL_STATUSES, execute

    ran = 0
    for cell in grid.cells:
        run_id = cell.run_id()
        status, failed = cell_status(folder, run_id)
        if status in FINAL_STATUSES or (status == "failed" and failed > grid.retries):
            continue
        claim = Claim.take(folder / f"{run_id}.claim")
        if claim is None:
            continue
        try:
            status, failed = cell_status(folder, run_id)  # another worker may have finished it meanwhile
            if status in FINAL_STATUSES or (status == "failed" and failed > grid.retries):
                continue
            try:
                execute(cell, folder, progress_bar=progress_bar)
            except Exception:  # noqa: BLE001 - recorded by the run (status failed); the grid goes on
                results.write_json(folder / run_id / "attempts.json", {"failed": failed + 1})
            ran += 1
            with open(folder / "workers.log", "a") as log:  # one short line: an atomic append
                log.write(f"{run_id} {socket.gethostname()} {os.getpid()} {time.time():.3f}\n")
            if on_done:
                on_done(run_id, grid.labels.get(run_id, run_id), folder / run_id)
        finally:
            claim.release()
    return ran
