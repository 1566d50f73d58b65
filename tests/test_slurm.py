"""`vtbench grid --executor slurm` against a real SLURM that the tests start (tests/slurm.py): without accounting,
where the launcher must see its workers end through `squeue`, and with accounting (slurmdbd on MariaDB), there with
a cell of two processes as one SLURM job of two tasks."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import throwaway

from vtbench.studies.grid import load_grid

pytestmark = pytest.mark.slurm

BASE = ("base: {model: vit_tiny, frames: 4, size: 16, batch_size: 4, eval_clips: 16, eval_every: 0.25,\n"
        "       model_args: {dim: 32, depth: 1, heads: 2, tubelet: [2, 4, 4]}}\n")


def _grid(tmp_path, body):
    path = tmp_path / "grid.yaml"
    path.write_text("study: s\n" + BASE + body)
    return path


def _command(path, out, *extra):
    return [sys.executable, "-m", "vtbench.cli", "grid", str(path), "--out", str(out), "--no-progress",
            "--executor", "slurm", *extra]


def _summaries(folder, path):
    return {c.run_id(): json.loads((folder / c.run_id() / "summary.json").read_text()) for c in load_grid(path).cells}


def _array_task(pid: int) -> str:
    """The SLURM array task (`<array>_<index>`) that process `pid` belongs to, from its environment."""
    env = dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item)
    return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"


def _squeue(env) -> list[str]:
    return subprocess.run(["squeue", "--noheader", "--format=%i %t"], env=env, capture_output=True, text=True,
                          check=True).stdout.split("\n")


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two workers running at once need two CPUs")
def test_cancelled_workers_end_the_launcher_without_accounting_and_their_cells_resume(tmp_path, slurm_env,
                                                                                      monkeypatch, capsys):
    path = _grid(tmp_path, "methods: [[], [pss]]\nbudgets: [6s]\nslurm: {cpus_per_task: 1, time_min: 10}\n")
    out, folder = tmp_path / "out", tmp_path / "out" / "s"
    launcher = subprocess.Popen(_command(path, out, "--workers", "2"), env=slurm_env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    run_dirs = [folder / cell.run_id() for cell in load_grid(path).cells]
    deadline = time.monotonic() + 120
    while not all((d / "checkpoint.pt").exists() for d in run_dirs) and time.monotonic() < deadline:
        time.sleep(0.05)  # each run's first evaluation, at 25%, writes its checkpoint
    assert all((d / "checkpoint.pt").exists() for d in run_dirs), launcher.stderr
    jobs = sorted(line.split()[0] for line in _squeue(slurm_env) if line.strip())
    assert len(jobs) == 2  # an array of two workers, both running
    # scancel (SIGTERM, then SIGKILL KillWait later): the worker checkpoints at its next step and returns. The
    # other worker dies at once (SIGKILL, as in a crash of its node) and leaves no result
    holders = [json.loads(d.with_suffix(".claim").read_text())["pid"] for d in run_dirs]
    crashing = next(pid for pid in holders if _array_task(pid) == jobs[1])
    subprocess.run(["scancel", jobs[0]], env=slurm_env, check=True)
    os.kill(crashing, signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=60)  # before the fix it waited on `sacct` forever
    assert launcher.returncode == 1 and f"worker {jobs[1]} ended without a result (cancelled" in stderr, stderr
    assert f"worker {jobs[0]}" not in stderr and "2 not run" in stderr
    assert "worker stopped by a signal: stopped at step" in (folder / "slurm" / f"{jobs[0]}_0_log.err").read_text()
    sacct = subprocess.run(["sacct"], env=slurm_env, capture_output=True, text=True)
    assert sacct.returncode != 0 and "accounting storage is disabled" in sacct.stderr  # really none to ask
    from vtbench.cli.main import main

    monkeypatch.setenv("SLURM_CONF", slurm_env["SLURM_CONF"])  # the same command again, in this process
    capsys.readouterr()
    assert main(_command(path, out, "--workers", "2")[3:]) == 0
    assert "2 completed" in capsys.readouterr().err
    for summary in _summaries(folder, path).values():
        assert summary["status"] == "completed"
        assert len(summary["resumed_at"]) == 1 and 0 < summary["resumed_at"][0] < summary["steps"]  # not restarted
    assert main(_command(path, out, "--workers", "2")[3:]) == 0
    assert "every cell has ended: no worker started" in capsys.readouterr().err


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="a job of two tasks needs two CPUs")
def test_a_cell_of_two_processes_runs_as_one_slurm_job_of_two_tasks_with_accounting(tmp_path, monkeypatch, capsys):
    from slurm import Cluster, Unavailable

    pytest.importorskip("submitit")
    with throwaway(lambda: Cluster(accounting=True), Unavailable, "SLURM with slurmdbd") as env:
        path = _grid(tmp_path, "methods: [[], [pss]]\nbudgets: [20steps]\nnproc_per_run: 2\n"
                     "slurm: {cpus_per_task: 1, time_min: 10}\n")
        from vtbench.cli.main import main

        monkeypatch.setenv("SLURM_CONF", env["SLURM_CONF"])  # the launcher runs in this process
        capsys.readouterr()
        assert main(_command(path, tmp_path / "out")[3:]) == 0
        stderr = capsys.readouterr().err
        for summary in _summaries(tmp_path / "out" / "s", path).values():  # both cells, one after the other
            assert summary["status"] == "completed" and summary["world_size"] == 2 and summary["steps"] == 20
        logs = sorted((tmp_path / "out" / "s" / "slurm").glob("*_log.out"))
        assert [log.name.split("_")[-2] for log in logs] == ["0", "1"]  # submitit's log of each task of one job
        job = stderr.split("submitted 1 workers: ")[1].split()[0]
        sacct = subprocess.run(["sacct", "--noheader", "--parsable2", "--format=JobID,State", "-j", job], env=env,
                               capture_output=True, text=True, check=True).stdout
        assert f"{job}|COMPLETED" in sacct
