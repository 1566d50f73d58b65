"""The study folder that grids and tuning studies share: their YAML's common keys, SLURM options, the check that
every cell's methods build, the folder's marker, and claims, the exclusive hold a worker takes on a run.

A claim is `<run_id>.claim`, a small JSON file naming its worker (host, pid, since), on which that worker holds an
exclusive `flock` for as long as it runs the cell. The kernel drops the lock when the worker ends, however it ends
(kill -9 included), so on one host the lock alone says whether a claim is held; nothing judges process ids: a claim
file that nobody locks (its worker died, died before it wrote a word, or its pid now names another process) is taken
over at once. A claim file appears whole, written and locked under a temporary name and then linked (new) or renamed
(taking over a dead one, while holding that one's lock) into place, so workers racing for one cell are decided by
the lock: exactly one wins.

A worker on another host of a shared file system may hold a lock this host cannot see (NFS mounted `nolock` or
`local_lock=flock`, Lustre's `localflock`): its claim is respected while its heartbeat, the file's mtime that the
holder touches every `HEARTBEAT_S`, is younger than `STALE_S`. Where the file system refuses locks altogether, claims
fall back to judging the process (this host) and the heartbeat (others), with the races that has; a warning says so.

Claims need fcntl: Linux and macOS. Windows is not supported (taking a claim there is refused with an error).
A worker's forked children (data loader workers) share its lock until they end.
"""

import errno
import json
import os
import re
import secrets
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import vtbench
from vtbench.core.budget import Budget
from vtbench.engine import results
from vtbench.engine.config import RunConfig, load_yaml
from vtbench.errors import ConfigError, VtbenchError
from vtbench.methods import build_methods

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

SLURM_KEYS = ("partition", "time_min", "nodes", "gpus_per_task", "cpus_per_task", "mem_gb", "account", "qos")
FORMAT = 1  # of a study folder; bump when runs of an older vtbench can no longer be read
STALE_S = 120.0  # an unlocked claim of another host whose heartbeat is older than this is taken over
HEARTBEAT_S = 20.0
PROBE_WAIT_S = 1.0  # how long a taker waits out readers that only look at a claim (a shared lock, for an instant)


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
        results.write_json(marker, {"study": owner.study, "kind": kind, "format": FORMAT,
                                    "vtbench": vtbench.__version__})
    return folder




class Claim:
    """An exclusive hold on one cell: the claim file at `path`, held open and locked (flock) for the claim's life,
    its mtime kept fresh by a heartbeat thread for workers on other hosts."""

    def __init__(self, path: Path, fd: int | None = None):
        self.path = Path(path)
        self._fd = fd
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def owner() -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}

    @classmethod
    def take(cls, path: Path) -> "Claim | None":
        """The claim at `path`, now held by this process, or None while a live worker holds it (one of this host,
        this process included, by its lock; one of another host also while its heartbeat is fresh)."""
        if fcntl is None:
            raise VtbenchError("claims on run folders need fcntl (Linux, macOS); Windows is not supported")
        path = Path(path)
        fd, tmp, locks = _prepared(path)
        try:
            held = _place(path, fd, tmp, locks)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        if held != fd:
            os.close(fd)
        tmp.unlink(missing_ok=True)  # linked into place, or not needed
        if held is None:
            return None
        claim = cls(path, held)
        claim._start()
        return claim

    @staticmethod
    def describe(path: Path) -> str:
        """Who holds the claim at `path`, in words: process, host and since when."""
        try:
            return _words(json.loads(Path(path).read_text()))
        except (OSError, ValueError):
            return "another process"

    def _start(self) -> None:
        target = self._fd if os.utime in os.supports_fd else self.path  # this claim's file, even once replaced

        def beat():
            while not self._stop.wait(HEARTBEAT_S):
                try:
                    os.utime(target)
                except OSError:
                    return

        self._thread = threading.Thread(target=beat, daemon=True, name="vtbench-claim-heartbeat")
        self._thread.start()

    def release(self) -> None:
        """Remove the claim file (unless another host took it over meanwhile) and drop its lock; the next worker
        takes the cell. Releasing twice does nothing."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _is_at(fd, self.path):
                self.path.unlink()  # still locked: a worker that opened it meanwhile finds it gone, and retries
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)


def claim_holder(path: Path) -> str | None:
    """Who holds a live claim at `path`, in words; None when nobody does (no claim, or its worker died). Looks
    with a shared lock for an instant, which a worker taking the claim waits out."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        owner, age = _read_owner(fd)
        locked = _lock(fd, fcntl.LOCK_SH) if fcntl is not None else None
        if locked:
            fcntl.flock(fd, fcntl.LOCK_UN)
        if locked is None:
            held = not _lockless_abandoned(owner, age)
        else:
            held = locked is False or _remote_and_fresh(owner, age)
        return _words(owner) if held else None
    finally:
        os.close(fd)


