"""Crafted and malformed input: refused with one line, exit 2, nothing run and nothing lost (issue 14)."""

import os
from pathlib import Path

import pytest
import torch
from test_cli import TINY

from vtbench.cli import main


class _RunsACommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("vtbench: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_crafted_checkpoint_is_refused_never_run(tmp_path, capsys):
    assert main(["run", *TINY, "--budget", "4steps", "--out", str(tmp_path)]) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    (run_dir / "summary.json").unlink()  # as if the run had been killed: the next command resumes it
    marker = tmp_path / "ran"
    torch.save({"model": _RunsACommand(marker)}, run_dir / "checkpoint.pt")
    assert main(["run", *TINY, "--budget", "4steps", "--out", str(tmp_path)]) == 2
    err = _one_line_error(capsys)
    assert f"{run_dir / 'checkpoint.pt'}: refused" in err and "asks for posix.system" in err
    assert not marker.exists()


def test_a_checkpoint_written_by_a_run_loads_safely_and_resumes(tmp_path, capsys):
    from vtbench.engine import results

    assert main(["run", *TINY, "--budget", "4steps", "--out", str(tmp_path)]) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)  # plain tensors and values only
    assert state["clock"]["used"]["steps"] == 4
    (run_dir / "summary.json").unlink()
    assert results.load_checkpoint(run_dir / "checkpoint.pt")["run_id"] == run_dir.name
    assert main(["run", *TINY, "--budget", "4steps", "--out", str(tmp_path)]) == 0  # resumes at its end
    assert results.read_json(run_dir / "summary.json")["status"] == "completed"


# ---- one line, exit 2, nothing written ---------------------------------------------------------------------

GRID = "study: g\nmethods: [[]]\nbudgets: [2steps]\n"
TUNE = "study: t\nbudget: 2steps\ntrials: 2\nmethods: [{token_dropout: {keep: {float: [0.3, 0.9]}}}]\n"
KINETICS_HEAD = "label,youtube_id,time_start,time_end,split\n"

