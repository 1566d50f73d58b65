"""The CPU share a run gets: how many threads it runs, and how much of their time went to waiting for a core.

A time budget charges a run for wall time. On a busy machine other processes take cores from the run's threads,
and the run is charged for the wait without anything saying so. Linux counts, per thread, the time it was ready
to run but waited for a core (the second field of /proc/self/task/<tid>/schedstat); the sum over the process's
threads against their wall time is the share of the run lost to other processes (and to its own threads, if it
runs more than it has cores). `CpuShare` reads it per evaluation window and for the whole run, with the CPU time
the process used against what its threads could have used.

Threads: a run uses as many torch threads as the cores it may run on (`os.sched_getaffinity`), or
`VTBENCH_THREADS` when a launcher has divided the machine between several runs (the local executors do), or the
user's `OMP_NUM_THREADS`, or SLURM's `SLURM_CPUS_PER_TASK`.
"""

import os
import time
from pathlib import Path
from typing import Any

import torch

LOADED_SHARE = 0.1  # a run whose threads waited this share of their time for a core gets a load warning


def cores_allowed() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def threads_for_run() -> int:
    """VTBENCH_THREADS if a launcher set it, else OMP_NUM_THREADS if the user did, else the CPUs SLURM gave the
    task (SLURM_CPUS_PER_TASK: without a task affinity plugin the process may run on every core of the node),
    else one thread per core this process may use."""
    for name in ("VTBENCH_THREADS", "OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        given = os.environ.get(name, "")
        if given.isdigit() and int(given) >= 1:
            return int(given)
    return cores_allowed()


def set_threads() -> int:
    """Give torch the run's threads (on a CPU the step's speed depends on it); returns how many."""
    threads = threads_for_run()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def _run_delay_s() -> float | None:
    """Seconds the process's threads have waited for a core, summed over its live threads; None if unknown."""
    total = 0
    try:
        tasks = list(Path("/proc/self/task").iterdir())
    except OSError:
        return None
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended meanwhile
    return total / 1e9 if tasks else None


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


class CpuShare:
    """CPU use and waiting per window (between `mark`s) and for the whole run, resumable; and the run's threads,
    adapted to the cores other processes leave it.

    OpenMP threads that outnumber the free cores wait on each other at every barrier: beside one busy process a
    2-thread run made 0.39 of its lone steps here, where a worker with one thread and its own core made about 0.6
    (benchmarks/busy_machine.py). `adapt`, called
    after each step, measures the waiting share over the last `ADAPT_S` seconds: above `CROWDED` it takes one
    thread away; every `PROBE_S` seconds at fewer threads it gives one back, and keeps it if the waiting stays low.

    Only a run under a time budget adapts (`adapt_threads`): there the machine's load decides how much it trains
    anyway. Under a FLOP, step or sample budget a run gives bitwise the same results on a busy machine as on a quiet
    one, and a thread count changed halfway would change the order in which its sums add up.
    """

    ADAPT_S = 1.0
    PROBE_S = 15.0
    CROWDED = 0.25

    def __init__(self, threads: int, adapt_threads: bool = True):
        self.adapt_threads = adapt_threads
        self.threads = self.most = self.fewest = threads
        self.changes = 0
        self.totals = dict.fromkeys(("wall_s", "cpu_s", "wait_s", "thread_s"), 0.0)
        self.window = dict(self.totals)
        self.recent = dict(self.totals)
        self.waits_known = _run_delay_s() is not None
        self._last = self._now()
        self._changed_at = self._last[0]

    def _now(self) -> tuple[float, float, float]:
        return time.perf_counter(), _cpu_s(), _run_delay_s() or 0.0

    def _take(self) -> None:
        now = self._now()
        wall, cpu, wait = (b - a for a, b in zip(self._last, now, strict=True))
        self._last = now
        for sums in (self.totals, self.window, self.recent):
            for key, value in (("wall_s", wall), ("cpu_s", cpu), ("wait_s", wait), ("thread_s", wall * self.threads)):
                sums[key] += value

    def restart(self) -> None:
        """Count from here (what came since the last call, an evaluation, is not training)."""
        self._last = self._now()
        self.window = dict.fromkeys(self.window, 0.0)
        self.recent = dict.fromkeys(self.recent, 0.0)

    def mark(self) -> dict[str, Any]:
        """The window since the last `restart`/`mark`: its CPU use against its threads and its waiting share."""
        self._take()
        window, self.window = self.window, dict.fromkeys(self.window, 0.0)
        return {"window_cpu_util": _share(window["cpu_s"], window["thread_s"]),
                "window_wait_share": _share(window["wait_s"], window["thread_s"]) if self.waits_known else None}

    def adapt(self) -> None:
        """After a step: fewer threads when they wait for cores, one more now and then to see if the crowd left."""
        if not self.waits_known or time.perf_counter() - self._last[0] + self.recent["wall_s"] < self.ADAPT_S:
            return
        self._take()
        waiting = _share(self.recent["wait_s"], self.recent["thread_s"]) or 0.0
        self.recent = dict.fromkeys(self.recent, 0.0)
        now = self._last[0]
        if not self.adapt_threads:
            return
        if waiting > self.CROWDED and self.threads > 1:
            self._set(self.threads - 1, now)
        elif self.threads < self.most and now - self._changed_at > self.PROBE_S:
            self._set(self.threads + 1, now)

    def _set(self, threads: int, now: float) -> None:
        torch.set_num_threads(threads)
        self.threads, self.fewest = threads, min(self.fewest, threads)
        self.changes += 1
        self._changed_at = now

    def summary(self) -> dict[str, Any]:
        totals = self.totals
        share = _share(totals["wait_s"], totals["thread_s"]) if self.waits_known else None
        figures = {"threads": self.most, "fewest_threads": self.fewest, "thread_changes": self.changes,
                   "cores_allowed": cores_allowed(), "cpu_util": _share(totals["cpu_s"], totals["thread_s"]),
                   "wait_share": share, "load_warning": None}
        if share is not None and share >= LOADED_SHARE or self.fewest < self.most:
            held = (f"other processes held cores this run needed: its threads waited {100 * (share or 0):.0f}% of "
                    f"their time")
            if self.adapt_threads:
                figures["load_warning"] = (
                    f"{held} and it ran with as few as {self.fewest} of its {self.most} threads, so its time budget "
                    "bought less training than on a quiet machine and its results are not comparable")
            elif self.fewest < self.most:  # a run resumed from a checkpoint of a version that adapted every budget
                figures["load_warning"] = (
                    f"{held} and it ran with as few as {self.fewest} of its {self.most} threads, which changes the "
                    "order its sums add up in: its results are not bitwise a quiet run's, and its time figures "
                    "(clips/s, MFU, energy) are not comparable")
            else:
                figures["load_warning"] = (
                    f"{held}, so its time figures (clips/s, MFU, energy) are not comparable with a quiet run's; its "
                    "results are, under a budget of FLOPs, steps or samples")
        return figures

    def state_dict(self) -> dict[str, Any]:
        return {"totals": dict(self.totals), "fewest": self.fewest, "changes": self.changes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.totals = dict(state["totals"])
        self.fewest, self.changes = min(self.fewest, state["fewest"]), state["changes"]


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None
