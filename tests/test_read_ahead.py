"""Decoding workers read ahead the training batches the run plans (datasets/video.py, `upcoming` and `prefetch`),
whatever their shapes, and drop those a changed plan no longer names."""

from concurrent.futures import Future

import pandas as pd
import pytest
import torch
from conftest import tiny
from videos import folder_layout

from vtbench.core.shape import BatchRequest
from vtbench.core.spec import MethodSpec
from vtbench.datasets import build_dataset
from vtbench.datasets.video import VideoDataset, load_clips
from vtbench.engine import results
from vtbench.engine.runner import execute
from vtbench.errors import ConfigError


def test_the_workers_read_ahead_the_batches_the_caller_names(tmp_path):
    """Without a plan, the batches of the same shape that follow; with one (`upcoming`), its first `prefetch`
    batches, whatever their shapes; a batch read ahead that the plan no longer names is dropped."""
    root = folder_layout(tmp_path / "f")
    data = build_dataset(f"folder:{root}", "train", seed=0, workers=1, prefetch=2)
    data.batch([0, 1], 4, 16, 2, training=True)
    assert list(data._ahead) == [((2, 3), 4, 16, (2, 2), True), ((4, 5), 4, 16, (2, 2), True)]
    plan = [BatchRequest((4, 5), 4, 16, 2), BatchRequest((6, 7, 8, 9), 2, 8, (1, 3, 1, 2)),
            BatchRequest((10, 11), 4, 16, 0)]  # a rank's part, then shapes that change from step to step
    data.batch([2, 3], 4, 16, 2, training=True, upcoming=lambda k: plan[k - 1])
    assert list(data._ahead) == [((4, 5), 4, 16, (2, 2), True), ((6, 7, 8, 9), 2, 8, (1, 3, 1, 2), True)]
    ahead = data._ahead[((6, 7, 8, 9), 2, 8, (1, 3, 1, 2), True)]
    clips, labels = data.batch([4, 5], 4, 16, 2, training=True, upcoming=lambda k: plan[k])
    assert torch.equal(clips, build_dataset(f"folder:{root}", "train", seed=0).batch([4, 5], 4, 16, 2, True)[0])
    assert data._ahead[((6, 7, 8, 9), 2, 8, (1, 3, 1, 2), True)] is ahead  # still wanted: not decoded twice
    assert ((10, 11), 4, 16, (0, 0), True) in data._ahead
    data.batch([20, 21], 4, 16, 2, training=True, upcoming=lambda k: BatchRequest((30 + k,), 4, 16, 2))
    assert list(data._ahead) == [((31,), 4, 16, (2,), True), ((32,), 4, 16, (2,), True)]  # the rest dropped
    data.close()


def test_a_changed_plan_cancels_the_batches_it_no_longer_names_before_the_batch_asked_for(tmp_path, monkeypatch):
    """A guess that proved wrong (a stage began) must not make the batch asked for wait behind the stale ones."""
    root = folder_layout(tmp_path / "f")
    data = build_dataset(f"folder:{root}", "train", seed=0, workers=1, prefetch=2)
    read_ahead, ahead_when_taken = {}, []

    def submit(key):  # the batch asked for decodes at once; those read ahead stay queued, never started
        if key[0] == (8, 9):
            done = Future()
            done.set_result(load_clips(data._requests(key)))
            return [([0, 1], done)]
        read_ahead[key] = Future()
        return [([0, 1], read_ahead[key])]

    take = data._take
    monkeypatch.setattr(data, "_submit", submit)
    monkeypatch.setattr(data, "_take", lambda key: ahead_when_taken.append(set(data._ahead)) or take(key))
    plan = [BatchRequest((2, 3), 4, 16, 2), BatchRequest((4, 5), 4, 16, 2)]
    data._ahead[_key_of((0, 1))] = submit(_key_of((0, 1)))  # batch 0 was read ahead, and is there
    read_ahead[_key_of((0, 1))].set_result(load_clips(data._requests(_key_of((0, 1)))))
    data.batch([0, 1], 4, 16, 2, training=True, upcoming=lambda k: plan[k - 1])
    stale = [read_ahead[_key_of((2, 3))], read_ahead[_key_of((4, 5))]]
    data.batch([8, 9], 4, 16, 2, training=True, upcoming=lambda k: BatchRequest((10 + k,), 4, 16, 2))
    assert all(future.cancelled() for future in stale)
    assert ahead_when_taken[-1] == set()  # gone before batch (8, 9) was taken
    assert set(data._ahead) == {_key_of((11,)), _key_of((12,))}
    data.close()
    assert data._ahead == {}


def _key_of(indices: tuple[int, ...]) -> tuple:
    return indices, 4, 16, (2,) * len(indices), True


@pytest.mark.parametrize("long_cycle", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_a_run_finds_the_shapes_its_method_plans_read_ahead(tmp_path, monkeypatch, long_cycle):
    """Multigrid's short cycle changes the batch shape at every step; the workers decode the shapes the method
    plans, so that the run waits for decoding at its first step and, with the long cycle, only where a stage
    begins that the plan made at the step before could not foresee."""
    root = folder_layout(tmp_path / "f")
    waited = []
    take = VideoDataset._take

    def counting(self, key):
        if key[-1] and key not in self._ahead:  # a training batch decoded while the model waits
            waited.append(key)
        return take(self, key)

    monkeypatch.setattr(VideoDataset, "_take", counting)
    config = tiny(dataset=f"folder:{root}", data_args={"workers": 1}, frames=8, size=16,
                  budget="16steps" if long_cycle else "6steps", eval_every=1.0,
                  methods=[MethodSpec("multigrid", {"long_cycle": long_cycle, "cycles": 1})])
    steps = pd.read_parquet(execute(config, tmp_path / "runs", progress_bar=False) / results.STEPS)
    assert steps["size"].nunique() > 1  # the shape did change from step to step
    stage_changes = int((steps["multigrid_stage"].diff().fillna(0) != 0).sum())
    if long_cycle:
        assert 1 <= len(waited) <= 1 + stage_changes < len(steps) / 2
    else:  # the short cycle alone: every shape foreseen
        assert len(waited) == 1


def test_prefetch_is_a_whole_number_of_batches(tmp_path):
    root = folder_layout(tmp_path / "f")
    for bad in (0, 1.5, True):
        with pytest.raises(ConfigError, match="data_args.prefetch is a whole number >= 1"):
            build_dataset(f"folder:{root}", "train", seed=0, prefetch=bad)
