"""Claims (vtbench.studies.folder.Claim): a cell is held through a file lock, so on one host exactly one worker
wins a race for it, a claim nobody locks (its worker died, died before writing it, or its pid now names another
process) is free at once, and a live holder is respected until it dies, however it dies."""

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vtbench.studies import folder
from vtbench.studies.folder import Claim, claim_holder

fcntl = pytest.importorskip("fcntl", reason="claims need fcntl (not on Windows)")


# a worker of its own: takes, releases or holds the claim at argv[1] as the test tells it on stdin, one line a time
WORKER = r"""
import sys, time
from pathlib import Path
from vtbench.studies.folder import Claim

path, claim = Path(sys.argv[1]), None
print("ready", flush=True)
for line in sys.stdin:
    word, *rest = line.split()
    if word == "take":  # at the moment given, so that two workers race
        at = float(rest[0])
        while time.time() < at:
            pass
        claim = Claim.take(path)
        print("won" if claim else "lost", flush=True)
    elif word == "release":
        claim.release()
        claim = None
        print("released", flush=True)
"""


class Worker:
    def __init__(self, path: Path):
        self.process = subprocess.Popen([sys.executable, "-c", WORKER, str(path)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        assert self._answer() == "ready"

    def tell(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def _answer(self) -> str:
        return self.process.stdout.readline().strip()

    def take(self, at: float | None = None) -> bool:
        self.tell(f"take {at if at is not None else 0}")
        return self._answer() == "won"

    def release(self) -> None:
        self.tell("release")
        assert self._answer() == "released"

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass


@pytest.fixture
def workers():
    started = []

    def start(path):
        started.append(Worker(path))
        return started[-1]

    yield start
    for worker in started:
        worker.close()


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()  # reaped: its pid names no process now
    return process.pid


def _write_claim(path: Path, pid: int, host: str | None = None, age_s: float = 0.0) -> None:
    """A claim file as a worker writes it, that no process holds (locks)."""
    path.write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid, "since": time.time() - age_s}))
    if age_s:
        os.utime(path, (time.time() - age_s, time.time() - age_s))


def test_two_workers_racing_for_a_dead_claim_exactly_one_wins_every_time(tmp_path, workers):
    path = tmp_path / "cell.claim"
    a, b = workers(path), workers(path)
    dead = _dead_pid()
    wins = []
    for _ in range(50):
        _write_claim(path, dead)  # its worker died: a claim nobody holds
        at = time.time() + 0.05
        a.tell(f"take {at}")
        b.tell(f"take {at}")
        won = [a._answer() == "won", b._answer() == "won"]
        wins.append(won)
        assert sum(won) == 1, f"round {len(wins)}: {won}"
        winner = a if won[0] else b
        assert Claim.take(path) is None  # held by the winner
        holder = json.loads(path.read_text())
        assert holder["pid"] == winner.process.pid and claim_holder(path).startswith(f"process {holder['pid']} ")
        winner.release()
        assert not path.exists()
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_an_empty_claim_of_a_worker_killed_before_it_wrote_is_taken_over(tmp_path):
    path = tmp_path / "cell.claim"
    path.write_text("")  # created, never written: its worker was killed in between
    assert claim_holder(path) is None  # nobody runs the cell
    claim = Claim.take(path)
    assert claim is not None
    try:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    finally:
        claim.release()
    assert not path.exists()


def test_a_claim_whose_pid_now_names_another_process_is_taken_over(tmp_path):
    """The claim's pid is alive (this test's own process) but that process holds no lock on it: its worker died
    and the pid was reused."""
    path = tmp_path / "cell.claim"
    _write_claim(path, os.getpid())
    assert claim_holder(path) is None
    claim = Claim.take(path)
    assert claim is not None
    try:
        assert claim_holder(path) == Claim.describe(path) and f"process {os.getpid()} " in Claim.describe(path)
        assert Claim.take(path) is None  # and now this process does hold it
    finally:
        claim.release()


