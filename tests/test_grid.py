import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from vtbench import methods
from vtbench.errors import ConfigError
from vtbench.methods import Method
from vtbench.studies.folder import prepare_study
from vtbench.studies.grid import load_grid, run_worker

BASE = ("base: {model: vit_tiny, frames: 4, size: 16, batch_size: 4, eval_clips: 16, eval_every: 0.1,\n"
        "       model_args: {dim: 32, depth: 1, heads: 2, tubelet: [2, 4, 4]}}\n")


def _write(tmp_path, body, name="grid.yaml"):
    path = tmp_path / name
    path.write_text(body)
    return path


def test_expansion_is_the_cartesian_product(tmp_path):
    path = _write(tmp_path, "study: demo\n" + BASE + "methods:\n  - []\n  - [pss]\n  - [{multigrid: {}}, "
                  "{token_dropout: {keep: 0.5}}]\nbudgets: [10steps, 20steps]\nseeds: [0, 1]\n")
    grid = load_grid(path)
    assert len(grid.cells) == 3 * 2 * 2 and grid.study == "demo"
    assert len({c.run_id() for c in grid.cells}) == 12
    assert [str(m) for m in grid.cells[-1].methods] == ["multigrid", "token_dropout:keep=0.5"]
    assert grid.cells[0].methods == [] and grid.cells[0].frames == 4


def test_an_entry_may_run_at_budgets_of_its_own(tmp_path):
    path = _write(tmp_path, "study: ladder\n" + BASE + "methods:\n  - {methods: [], budgets: [4steps, 8steps, 16steps]}"
                  "\n  - [pss]\nbudgets: [8steps]\nseeds: [0, 1]\n")
    cells = [(c.label(), c.budget, c.seed) for c in load_grid(path).cells]
    assert cells == [("baseline", b, s) for b in ("4steps", "8steps", "16steps") for s in (0, 1)] + [
        ("pss", "8steps", 0), ("pss", "8steps", 1)]