CASES = {
    # name: (files to make, argv, what the line must say)
    "grid out is a file": ({"g.yaml": GRID, "afile": ""}, ["grid", "g.yaml", "--out", "afile"],
                           "--out afile: afile is a file, not a folder"),
    "tune out is a file": ({"t.yaml": TUNE, "afile": ""}, ["tune", "t.yaml", "--out", "afile"],
                           "--out afile: afile is a file, not a folder"),
    "run out is a file": ({"afile": ""}, ["run", *TINY, "--out", "afile/runs"], "afile is a file, not a folder"),
    "report of a file": ({"afile": ""}, ["report", "afile"], "afile is a file; vtbench report takes a study folder"),
    "report out is a file": ({"s/r/summary.json": "{}", "s/r/config.yaml": "seed: 1\n", "afile": ""},
                             ["report", "s", "--out", "afile"], "--out afile: afile is a file"),
    "binary run config": ({"c.yaml": b"\x7fELF\x02\x01\x01\x00\xd0\xff"}, ["run", "--config", "c.yaml"],
                          "config file c.yaml is not UTF-8 text"),
    "binary grid config": ({"c.yaml": b"\xd0\xff\xfe"}, ["grid", "c.yaml"], "config file c.yaml is not UTF-8 text"),
    "config is a folder": ({"c.yaml/x": ""}, ["grid", "c.yaml"], "config file c.yaml is not a file"),
    "infinite budget": ({}, ["run", *TINY, "--budget", "1e400steps"], "budget '1e400steps' is too large"),
    "grid set is a number": ({"g.yaml": "study: g\nmethods: [{methods: [], set: 5}]\nbudgets: [2steps]\n"},
                             ["grid", "g.yaml"], "set must be a mapping of run settings, got 5"),
    "grid named ..": ({"g.yaml": "study: ..\nmethods: [[]]\nbudgets: [2steps]\n"}, ["grid", "g.yaml"],
                      "study must be a plain folder name"),
    "truncated summary": ({"s/r/summary.json": '{"status": "compl', "s/r/config.yaml": "seed: 1\n"},
                          ["report", "s", "--out", "rep"], "s/r/summary.json: unreadable (JSONDecodeError"),
    "list config": ({"s/r/summary.json": "{}", "s/r/config.yaml": "- a\n"}, ["report", "s", "--out", "rep"],
                    "s/r/config.yaml: a run config is a mapping of keys to values, got list"),
    "malformed kinetics": ({"k/annotations/train.csv": KINETICS_HEAD + "a,b,soon,10,train\n",
                            "k/annotations/val.csv": KINETICS_HEAD},
                           ["data", "check", "--dataset", "kinetics:k"], "train.csv:2: expected whole seconds"),
    "model arg not a number": ({}, ["run", *TINY, "--set", "model_args.depth=abc"],
                               "model_args.depth must be a whole number >= 1, got 'abc'"),
    "negative frames": ({}, ["run", *TINY, "--set", "frames=-4"], "frames must be a whole number from 1"),
    "huge seed": ({}, ["run", *TINY, "--seed", str(10**20)], "seed must be a whole number from 0 to 2**63 - 1"),
    "nan lr": ({}, ["run", *TINY, "--set", "lr=nan"], "lr must be a finite number, got nan"),
    "warmup of 1.5": ({}, ["run", *TINY, "--set", "warmup=1.5"], "warmup must be a fraction in [0, 1), got 1.5"),
    "duplicate cells": ({"g.yaml": "study: g\nmethods: [[], []]\nbudgets: [2steps]\n"}, ["grid", "g.yaml"],
                        "the cell baseline @ 2steps, seed 0 is listed twice"),
    "duplicate yaml key": ({"g.yaml": "study: g\nbudgets: [2steps]\nstudy: h\n"}, ["grid", "g.yaml"],
                           "g.yaml:3: invalid YAML: duplicate key 'study'"),
    "duplicate choice": ({"t.yaml": TUNE.replace("{float: [0.3, 0.9]}", "{choice: [0.5, 0.5]}")}, ["tune", "t.yaml"],
                         "choice lists 0.5 twice"),
    "estimate classes": ({}, ["estimate", "--classes", "0"], "--classes must be at least 1, got 0"),
    "estimate frames": ({}, ["estimate", "--frames", "-4"], "frames must be a whole number from 1"),
    "grid workers": ({"g.yaml": GRID}, ["grid", "g.yaml", "--workers", "0"], "--workers must be at least 1, got 0"),
    "tune storage": ({"t.yaml": TUNE}, ["tune", "t.yaml", "--storage", "postgresql://nobody@127.0.0.1:9/none"],
                     "storage postgresql://nobody@127.0.0.1:9/none cannot be reached"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_errors_are_one_line_exit_2_and_write_nothing(case, tmp_path, monkeypatch, capsys):
    files, argv, message = CASES[case]
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    assert main(argv) == 2
    err = _one_line_error(capsys)
    assert message in err, err
    assert sorted(tmp_path.rglob("*")) == before, "nothing may be written before the input is valid"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_folder_is_named(tmp_path, monkeypatch, capsys):
    (tmp_path / "g.yaml").write_text(GRID)
    (tmp_path / "ro").mkdir(mode=0o555)
    monkeypatch.chdir(tmp_path)
    assert main(["grid", "g.yaml", "--out", "ro"]) == 2
    assert "--out ro: ro is not writable by this user" in _one_line_error(capsys)


def test_result_files_follow_the_umask(tmp_path):
    from vtbench.engine import results

    previous = os.umask(0o027)
    try:
        results.write_json(tmp_path / "a.json", {"x": 1})
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
        os.umask(0o022)
        results.write_text(tmp_path / "b.txt", "x")
        assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(previous)


def test_two_identical_runs_at_once_one_trains_the_other_names_it(tmp_path, capsys):
    import subprocess
    import sys
    import time

    argv = ["run", *TINY, "--budget", "300steps", "--out", str(tmp_path)]
    first = subprocess.Popen([Path(sys.executable).parent / "vtbench", *argv], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("*.claim")) and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)
        assert list(tmp_path.glob("*.claim")), "the first run never claimed its folder"
        assert main(argv) == 2
        assert f"is being trained by process {first.pid} on " in _one_line_error(capsys)
        assert main([*argv, "--wait"]) == 0  # waits, then finds the run ended: it is not trained twice
        out, err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, err
    run_dir = Path(out.strip().splitlines()[-1])
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(run_dir)
    from vtbench.engine import results

    summary = results.read_json(run_dir / "summary.json")
    assert summary["steps"] == 300 and not summary.get("resumed_at")
    assert not list(tmp_path.glob("*.claim"))