def test_a_live_holder_is_respected_until_it_is_killed(tmp_path, workers):
    path = tmp_path / "cell.claim"
    holder = workers(path)
    assert holder.take()
    for _ in range(3):
        assert Claim.take(path) is None
    pid = holder.process.pid
    assert Claim.describe(path).startswith(f"process {pid} on {socket.gethostname()} (since ")
    assert claim_holder(path) == Claim.describe(path)
    assert path.exists() and json.loads(path.read_text())["pid"] == pid  # taking it failed without touching it
    holder.process.send_signal(signal.SIGKILL)
    holder.process.wait()
    assert claim_holder(path) is None
    claim = Claim.take(path)  # at once: no heartbeat to wait out
    assert claim is not None
    claim.release()


def test_release_frees_the_claim_for_the_next_worker(tmp_path, workers):
    path = tmp_path / "cell.claim"
    first, second = workers(path), workers(path)
    assert first.take()
    assert not second.take()
    first.release()
    assert not path.exists() and claim_holder(path) is None
    assert second.take()
    assert not first.take()
    second.release()
    claim = Claim.take(path)
    assert claim is not None
    claim.release()
    claim.release()  # twice: nothing more
    assert not path.exists()


def test_a_reader_looking_at_a_claim_does_not_make_a_worker_skip_it(tmp_path):
    """`vtbench status` looks at a claim with a shared lock for an instant; a worker taking the claim meanwhile
    waits it out instead of taking the cell for held."""
    path = tmp_path / "cell.claim"
    _write_claim(path, _dead_pid())
    reader = os.open(path, os.O_RDONLY)
    fcntl.flock(reader, fcntl.LOCK_SH)
    threading.Timer(0.1, os.close, (reader,)).start()
    claim = Claim.take(path)
    assert claim is not None
    claim.release()


def test_a_claim_of_another_host_is_respected_while_its_heartbeat_is_fresh(tmp_path):
    """Its lock may not reach this host (a shared file system without coherent locks): its heartbeat decides."""
    path = tmp_path / "cell.claim"
    _write_claim(path, os.getpid(), host="another-host", age_s=folder.STALE_S / 2)
    assert Claim.take(path) is None
    assert claim_holder(path) == Claim.describe(path) and " on another-host " in claim_holder(path)
    os.utime(path, (time.time() - 2 * folder.STALE_S,) * 2)
    assert claim_holder(path) is None
    claim = Claim.take(path)
    assert claim is not None
    claim.release()


def test_the_heartbeat_keeps_the_claim_fresh_and_release_leaves_another_hosts_takeover(tmp_path, monkeypatch):
    monkeypatch.setattr(folder, "HEARTBEAT_S", 0.02)
    path = tmp_path / "cell.claim"
    claim = Claim.take(path)
    try:
        os.utime(path, (time.time() - 1000,) * 2)
        deadline = time.monotonic() + 10
        while time.time() - path.stat().st_mtime > 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert time.time() - path.stat().st_mtime < 100
        # a worker of another host judged it stale (this one was suspended) and took it over
        _write_claim(tmp_path / "theirs", 4321, host="another-host")
        os.replace(tmp_path / "theirs", path)
    finally:
        claim.release()
    assert json.loads(path.read_text())["host"] == "another-host"  # theirs stays


def test_without_hard_links_claims_are_created_in_place(tmp_path, monkeypatch):
    def no_links(*args, **kwargs):
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(folder.os, "link", no_links)
    path = tmp_path / "cell.claim"
    claim = Claim.take(path)
    assert claim is not None and json.loads(path.read_text())["pid"] == os.getpid()
    assert Claim.take(path) is None
    claim.release()
    assert not path.exists() and not list(tmp_path.iterdir())


def test_where_the_file_system_does_not_lock_claims_are_judged_by_process_and_heartbeat(tmp_path, monkeypatch):
    def no_locks(fd, how):
        raise OSError(errno.ENOLCK, "no locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    path = tmp_path / "cell.claim"
    _write_claim(path, os.getpid())  # alive: taken for its holder
    with pytest.warns(RuntimeWarning, match="does not support file locks"):
        assert Claim.take(path) is None
    assert claim_holder(path) is not None
    _write_claim(path, _dead_pid())
    assert claim_holder(path) is None
    with pytest.warns(RuntimeWarning):
        claim = Claim.take(path)
    assert claim is not None
    claim.release()
    assert not path.exists()