def _words(owner: Any) -> str:
    try:
        since = time.strftime("%H:%M:%S", time.localtime(owner["since"]))
        return f"process {owner['pid']} on {owner['host']} (since {since})"
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        return "another process"


_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}


def _lock(fd: int, how: int) -> bool | None:
    """Lock `fd` (fcntl.LOCK_EX or LOCK_SH) without waiting: True when locked, False when another open file holds a
    lock in the way, None when this file system does not lock."""
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as err:
        if err.errno in _NO_LOCKS:
            return None
        raise


def _prepared(path: Path) -> tuple[int, Path, bool]:
    """This worker's claim, written and locked under a temporary name beside `path`: (fd, that name, whether the
    file system locks)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
    try:
        locks = _lock(fd, fcntl.LOCK_EX) is not None  # a name nobody else knows: never in another's way
        if not locks:
            warnings.warn(f"{path.parent} does not support file locks: claims there are judged by process id and "
                          f"heartbeat, and two workers may take the same dead claim", RuntimeWarning, stacklevel=3)
        os.write(fd, json.dumps(Claim.owner()).encode())
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    return fd, tmp, locks


def _place(path: Path, fd: int, tmp: Path, locks: bool) -> int | None:
    """Put this worker's claim (`fd`, written at `tmp`) at `path` unless a live worker holds it there: the fd that
    holds the claim, or None."""
    probed_until = time.monotonic() + PROBE_WAIT_S
    for _ in range(10_000):  # each turn, another worker changed `path`; they end
        created = _create(path, fd, tmp, locks)
        if created is not None:
            return created
        try:
            other = _open(path)
        except FileNotFoundError:
            continue  # released meanwhile
        try:
            verdict = _judge(other, path, locks)
            if verdict == "look" and time.monotonic() < probed_until:
                time.sleep(0.002)  # a reader's shared lock, for an instant
                continue
            if verdict != "dead":
                if verdict == "moved":
                    continue
                return None
            os.rename(tmp, path)  # over the dead claim, whose lock this worker holds: nobody else replaces it now
            return fd
        finally:
            os.close(other)
    return None


def _create(path: Path, fd: int, tmp: Path, locks: bool) -> int | None:
    """This worker's claim put at `path` where there is none: the fd that holds it; None when a claim is there."""
    try:
        os.link(tmp, path)  # whole and locked as it appears
        return fd
    except FileExistsError:
        return None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK):
            raise
    # no hard links here: create the claim in place, lock it, then write it. A worker that locks it first finds it
    # empty (as a worker killed before it wrote) and takes it over; this one then finds it moved
    try:
        new = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
    except FileExistsError:
        return None
    if (locks and not _lock(new, fcntl.LOCK_EX)) or not _is_at(new, path):
        os.close(new)
        return None
    os.write(new, json.dumps(Claim.owner()).encode())
    return new


def _judge(other: int, path: Path, locks: bool) -> str:
    """What the claim open at `other` is: "held" (a live worker's), "dead" (this worker may take it over; it then
    holds its lock), "moved" (no longer at `path`: look again) or "look" (only a reader's shared lock is on it)."""
    if locks:
        locked = _lock(other, fcntl.LOCK_EX)
        if locked is False:
            if _lock(other, fcntl.LOCK_SH):
                fcntl.flock(other, fcntl.LOCK_UN)
                return "look"  # nobody holds it exclusively: a reader
            return "held"
        if locked and not _is_at(other, path):
            return "moved"  # released or taken over while this worker opened it
        owner, age = _read_owner(other)
        if locked:  # no worker of this host holds it, whatever process its pid names now
            return "held" if _remote_and_fresh(owner, age) else "dead"
    else:
        owner, age = _read_owner(other)
    return "dead" if _lockless_abandoned(owner, age) else "held"


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR)
    except PermissionError:  # another user's claim in a shared folder: flock locks read-only files too
        return os.open(path, os.O_RDONLY)


def _is_at(fd: int, path: Path) -> bool:
    """Whether the file open at `fd` is the one at `path` now."""
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _read_owner(fd: int) -> tuple[dict | None, float]:
    """The owner a claim file names (None when it is empty or unreadable) and its heartbeat's age in seconds."""
    age = time.time() - os.fstat(fd).st_mtime
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        owner = json.loads(os.read(fd, 65536))
    except ValueError:
        return None, age
    return (owner if isinstance(owner, dict) else None), age


def _remote_and_fresh(owner: dict | None, age: float) -> bool:
    """Whether a claim names a worker of another host whose heartbeat is fresh: its lock may not reach this host."""
    host = owner.get("host") if owner else None
    return isinstance(host, str) and host != socket.gethostname() and age <= STALE_S


def _lockless_abandoned(owner: dict | None, age: float) -> bool:
    """Whether a claim is dead where there are no locks: its process is gone on this host, else its heartbeat is
    stale (an empty one too: a live worker would have written it by then)."""
    if owner is not None and owner.get("host") == socket.gethostname():
        pid = owner.get("pid")
        return not (isinstance(pid, int) and process_alive(pid))
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
