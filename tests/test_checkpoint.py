"""The checkpoint holds each part's own state; the step rows live in an append-only journal it names by count."""

import json

import pandas as pd
import pytest
import torch
from conftest import stopped_run

from vtbench.engine import results
from vtbench.engine.runner import execute
from vtbench.engine.steplog import Step, StepLog
from vtbench.errors import VtbenchError


def _log_rows(log: StepLog, first: int, count: int) -> None:
    for step in range(first, first + count):
        log.add(Step(loss=torch.tensor(float(step)), lr=0.1, clips=4, frames=4, size=16, tokens=8, keep=1.0,
                     step_s=0.5, data_s=0.1))
        log.close_interval({"step": step})
    log.read_losses()


def _saved(tmp_path, rows: int) -> tuple:
    """A step log of `rows` rows saved to its journal: the journal, the log and its checkpoint state."""
    journal = tmp_path / "steps.jsonl"
    log = StepLog(1, journal, tmp_path / "steps.parquet")
    _log_rows(log, 1, rows)
    log.save()
    return journal, log, log.state_dict()


def test_the_journal_only_grows_and_a_resume_drops_rows_its_checkpoint_never_named(tmp_path):
    journal, log, checkpoint = _saved(tmp_path, 3)
    first = journal.read_bytes()
    assert checkpoint == {"rows": 3, "bytes": len(first)}  # a count, not the rows
    _log_rows(log, 4, 2)
    log.save()
    assert journal.read_bytes().startswith(first)  # appended: the rows before stay as they were
    assert [json.loads(line)["step"] for line in journal.read_text().splitlines()] == [1, 2, 3, 4, 5]

    # killed after the second save, before its checkpoint: resumed from the first
    resumed = StepLog(1, journal, tmp_path / "steps.parquet")
    resumed.load_state_dict(checkpoint)
    assert [r["step"] for r in resumed.rows] == [1, 2, 3] and resumed.rows[2]["loss"] == 3.0
    _log_rows(resumed, 4, 1)
    resumed.save()
    assert [json.loads(line)["step"] for line in journal.read_text().splitlines()] == [1, 2, 3, 4]

    resumed.finish()
    assert not journal.exists()
    assert pd.read_parquet(tmp_path / "steps.parquet")["step"].tolist() == [1, 2, 3, 4]


def test_a_resume_whose_first_save_has_no_new_rows_cuts_the_journal_back_to_its_checkpoint(tmp_path):
    journal, log, checkpoint = _saved(tmp_path, 3)
    table = tmp_path / "steps.parquet"
    _log_rows(log, 4, 2)
    log.save()  # killed here, before the checkpoint that would name rows 4 and 5
    resumed = StepLog(1, journal, table)
    resumed.load_state_dict(checkpoint)
    resumed.save()  # a checkpoint at once: nothing new
    assert resumed.state_dict() == checkpoint and journal.stat().st_size == checkpoint["bytes"]
    _log_rows(resumed, 4, 1)
    resumed.save()
    again = StepLog(1, journal, table)
    again.load_state_dict(resumed.state_dict())
    assert [r["step"] for r in again.rows] == [1, 2, 3, 4]


def test_a_journal_missing_or_unreadable_is_refused_with_its_path(tmp_path):
    journal, _, state = _saved(tmp_path, 2)
    journal.write_bytes(b"\0" * state["bytes"])
    with pytest.raises(VtbenchError, match=f"{journal}: holds 0 readable of the 2 rows"):
        StepLog(1, journal, tmp_path / "steps.parquet").load_state_dict(state)
    journal.unlink()
    with pytest.raises(VtbenchError, match=f"{journal}: missing, and its checkpoint names 2 rows"):
        StepLog(1, journal, tmp_path / "steps.parquet").load_state_dict(state)


def test_a_journal_shorter_than_its_checkpoint_is_refused_with_its_path(tmp_path):
    journal, _, state = _saved(tmp_path, 3)
    journal.write_text(journal.read_text().splitlines(keepends=True)[0])
    with pytest.raises(VtbenchError, match=f"{journal}: holds 1 readable of the 3 rows"):
        StepLog(1, journal).load_state_dict(state)


def test_a_stopped_run_keeps_its_rows_in_the_journal_and_its_parts_in_the_checkpoint(tmp_path, monkeypatch):
    config, run_dir = stopped_run(tmp_path / "run", monkeypatch, "12steps", 6)
    state = results.load_checkpoint(run_dir / results.CHECKPOINT)
    parts = {"model", "optimizer", "methods", "clock", "flops", "evaluation", "steps", "cpu", "run", "ranks"}
    assert parts <= set(state)
    assert state["clock"]["used"]["steps"] == 6 and state["steps"]["rows"] == 6
    assert len((run_dir / results.STEPS_JOURNAL).read_text().splitlines()) == 6
    assert set(state["ranks"][0]) == {"rng", "measure"}
    execute(config, tmp_path / "run", progress_bar=False)
    assert not (run_dir / results.STEPS_JOURNAL).exists()
    assert pd.read_parquet(run_dir / results.STEPS)["step"].tolist() == list(range(1, 13))


def _first_layout(state: dict, rows: list[dict]) -> dict:
    """`state` as the checkpoints written before parts were (every value at the top, the step rows inside)."""
    own = state["ranks"][0]
    return {
        **{k: state[k] for k in ("model", "optimizer", "methods", "flops", "cpu", "run_id")}, "compiled": None,
        "used": state["clock"]["used"], "off_clock_s": state["clock"]["off_clock_s"],
        "next_eval": state["evaluation"]["next"], "eval_rows": state["evaluation"]["rows"], "step_rows": rows,
        "measure": own["measure"], "rng": own["rng"], "resumed_at": state["run"]["resumed_at"],
        "skipped_videos": state["run"]["skipped_videos"], "world_size": 1, "ranks_rng": None, "ranks_measure": None,
        "data_wait_s": state["run"]["data_wait_s"],
    }


def test_a_checkpoint_of_the_first_layout_resumes_like_an_uninterrupted_run(tmp_path, monkeypatch):
    config, run_dir = stopped_run(tmp_path / "run", monkeypatch, "12steps", 6)
    path = run_dir / results.CHECKPOINT
    journal = run_dir / results.STEPS_JOURNAL
    rows = [json.loads(line) for line in journal.read_text().splitlines()]
    results.save_checkpoint(path, _first_layout(results.load_checkpoint(path), rows))
    journal.unlink()
    resumed = execute(config, tmp_path / "run", progress_bar=False)
    reference = execute(config, tmp_path / "ref", progress_bar=False)
    ref, res = (pd.read_parquet(d / results.STEPS) for d in (reference, resumed))
    assert res["step"].tolist() == ref["step"].tolist() == list(range(1, 13))
    assert res["loss"].tolist() == pytest.approx(ref["loss"].tolist(), rel=1e-5)
    assert results.read_json(resumed / results.SUMMARY)["resumed_at"] == [6]
