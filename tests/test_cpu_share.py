"""The CPU share a run records and the threads it adapts (vtbench.engine.cpu), on a simulated clock."""

from conftest import tiny

from vtbench.engine import cpu
from vtbench.engine.runner import Run


class FakeMachine:
    """perf_counter, the process's CPU time and its threads' run-queue wait, advanced by hand."""

    def __init__(self, monkeypatch):
        self.wall = self.cpu = self.wait = 0.0
        monkeypatch.setattr(cpu.time, "perf_counter", lambda: self.wall)
        monkeypatch.setattr(cpu, "_cpu_s", lambda: self.cpu)
        monkeypatch.setattr(cpu, "_run_delay_s", lambda: self.wait)
        self.threads_set = []
        monkeypatch.setattr(cpu.torch, "set_num_threads", self.threads_set.append)

    def run(self, seconds: float, threads: int, waiting: float) -> None:
        """`seconds` of wall time in which `threads` threads each waited `waiting` of the time for a core."""
        self.wall += seconds
        self.cpu += seconds * threads * (1 - waiting)
        self.wait += seconds * threads * waiting


def test_a_crowded_run_drops_a_thread_probes_later_and_warns(monkeypatch):
    machine = FakeMachine(monkeypatch)
    share = cpu.CpuShare(2)
    for _ in range(3):  # quiet: nothing changes
        machine.run(0.5, 2, 0.0)
        share.adapt()
    assert share.threads == 2 and machine.threads_set == []
    machine.run(1.0, 2, 0.4)  # a busy process arrives: the two threads wait 40% of the time
    share.adapt()
    assert share.threads == 1 and machine.threads_set == [1]
    for _ in range(14):  # one thread beside it: no waiting, and no probe before PROBE_S
        machine.run(1.0, 1, 0.0)
        share.adapt()
    assert machine.threads_set == [1]
    machine.run(1.5, 1, 0.0)
    share.adapt()  # PROBE_S after the drop: one thread back, to see whether the crowd has left
    assert machine.threads_set == [1, 2] and share.threads == 2
    window = share.mark()
    assert 0 < window["window_wait_share"] < 0.4 and window["window_cpu_util"] > 0.6
    summary = share.summary()
    assert summary["fewest_threads"] == 1 and summary["threads"] == 2 and summary["thread_changes"] == 2
    assert "waited" in summary["load_warning"] and "not comparable" in summary["load_warning"]


def test_a_run_not_under_a_time_budget_keeps_its_threads_and_says_what_the_crowd_changed(monkeypatch):
    machine = FakeMachine(monkeypatch)
    share = cpu.CpuShare(2, adapt_threads=False)
    for _ in range(20):  # crowded throughout: a time budget's run would drop a thread at the first reading
        machine.run(1.0, 2, 0.4)
        share.adapt()
    assert share.threads == 2 and machine.threads_set == []
    warning = share.summary()["load_warning"]
    assert "waited 40%" in warning and "time figures" in warning and "results are, under a budget of FLOPs" in warning


def test_a_run_resumed_from_one_that_dropped_threads_does_not_vouch_for_its_results(monkeypatch):
    machine = FakeMachine(monkeypatch)
    share = cpu.CpuShare(2, adapt_threads=False)
    share.load_state_dict({"totals": {"wall_s": 10.0, "cpu_s": 12.0, "wait_s": 4.0, "thread_s": 20.0},
                           "fewest": 1, "changes": 1})  # the checkpoint of a version that adapted every budget
    machine.run(1.0, 2, 0.0)
    share.adapt()
    warning = share.summary()["load_warning"]
    assert "as few as 1 of its 2 threads" in warning and "not bitwise" in warning


def test_a_quiet_run_has_no_warning_and_resumes_its_totals(monkeypatch):
    machine = FakeMachine(monkeypatch)
    share = cpu.CpuShare(2)
    machine.run(5.0, 2, 0.02)
    share.adapt()
    assert abs(share.mark()["window_wait_share"] - 0.02) < 1e-9
    assert share.summary()["load_warning"] is None
    resumed = cpu.CpuShare(2)
    resumed.load_state_dict(share.state_dict())
    assert resumed.summary() == share.summary()


def test_threads_come_from_the_launcher_the_user_or_the_cores(monkeypatch):
    monkeypatch.delenv("VTBENCH_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cpu.threads_for_run() == cpu.cores_allowed()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu.threads_for_run() == 3
    monkeypatch.setenv("VTBENCH_THREADS", "1")
    assert cpu.threads_for_run() == 1


def test_only_a_time_budget_lets_a_run_adapt_its_threads(tmp_path):
    assert not Run(tiny(budget="10steps").resolve(), tmp_path / "a").cpu.adapt_threads
    assert not Run(tiny(budget="1e9flops").resolve(), tmp_path / "b").cpu.adapt_threads
    assert Run(tiny(budget="30s").resolve(), tmp_path / "c").cpu.adapt_threads
