"""Loader-inclusive accounting: every step records the time it waited for its batch; a run that waited more than a
tenth of its training time is marked data-bound, and the report names it."""

import json
import time

import pandas as pd
from conftest import tiny

from vtbench.datasets.synthetic import SyntheticVideos
from vtbench.engine.runner import execute
from vtbench.report.write import write_report


def test_a_run_that_waits_for_its_batches_says_so(monkeypatch, tmp_path):
    fast = execute(tiny(budget="4steps"), tmp_path / "study", progress_bar=False)
    render = SyntheticVideos.batch

    def slow(self, indices, *args, training=False, **kwargs):
        if training:
            time.sleep(0.2)  # a decoder far slower than the model's step
        return render(self, indices, *args, training=training, **kwargs)

    monkeypatch.setattr(SyntheticVideos, "batch", slow)
    waiting = execute(tiny(budget="4steps", seed=1), tmp_path / "study", progress_bar=False)
    quick, slowed = (json.loads((d / "summary.json").read_text()) for d in (fast, waiting))
    assert slowed["data_bound"] is True and slowed["data_wait_share"] > 0.2
    assert slowed["data_wait_s"] >= 4 * 0.2
    assert 0 <= quick["data_wait_share"] < slowed["data_wait_share"]
    steps = pd.read_parquet(waiting / "steps.parquet")
    assert (steps["data_s"] >= 0.2).all() and (steps["data_share"] > 0.2).all()
    assert (steps["data_s"] < steps["step_s"]).all()  # the wait is part of the step, not all of it
    report = write_report(tmp_path / "study", tmp_path / "report").read_text()
    section = report[report.index("## Data-bound runs"):]
    assert f"seed 1 ({waiting.name})" in section
    assert (f"({fast.name})" in section) == quick["data_bound"]  # rendering clips for a tiny model can bind it too
