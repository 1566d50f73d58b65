"""Repeated sampling (`data_args.repeats`): several clips from each decoded training video, decoded once."""

import pytest
import torch
from conftest import tiny
from videos import folder_layout, frame_of

from vtbench.datasets import build_dataset, decoders, sampling
from vtbench.datasets.cache import build_cache
from vtbench.datasets.video import VideoDataset, chunk_groups
from vtbench.engine import results
from vtbench.engine.config import apply, parse_set
from vtbench.engine.runner import execute
from vtbench.errors import ConfigError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return folder_layout(tmp_path_factory.mktemp("repeats") / "f")  # 6 training videos, 3 validation ones


def _data(root, part="train", **args) -> VideoDataset:
    return VideoDataset("folder", root, part, seed=0, decoder="pyav", cache=False, **args)


def _first_frame(clip: torch.Tensor) -> int:
    """The frame a normalised clip (3, T, S, S) starts with."""
    mean, std = torch.tensor(sampling.MEAN).view(3, 1, 1), torch.tensor(sampling.STD).view(3, 1, 1)
    return frame_of(((clip[:, 0] * std + mean) * 255).permute(1, 2, 0).numpy())


@pytest.fixture
def reads(monkeypatch):
    """Counts the decoder's `read_frames` calls (the frames it was asked for, one list a call)."""
    calls = []
    module = decoders.module("pyav")
    original = module.read_frames

    def counted(path, indices, count, short=None):
        calls.append(list(indices))
        return original(path, indices, count, short)

    monkeypatch.setattr(module, "read_frames", counted)
    return calls


def test_consecutive_indices_share_a_video_with_their_own_draws(root):
    data = _data(root, repeats=2)
    n = len(data.videos)
    assert [data._video(i) for i in (0, 2, 4)] == [data._video(i) for i in (1, 3, 5)]
    assert data._video(0) != data._video(2)
    assert sorted(data._video(i) for i in range(2 * n)) == sorted(list(range(n)) * 2)  # an epoch: 2 x N clips
    assert [data._video(i) for i in range(0, 2 * n, 2)] == [_data(root)._video(i) for i in range(n)]
    video, labels = data.batch([0, 1, 2, 3], frames=4, size=16, stride=2, training=True)
    assert torch.equal(labels, data.labels([0, 1, 2, 3]))
    assert labels[0] == labels[1] and labels[2] == labels[3]
    # the clips of one video differ by their draws (the tests' frames are uniform: their start tells them apart)
    starts = [_first_frame(data.batch([i], 4, 16, 1, training=True)[0][0]) for i in range(40)]
    assert sum(starts[k] != starts[k + 1] for k in range(0, 40, 2)) >= 15
    for i in range(4):  # each clip is the one its index draws alone: decoding two together changes nothing
        assert torch.equal(data.batch([i], 4, 16, 2, training=True)[0], video[i:i + 1])


@pytest.mark.parametrize("stride", [2, 0])
def test_a_video_is_decoded_once_per_batch(root, reads, stride):
    _data(root, repeats=2).batch([0, 1, 2, 3], 4, 16, stride, training=True)
    assert len(reads) == 2
    reads.clear()
    _data(root).batch([0, 1, 2, 3], 4, 16, stride, training=True)
    assert len(reads) == 4
    reads.clear()
    _data(root, repeats=2).batch([1, 2], 4, 16, stride, training=True)  # two videos' clips straddle this batch
    assert len(reads) == 2


def test_several_strides_in_one_batch_read_the_union_of_their_frames(root, reads):
    data = _data(root, repeats=2)
    video, _ = data.batch([0, 1], 4, 16, [1, 5], training=True)
    assert len(reads) == 1 and len(reads[0]) <= 8
    for i, stride in ((0, 1), (1, 5)):  # each clip as its own batch gives the same pixels
        assert torch.equal(data.batch([i], 4, 16, stride, training=True)[0], video[i:i + 1])


