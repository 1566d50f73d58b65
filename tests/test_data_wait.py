"""Loader-inclusive accounting: every step records the time it spent getting its batch, and a run whose batches came
slower than its model took them is marked data-bound, and the report names it. Where a loader prepares batches while
the model trains, a wait of more than a tenth of the training time is the mark; where they are made in line, between
steps (the synthetic renderer on a CPU, decoding without workers), only taking longer than the model is."""

import json
import time

import pandas as pd
import pytest
from conftest import tiny
from videos import folder_layout

from vtbench.datasets import build_dataset, video
from vtbench.datasets.synthetic import SyntheticVideos
from vtbench.engine.runner import execute
from vtbench.engine.steplog import data_wait_figures
from vtbench.report.write import _data_sections, write_report
from vtbench.studies.table import runs_table


def test_the_mark_depends_on_whether_the_batches_were_prepared_while_the_model_trained():
    assert data_wait_figures(2.0, 10.0, ahead=True)["data_bound"] is True  # a loader 20% behind
    assert data_wait_figures(0.5, 10.0, ahead=True)["data_bound"] is False
    assert data_wait_figures(2.0, 10.0, ahead=False)["data_bound"] is False  # data 20%, model the rest
    assert data_wait_figures(6.0, 10.0, ahead=False) == {
        "data_wait_s": 6.0, "data_wait_share": 0.6, "data_ahead": False, "data_bound": True}
    assert data_wait_figures(0.0, 0.0, ahead=False)["data_bound"] is None


def test_a_run_that_makes_slow_batches_in_line_is_data_bound(monkeypatch, tmp_path):
    fast = execute(tiny(budget="4steps"), tmp_path / "study", progress_bar=False)
    render = SyntheticVideos.batch

    def slow(self, indices, *args, training=False, **kwargs):
        if training:
            time.sleep(0.5)  # a renderer far slower than the model's step
        return render(self, indices, *args, training=training, **kwargs)

    monkeypatch.setattr(SyntheticVideos, "batch", slow)
    waiting = execute(tiny(budget="4steps", seed=1), tmp_path / "study", progress_bar=False)
    quick, slowed = (json.loads((d / "summary.json").read_text()) for d in (fast, waiting))
    assert slowed["data_ahead"] is False and quick["data_ahead"] is False  # rendered in line on a CPU
    assert slowed["data_bound"] is True and slowed["data_wait_share"] > 0.5
    assert slowed["data_wait_s"] >= 4 * 0.5
    assert 0 <= quick["data_wait_share"] < slowed["data_wait_share"]
    steps = pd.read_parquet(waiting / "steps.parquet")
    assert (steps["data_s"] >= 0.5).all() and (steps["data_share"] > 0.5).all()
    assert (steps["data_s"] < steps["step_s"]).all()  # the wait is part of the step, not all of it
    report = write_report(tmp_path / "study", tmp_path / "report").read_text()
    section = report[report.index("## Data-bound runs"):]
    assert "made their batches in line" in section and f"seed 1 ({waiting.name}): " in section
    assert f"({waiting.name}): {100 * slowed['data_wait_share']:.0f}% in line" in section
    assert (f"({fast.name})" in section) == quick["data_bound"]  # rendering clips for a tiny model can bind it too


def test_a_loader_that_falls_behind_the_model_makes_its_run_data_bound(monkeypatch, tmp_path):
    """Batches rendered ahead in a background thread (as on a GPU), slowed on purpose: the run waits for them."""
    render = SyntheticVideos._render

    def slow(self, indices, *args, **kwargs):
        time.sleep(0.3)
        return render(self, indices, *args, **kwargs)

    monkeypatch.setattr(SyntheticVideos, "_render", slow)
    run = execute(tiny(budget="6steps", data_args={"ahead": True}), tmp_path / "study", progress_bar=False)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data_ahead"] is True
    assert summary["data_bound"] is True and summary["data_wait_share"] > 0.1
    section = "\n".join(_data_sections(runs_table(tmp_path / "study")))
    assert "waited for a loader" in section and f"({run.name}): " in section and "% waiting" in section


def test_a_decoded_video_run_whose_decoding_is_slower_than_its_model_is_data_bound(monkeypatch, tmp_path):
    root = folder_layout(tmp_path / "videos")
    load = video.load_clips

    def slow(requests):
        time.sleep(0.5)  # a decoder far slower than the model's step
        return load(requests)

    monkeypatch.setattr(video, "load_clips", slow)
    run = execute(tiny(budget="4steps", dataset=f"folder:{root}", eval_clips=4), tmp_path / "study",
                  progress_bar=False)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data_ahead"] is False and summary["data_bound"] is True and summary["data_wait_share"] > 0.5
    section = "\n".join(_data_sections(runs_table(tmp_path / "study")))
    assert "made their batches in line" in section and f"({run.name}): " in section


@pytest.mark.parametrize("workers", [0, 1])
def test_decoded_video_is_read_ahead_only_by_workers(tmp_path, workers):
    data = build_dataset(f"folder:{folder_layout(tmp_path / 'videos')}", "train", seed=0, workers=workers)
    assert data.reads_ahead is (workers > 0)
    data.close()


def test_runs_whose_in_line_data_took_a_share_of_their_time_are_told_what_it_costs():
    runs = pd.DataFrame({"method": ["a", "b", "c"], "budget": ["1e9flops"] * 3, "seed": [0, 0, 1],
                         "run_id": ["x", "y", "z"], "data_wait_share": [0.15, 0.2, 0.05],
                         "data_ahead": [False, False, True], "data_bound": [False, False, False]})
    text = "\n".join(_data_sections(runs))
    assert "## Data-bound runs" not in text
    assert "**2 of 3 runs** made their batches in the training process" in text
    assert "15 to 20% of their training time (median 18%)" in text
    assert "at most 1.70x as fast" in text  # 1 / (0.175 + 0.825 / 2)
