"""The study folder that grids and tuning studies share: their YAML's common keys, SLURM options, the check that
every cell's methods build, the folder's marker, and claims, the exclusive hold a worker takes on a run.

A claim is an exclusive create of `<run_id>.claim`; a claim whose worker died (its process is gone on this host,
or its heartbeat is older than `STALE_S` elsewhere) is taken over.
"""

import json
import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

from vtbench.engine import results
from vtbench.engine.config import RunConfig, load_yaml
from vtbench.errors import ConfigError

SLURM_KEYS = ("partition", "time_min", "nodes", "gpus_per_task", "cpus_per_task", "mem_gb", "account", "qos")
FORMAT = 1  # of a study folder; bump when runs of an older vtbench can no longer be read
STALE_S = 120.0  # a claim whose heartbeat is older than this is taken over (other hosts)
HEARTBEAT_S = 20.0


STUDY_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


def writable_folder(path: Path, flag: str = "--out") -> Path:
    """`path` if it is, or can become, a folder this process may write in; otherwise one error naming it.
    Nothing is created here."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{flag} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: {existing} is not writable by this user")
    return path


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
    if not isinstance(study, str) or not STUDY_NAME.match(study):
        raise ConfigError(f"{where}: study must be a plain folder name (letters, digits, '.', '_', '-', not "
                          f"starting with '.' or '-'), got {study!r}")
    base_values = data.get("base") or {}
    if not isinstance(base_values, dict):
        raise ConfigError(f"{where}: base must be a mapping of run settings, got {base_values!r}")
    return data, where, study, base_values


def slurm_options(data: dict, where: str) -> dict[str, Any]:
    slurm = data.get("slurm") or {}
    if not isinstance(slurm, dict) or set(slurm) - set(SLURM_KEYS):
        extra = sorted(set(slurm) - set(SLURM_KEYS)) if isinstance(slurm, dict) else slurm
        raise ConfigError(f"{where}: slurm: unknown option {extra}; allowed: {', '.join(SLURM_KEYS)}")
    for key in ("nodes", "time_min", "gpus_per_task", "cpus_per_task", "mem_gb"):
        value = slurm.get(key)
        kinds = (int, float) if key == "mem_gb" else int
        if value is not None and (not isinstance(value, kinds) or isinstance(value, bool) or value <= 0):
            what = "a positive number" if key == "mem_gb" else "a whole number of at least 1"
            raise ConfigError(f"{where}: slurm: {key} must be {what}, got {value!r}")
    return slurm


def validate_methods(cell: RunConfig, where: str) -> None:
    from vtbench.engine.budget import Budget
    from vtbench.methods import build_methods

    try:
        Budget.parse(cell.budget)
        build_methods(cell.methods)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def prepare_study(out: Path, owner: Any) -> Path:
    """The study folder of a Grid or a Tune (`owner.study`, `owner.kind`), created or checked: a folder of another
    study, kind or format is refused, never reused."""
    kind = owner.kind
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

    @staticmethod
    def describe(path: Path) -> str:
        """Who holds the claim at `path`, in words: process, host and since when."""
        try:
            owner = json.loads(path.read_text())
            since = time.strftime("%H:%M:%S", time.localtime(owner["since"]))
            return f"process {owner['pid']} on {owner['host']} (since {since})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

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


def claim_holder(path: Path) -> str | None:
    """Who holds a live claim at `path`, in words; None when nobody does (no claim, or its worker died)."""
    if not path.exists() or _abandoned(path):
        return None
    return Claim.describe(path)


def _abandoned(path: Path) -> bool:
    try:
        owner = json.loads(path.read_text())
        age = time.time() - path.stat().st_mtime
    except (OSError, ValueError):
        return False  # being written right now, or just released
    if owner.get("host") == socket.gethostname():
        return not process_alive(owner["pid"])
    return age > STALE_S


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this host still runs: a killed process that its parent has not reaped yet (a
    zombie; in a container whose first process reaps nothing it stays one) holds nothing."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