def test_a_decoding_worker_gives_the_same_clips_as_in_place(root):
    inline = _data(root, repeats=2)
    pooled = _data(root, repeats=2, workers=1)
    try:
        for indices in ([0, 1, 2, 3], [4, 5, 6, 7], [9, 10, 11]):  # the second hits the read-ahead; odd sizes straddle
            a, la = inline.batch(indices, 4, 16, 2, training=True)
            b, lb = pooled.batch(indices, 4, 16, 2, training=True)
            assert torch.equal(a, b) and torch.equal(la, lb)
    finally:
        pooled.close()


def test_the_chunks_of_a_batch_keep_a_videos_clips_together():
    assert chunk_groups([[0, 1], [2, 3]], 2) == [[0, 1], [2, 3]]
    assert chunk_groups([[0, 1], [2, 3], [4, 5]], 2) == [[0, 1, 2, 3], [4, 5]]
    assert chunk_groups([[0], [1], [2], [3], [4]], 2) == [[0, 1, 2], [3, 4]]  # one clip a video: as before
    assert chunk_groups([[0, 1]], 4) == [[0, 1]]
    for workers in (1, 2, 3, 5):
        chunks = chunk_groups([[0, 1, 2], [3], [4, 5], [6, 7, 8, 9]], workers)
        assert len(chunks) <= workers and [n for c in chunks for n in c] == list(range(10))


def test_the_cache_reads_a_video_once_and_gives_the_same_clips(root, monkeypatch, tmp_path):
    cached_root = folder_layout(tmp_path / "c", per_split={"train": 1, "val": 1})
    build_cache("folder", cached_root, size=16, progress=False, decoder="pyav")
    decoded = _data(cached_root, repeats=2)
    a, la = decoded.batch([0, 1, 2, 3], 4, 16, 2, training=True)
    cached = VideoDataset("folder", cached_root, "train", seed=0, decoder="pyav", repeats=2)
    from vtbench.datasets.cache import Cache

    reads, read = [], Cache.read
    monkeypatch.setattr(Cache, "read", lambda self, path, indices: reads.append(path) or read(self, path, indices))
    monkeypatch.setattr(decoders.module("pyav"), "read_frames", lambda *a, **k: pytest.fail("decoded despite cache"))
    b, lb = cached.batch([0, 1, 2, 3], 4, 16, 2, training=True)
    assert torch.equal(a, b) and torch.equal(la, lb) and len(reads) == 2


def test_evaluation_ignores_repeats(root):
    plain, repeated = _data(root, "val"), _data(root, "val", repeats=3)
    assert [repeated._video(i) for i in range(3)] == [plain._video(i) for i in range(3)]
    a, la = plain.batch([0, 1, 2], 4, 16, 2, training=False)
    b, lb = repeated.batch([0, 1, 2], 4, 16, 2, training=False)
    assert torch.equal(a, b) and torch.equal(la, lb) and len(set(lb.tolist())) == 3


@pytest.mark.parametrize("repeats", [0, 1.5, -2, True, "2"])
def test_repeats_must_be_a_whole_number_from_one(root, repeats):
    with pytest.raises(ConfigError, match=r"data_args\.repeats") as err:
        build_dataset(f"folder:{root}", "train", seed=0, repeats=repeats)
    assert "\n" not in str(err.value)


def test_the_error_for_an_unknown_key_lists_repeats(root):
    with pytest.raises(ConfigError, match="repeats"):
        build_dataset(f"folder:{root}", "train", seed=0, repeat=2)


def test_a_run_trains_with_repeats(root, tmp_path):
    config = tiny(dataset=f"folder:{root}", budget="2steps", eval_every=1.0)
    config = apply(config, parse_set(["data_args.repeats=2"]), where="--set")  # as `--set data_args.repeats=2`
    assert config.data_args == {"repeats": 2}
    run = execute(config, tmp_path / "runs", progress_bar=False)
    summary = results.read_json(run / results.SUMMARY)
    assert summary["status"] == "completed" and summary["steps"] == 2
    assert summary["samples"] == 2 * config.batch_size  # each clip a sample: repeats change nothing in the budget
    assert summary["top1"] is not None