@pytest.mark.parametrize("body, message", [
    ("- a\n- b\n", "a grid is a mapping"),
    ("study: s\nmethods: [{methods: [], budgets: []}]\n", "budgets must be a non-empty list"),
    ("study: s\nmethods: [{methods: [], budget: [4steps]}]\n", "unknown key 'budget'; allowed: methods, set, budgets"),
    ("study: s\nbudget: [10steps]\n", "unknown key 'budget'; allowed: study, base, methods, inits, budgets, seeds"),
    ("study: s\nmethods: [[turbo]]\n", "unknown method 'turbo'"),
    ("study: s\nmethods: [[{pss: {speed: 2}}]]\n", "method 'pss' has no parameter speed"),
    ("study: s\nbudgets: []\n", "budgets must be a non-empty list"),
    ("study: s\nbudgets: [ten minutes]\n", "budget 'ten minutes' is not understood"),
    ("study: s\nbase: {lrr: 1}\n", "base: unknown key 'lrr'"),
])
def test_bad_grids_are_refused_before_any_cell_runs(body, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        load_grid(_write(tmp_path, body))


def test_a_folder_of_another_study_or_format_is_refused(tmp_path):
    grid = load_grid(_write(tmp_path, "study: one\n" + BASE))
    folder = prepare_study(tmp_path / "out", grid)
    (tmp_path / "out" / "two").mkdir()
    (tmp_path / "out" / "two" / "study.json").write_text(json.dumps({"study": "one", "format": 1}))
    other = load_grid(_write(tmp_path, "study: two\n" + BASE, "two.yaml"))
    with pytest.raises(ConfigError, match="holds study 'one', not 'two'"):
        prepare_study(tmp_path / "out", other)
    (folder / "study.json").write_text(json.dumps({"study": "one", "format": 0, "vtbench": "0.0.1"}))
    with pytest.raises(ConfigError, match="format 0"):
        prepare_study(tmp_path / "out", grid)


class AlwaysFails(Method):
    name = "always_fails"

    def lr_scale(self, progress, shape):
        raise RuntimeError("broken cell")


def test_a_failed_cell_is_retried_once_and_does_not_stop_the_grid(monkeypatch, tmp_path):
    monkeypatch.setitem(methods.REGISTRY, "always_fails", AlwaysFails)
    grid = load_grid(_write(tmp_path, "study: s\n" + BASE + "methods: [[always_fails], []]\nbudgets: [6steps]\n"))
    folder = prepare_study(tmp_path / "out", grid)
    assert run_worker(grid, folder, progress_bar=False) == 2  # the failure did not stop the good cell
    statuses = {c.run_id(): json.loads((folder / c.run_id() / "summary.json").read_text())["status"]
                for c in grid.cells}
    assert sorted(statuses.values()) == ["completed", "failed"]
    assert run_worker(grid, folder, progress_bar=False) == 1  # the retry
    assert run_worker(grid, folder, progress_bar=False) == 0  # retries used up
    failed = next(c for c in grid.cells if c.methods)
    assert json.loads((folder / failed.run_id() / "attempts.json").read_text())["failed"] == 2


def _grid_command(path, out, *extra):
    return [sys.executable, "-m", "vtbench.cli", "grid", str(path), "--out", str(out), "--no-progress", *extra]


def _log(folder: Path) -> list[str]:
    return [line.split()[0] for line in (folder / "workers.log").read_text().splitlines()]


def _wait_until_gone(group: int, seconds: float = 30) -> None:
    """Until no process of the process group is left (a killed group's members die one by one)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)
    raise AssertionError(f"process group {group} still has processes {seconds} s after SIGKILL")


def test_a_worker_killed_mid_run_loses_nothing(tmp_path):
    path = _write(tmp_path, "study: s\n" + BASE + "methods: [[], [pss]]\nbudgets: [80steps]\n")
    out = tmp_path / "out"
    worker = subprocess.Popen(_grid_command(path, out, "--executor", "local", "--workers", "1"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    folder = out / "s"
    deadline = time.monotonic() + 120
    victim = None
    while victim is None and time.monotonic() < deadline:
        for run_dir in folder.glob("*/") if folder.exists() else []:
            if (run_dir / "checkpoint.pt").exists() and not (run_dir / "summary.json").exists():
                victim = run_dir
        time.sleep(0.005)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    _wait_until_gone(worker.pid)  # its cell process too: until it is gone, the kernel still holds its claim's lock
    assert victim is not None and not (victim / "summary.json").exists()
    from vtbench.cli.main import main

    assert main(_grid_command(path, out)[3:]) == 0  # the same command again, in this process
    grid = load_grid(path)
    run_ids = sorted(c.run_id() for c in grid.cells)
    assert sorted(_log(folder)) == run_ids  # every cell finished exactly once
    for run_id in run_ids:
        summary = json.loads((folder / run_id / "summary.json").read_text())
        steps = pd.read_parquet(folder / run_id / "steps.parquet")
        assert summary["status"] == "completed" and steps["steps"].sum() == 80  # every step logged once
        assert steps["step"].is_monotonic_increasing and steps["step"].iloc[-1] == 80
        if run_id == victim.name:
            assert len(summary["resumed_at"]) == 1 and 0 < summary["resumed_at"][0] < 80  # continued, not restarted
        else:
            assert summary["resumed_at"] == []


def test_two_local_workers_never_run_the_same_cell(tmp_path):
    path = _write(tmp_path, "study: s\n" + BASE + "methods: [[], [pss]]\nbudgets: [10steps, 20steps]\n")
    result = subprocess.run(_grid_command(path, tmp_path / "out", "--executor", "local", "--workers", "2"),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    ran = _log(tmp_path / "out" / "s")
    assert sorted(ran) == sorted(c.run_id() for c in load_grid(path).cells)


def test_a_method_entry_may_carry_its_own_run_settings(tmp_path):
    path = _write(tmp_path, "study: s\n" + BASE + "methods:\n  - []\n  - {methods: [frozen_spatial], set: {arch: "
                  "factorised}}\n")
    grid = load_grid(path)
    assert [c.arch for c in grid.cells] == ["joint", "factorised"]
    assert list(grid.labels.values())[1] == "frozen_spatial (factorised) @ 60s, seed 0"


def test_threads_follow_the_cpus_slurm_gave_the_task(monkeypatch):
    from vtbench.engine.cpu import cores_allowed, threads_for_run

    for name in ("VTBENCH_THREADS", "OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        monkeypatch.delenv(name, raising=False)
    assert threads_for_run() == cores_allowed()
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert threads_for_run() == 1
    monkeypatch.setenv("VTBENCH_THREADS", "3")  # a launcher's division of the allocation comes first
    assert threads_for_run() == 3


def test_unknown_slurm_options_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"slurm: unknown option \['gpus'\]; allowed: partition"):
        load_grid(_write(tmp_path, "study: s\nslurm: {gpus: 2}\n"))


class FailsAtStep3(Method):
    name = "fails_at_step_3"

    def batch_shape(self, progress, step, base):
        if step == 3:
            raise ValueError("this cell always fails at step 3")
        return base


class Interrupts(Method):
    name = "interrupts"

    def prepare(self, context):
        raise KeyboardInterrupt  # as Ctrl-C while the cell starts: the grid stops, the cell never began


def test_status_lists_completed_failed_running_and_pending_cells_and_the_report_what_has_not_ended(
        tmp_path, monkeypatch, capsys):
    from vtbench.cli.main import main
    from vtbench.report import write_report
    from vtbench.studies.folder import Claim

    monkeypatch.setitem(methods.REGISTRY, "fails_at_step_3", FailsAtStep3)
    monkeypatch.setitem(methods.REGISTRY, "interrupts", Interrupts)
    path = _write(tmp_path, "study: s\n" + BASE.replace("eval_every: 0.1", "eval_every: 0.5") +
                  "methods: [[], [fails_at_step_3], [interrupts], [pss]]\nbudgets: [10steps]\nretries: 0\n")
    out = tmp_path / "out"
    assert main(["grid", str(path), "--out", str(out), "--no-progress"]) == 130
    cells = {c.methods[0].name if c.methods else "baseline": c.run_id() for c in load_grid(path).cells}
    claim = Claim.take(out / "s" / f"{cells['pss']}.claim")  # a worker (this process) training the pss cell
    try:
        capsys.readouterr()
        assert main(["status", str(out / "s")]) == 0
        text = capsys.readouterr().out
        assert main(["status", str(out / "s"), "--json"]) == 0
        status = json.loads(capsys.readouterr().out)
        report = write_report(out / "s", tmp_path / "report").read_text()
    finally:
        claim.release()
    assert text.splitlines()[0] == "study s (grid), 4 cells: 1 completed, 1 failed, 1 running, 1 pending"
    lines = {name: next(line for line in text.splitlines() if f"({run_id})" in line) for name, run_id in cells.items()}
    assert lines["baseline"].split()[0] == "completed" and "top-1" in lines["baseline"]
    assert lines["fails_at_step_3"].split()[0] == "failed"
    assert "ValueError: this cell always fails at step 3  (0 retries left)" in lines["fails_at_step_3"]
    assert lines["pss"].split()[0] == "running" and f"process {os.getpid()} on" in lines["pss"]
    assert lines["interrupts"].split()[0] == "pending"
    assert {e["run_id"]: e["state"] for e in status["entries"]} == {  # --json: the same, for scripts
        cells["baseline"]: "completed", cells["fails_at_step_3"]: "failed", cells["pss"]: "running",
        cells["interrupts"]: "pending"}
    baseline = next(e for e in status["entries"] if e["run_id"] == cells["baseline"])
    summary = json.loads((out / "s" / cells["baseline"] / "summary.json").read_text())
    assert baseline["top1"] == summary["top1"] and baseline["device_s"] == summary["train_s"]
    progress = json.loads((out / "s" / cells["baseline"] / "progress.json").read_text())
    assert progress["progress"] == 1.0 and progress["step"] == 10  # written as the run trains
    assert status["device_s_left"] > 0 and status["left_unknown"] == 0  # estimated from the ended 10steps cell
    assert "## Not ended yet" in report and "2 of 4 cells have not ended" in report


def test_status_lists_a_cell_that_failed_before_its_run_began_with_its_error(tmp_path):
    """A cell whose run failed while it was being built (its data, its model) leaves no summary.json, only the
    grid's attempts.json: it is failed, with that error, not pending."""
    from vtbench.engine import results
    from vtbench.studies.status import duration, format_status, study_status, write_plan

    folder = tmp_path / "s"
    folder.mkdir()
    results.write_json(folder / "study.json", {"study": "s", "kind": "grid"})
    write_plan(folder, {"kind": "grid", "retries": 1, "cells": [
        {"run_id": "a", "label": "baseline", "budget": "60s"}, {"run_id": "b", "label": "pss", "budget": "60s"}]})
    (folder / "a").mkdir()
    results.write_json(folder / "a" / "attempts.json", {"failed": 2, "error": "ConfigError: no such data set"})
    status = study_status(folder)
    a, b = status["entries"]
    assert (a["state"], a["error"], a["retries_left"]) == ("failed", "ConfigError: no such data set", 0)
    assert b["state"] == "pending" and status["device_s_left"] == 60  # the failed cell is not run again
    assert "failed  baseline  (a)  ConfigError: no such data set  (0 retries left)" in format_status(status)
    assert [duration(s) for s in (59.6, 119 * 60 + 50, 3600, 5400)] == ["1min", "2h00min", "1h00min", "1h30min"]
