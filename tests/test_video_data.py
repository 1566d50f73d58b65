import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny
from videos import (
    CLASSES,
    CODECS,
    encode,
    folder_layout,
    frame_of,
    hmdb51_layout,
    kinetics_layout,
    level,
    list_layout,
    rotated_video,
    ssv2_layout,
    ucf101_layout,
)

from vtbench.cli import main
from vtbench.datasets import build_dataset, decoders, sampling
from vtbench.datasets.cache import build_cache, find_cache
from vtbench.datasets.decode import Unreadable, read_frames
from vtbench.datasets.layouts import read_index
from vtbench.datasets.video import ClipRequest, load_clip
from vtbench.engine import results
from vtbench.engine.runner import execute
from vtbench.errors import ConfigError

LAYOUTS = {"folder": folder_layout, "list": list_layout, "kinetics": kinetics_layout, "ssv2": ssv2_layout,
           "ucf101": ucf101_layout, "hmdb51": hmdb51_layout}


def _frames_of(video: torch.Tensor) -> list[int]:
    """Frame indices shown by a normalised clip (3, T, S, S)."""
    std, mean = torch.tensor(sampling.STD).view(3, 1, 1, 1), torch.tensor(sampling.MEAN).view(3, 1, 1, 1)
    pixels = ((video * std + mean) * 255).permute(1, 2, 3, 0).numpy()
    return [frame_of(p) for p in pixels]


# ---- decoding -----------------------------------------------------------------------------------------------


@pytest.fixture(params=decoders.NAMES)
def decoder(request):
    """Each decoder's module (`probe`, `read_frames`) where it can decode: TorchCodec's where it loads, on the GPU
    where torch sees one (never in CI)."""
    if reason := decoders.unavailable(request.param):
        pytest.skip(f"{request.param}: {reason}")
    return decoders.module(request.param)


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".avi"])
def test_decoding_picks_the_requested_frames_in_every_codec(suffix, tmp_path, decoder):
    path = encode(tmp_path / f"v{suffix}", frames=24)
    count, fps = decoder.probe(path)
    assert (count, fps) == (24, 12.0)
    wanted = [0, 5, 5, 23, 7]  # any order, repeats
    assert [frame_of(f) for f in decoder.read_frames(path, wanted, count)] == wanted
    late = decoder.read_frames(path, [20, 21, 22], count, short=16)  # short against the video: seeks first
    assert [frame_of(f) for f in late] == [20, 21, 22] and late.shape == (3, 16, 20, 3)
    tail = decoder.read_frames(path, [22, 23, 24, 25], count + 2)  # a count from the duration can run past the end
    assert [frame_of(f) for f in tail] == [22, 23, 23, 23]


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".avi"])
def test_both_decoders_give_the_same_frames_resized_or_not(suffix, tmp_path):
    if reason := decoders.torchcodec_missing():
        pytest.skip(f"TorchCodec cannot load here: {reason}")
    path = encode(tmp_path / f"v{suffix}", frames=24, ramp=True)
    pyav, torchcodec = decoders.module("pyav"), decoders.module("torchcodec")
    assert pyav.probe(path) == torchcodec.probe(path)
    for short in (None, 16, 24):
        a, b = (d.read_frames(path, [0, 7, 7, 19], 24, short).astype(int) for d in (pyav, torchcodec))
        assert a.shape == b.shape and np.abs(a - b).max() <= 1, (short, np.abs(a - b).max())
    # a uniform grey keeps its level through the resize in both (PyAV's combined scale-and-convert lost two)
    grey = encode(tmp_path / f"g{suffix}", frames=8)
    full = np.unique(pyav.read_frames(grey, [5], 8, None)).tolist()
    assert len(full) == 1 and abs(full[0] - level(5)) <= 1  # the codec's own error, at most a level
    for decoder in (pyav, torchcodec):
        assert np.unique(decoder.read_frames(grey, [5], 8, 16)).tolist() == full


def _encode_as_a_stream(path: Path, frames: int) -> Path:
    """A WebM written to a pipe, as browsers' MediaRecorder and live recorders write it: its header says neither
    its duration nor its frame count."""
    import io

    import av

    class Pipe(io.RawIOBase):
        def __init__(self, file):
            self.file = file

        def writable(self):
            return True

        def write(self, data):
            return self.file.write(data)

    with open(path, "wb") as file, av.open(Pipe(file), "w", format="webm") as container:
        stream = container.add_stream(CODECS[".webm"], rate=12)
        stream.width, stream.height, stream.pix_fmt = 40, 32, "yuv420p"
        for k in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((32, 40, 3), level(k), dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def test_a_video_whose_header_gives_no_duration_is_read_by_both_decoders(tmp_path, decoder):
    path = _encode_as_a_stream(tmp_path / "v.webm", frames=24)
    count, fps = decoder.probe(path)
    assert (count, fps) == (24, 12.0)
    assert [frame_of(f) for f in decoder.read_frames(path, [0, 5, 23, 7], count, short=16)] == [0, 5, 23, 7]


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_pyav_turns_a_rotated_video_upright(rotation, tmp_path):
    """A display matrix (a phone's portrait video): the frames come out upright, with every PyAV the project takes
    (PyAV >= 14 gives the matrix with each frame, older PyAV with the stream)."""
    path = tmp_path / "v.mp4"
    image = rotated_video(path, rotation)
    pyav = decoders.module("pyav")
    upright = np.rot90(image, round(rotation / 90) % 4)  # counter-clockwise, as the matrix says
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # honoured, so nothing to warn about
        for short in (None, 16):
            frames = pyav.read_frames(path, [0, 5], 8, short)
            assert frames.shape[1:3] == (upright.shape[:2] if short is None else
                                         sampling_shape(upright.shape[:2], short))
        full = pyav.read_frames(path, [0], 8, None)[0].astype(int)
    assert np.abs(full - upright).mean() < 4  # the band where the picture, turned upright, has it


def test_a_pyav_that_gives_no_display_matrix_warns_that_videos_stay_as_stored(tmp_path, monkeypatch):
    from vtbench.datasets import decode

    path = tmp_path / "v.mp4"
    image = rotated_video(path, 90)
    monkeypatch.setattr(decode, "_display_rotation", lambda frame, stream: None)  # as a PyAV that reads neither
    decode._cannot_turn_upright.cache_clear()
    with pytest.warns(UserWarning, match=r"^PyAV \S+ gives no display matrix: .*stored.*on its side") as caught:
        frames = decode.read_frames(path, [0, 5], 8, None)
        decode.read_frames(path, [0], 8, None)
    assert len(caught) == 1 and len(str(caught[0].message).splitlines()) == 1  # one line, once
    assert frames.shape[1:3] == image.shape[:2]  # as stored: not turned, and said so


@pytest.mark.skipif(bool(decoders.torchcodec_missing()), reason="TorchCodec (the optional `torchcodec` extra) cannot "
                    f"load here: {decoders.torchcodec_missing()}")
@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_torchcodec_turns_a_rotated_video_upright_as_pyav_does(rotation, tmp_path):
    path = tmp_path / "v.mp4"
    image = rotated_video(path, rotation)
    pyav, torchcodec = decoders.module("pyav"), decoders.module("torchcodec")
    upright = np.rot90(image, round(rotation / 90) % 4)
    for short in (None, 16):
        a, b = (d.read_frames(path, [0, 5], 8, short).astype(int) for d in (pyav, torchcodec))
        assert a.shape == b.shape and np.abs(a - b).max() <= 1, (short, a.shape, b.shape)
        assert a.shape[1:3] == (upright.shape[:2] if short is None else sampling_shape(upright.shape[:2], short))


def sampling_shape(shape: tuple[int, int], short: int) -> tuple[int, int]:
    from vtbench.datasets.decode import output_size

    width, height = output_size(shape[1], shape[0], short)
    return height, width


@pytest.mark.parametrize("seek_outcome", ["lands past the clip", "fails"])
def test_a_seek_that_misses_falls_back_to_decoding_from_the_start(seek_outcome, tmp_path, monkeypatch):
    import av

    from vtbench.datasets import decode

    path = encode(tmp_path / "v.mp4", frames=24)
    real = decode._decode
    seeks = []

    def flaky(path, wanted, short, seek):
        if seek:
            seeks.append(seek_outcome)
            if seek_outcome == "fails":
                raise av.FFmpegError(0, "seek not supported")
            return {}, max(wanted) + 1
        return real(path, wanted, short, seek)

    monkeypatch.setattr(decode, "_decode", flaky)
    assert [frame_of(f) for f in read_frames(path, [20, 22], 24)] == [20, 22] and seeks == [seek_outcome]


@pytest.mark.parametrize("content", [b"", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 40, b"just text, not a video\n" * 20])
def test_broken_files_raise_unreadable(content, tmp_path, decoder):
    path = tmp_path / "broken.mp4"
    path.write_bytes(content)
    with pytest.raises(Unreadable):
        decoder.probe(path)


def test_a_truncated_video_is_unreadable(tmp_path, decoder):
    path = encode(tmp_path / "v.mp4", frames=24)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(Unreadable):
        count, _ = decoder.probe(path)
        decoder.read_frames(path, list(range(count)), count)


# ---- sampling -------------------------------------------------------------------------------------------------


def test_dense_and_segment_indices():
    assert sampling.dense_starts(24, 4, 2, None) == [8]  # span 7, room 17, centred
    assert sampling.dense_indices(24, 4, 2, 8) == [8, 10, 12, 14]
    assert sampling.dense_starts(24, 4, 2, None, views=3) == [0, 8, 17]
    starts = {sampling.dense_starts(24, 4, 2, np.random.default_rng(s))[0] for s in range(200)}
    assert starts == set(range(18))  # every start in [0, room] and no other
    assert sampling.dense_indices(5, 4, 2, 0) == [0, 2, 4, 4]  # a short video repeats its last frame
    assert sampling.segment_indices(24, 4, None) == [3, 9, 15, 21]  # segment centres
    assert sampling.segment_indices(24, 4, None, view=0, views=2) == [1, 7, 13, 19]
    for seed in range(20):
        drawn = sampling.segment_indices(24, 4, np.random.default_rng(seed))
        assert all(6 * k <= i < 6 * (k + 1) for k, i in enumerate(drawn))


def test_crops_and_flip():
    frames = np.arange(2 * 4 * 6 * 3, dtype=np.uint8).reshape(2, 4, 6, 3)
    assert sampling.crop_offsets(4, 6, 4, None) == [(0, 1)]
    assert sampling.crop_offsets(4, 6, 4, None, crops=3) == [(0, 0), (0, 1), (0, 2)]
    assert sampling.crop_offsets(6, 4, 4, None, crops=3) == [(0, 0), (1, 0), (2, 0)]
    flipped = sampling.crop(frames, 4, 0, 2, flip=True)
    np.testing.assert_array_equal(flipped, frames[:, :, 2:6][:, :, ::-1])


# ---- layouts ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_reads_labels_and_splits(layout, tmp_path):
    root = LAYOUTS[layout](tmp_path / layout)
    index = read_index(layout, root)
    assert len(index.classes) == 3
    per_class = {"train": 2, "val": 1}
    for split in ("train", "val"):
        labels = [label for _, label in index.videos[split]]
        assert sorted(labels) == sorted(list(range(3)) * per_class[split]), (split, labels)
        assert all(path.exists() for path, _ in index.videos[split])
    if layout == "folder":
        assert index.classes == sorted(CLASSES)
    if layout == "ssv2":  # labels by template with the brackets removed
        assert index.classes[1] == "Putting something on something"
    if layout == "kinetics":
        assert index.classes == ["archery things", "bowling things", "diving things"]
    if layout == "ucf101":  # the split's held-out group is the test list
        assert all("_g01_" in p.name for p, _ in index.videos["val"])
        assert all("_g02_" in p.name for p, _ in read_index(layout, root, split=2).videos["val"])
    if layout == "hmdb51":  # 1 train, 2 test, 0 neither
        assert all(p.name.endswith(("_0.avi", "_1.avi")) for p, _ in index.videos["train"])


def test_the_ucf101_split_is_a_data_arg(tmp_path):
    root = ucf101_layout(tmp_path / "u")
    val = build_dataset(f"ucf101:{root}", "val", seed=0, split=2)
    assert all("_g02_" in p.name for p, _ in val.videos)


def test_kinetics_takes_val_csv_too(tmp_path):
    root = kinetics_layout(tmp_path / "k", val_name="val.csv")
    assert len(read_index("kinetics", root).videos["val"]) == 3


@pytest.mark.parametrize("layout, remove, message", [
    ("folder", "val", "the folder layout's val folder .* does not exist"),
    ("list", "val.csv", "the list layout's val file .*val.csv does not exist"),
    ("kinetics", "annotations/train.csv", "kinetics train annotations .* does not exist"),
    ("ssv2", "something-something-v2-labels.json", "the ssv2 labels file .* does not exist"),
    ("ucf101", "ucfTrainTestlist/testlist01.txt", "the ucf101 val list of split 1 .* does not exist"),
    ("hmdb51", "testTrainMulti_7030_splits", "no hmdb51 split files"),
])
def test_a_missing_split_or_labels_file_is_named(layout, remove, message, tmp_path):
    import shutil

    root = LAYOUTS[layout](tmp_path / layout)
    target = root / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(ConfigError, match=message):
        read_index(layout, root)


@pytest.mark.parametrize("line", ["../../outside.mp4 1", "/etc/passwd 0", "clips/../../x.mp4 0"])
def test_list_paths_must_stay_inside_root(line, tmp_path):
    root = list_layout(tmp_path / "l")
    encode(tmp_path / "outside.mp4")
    with (root / "train.csv").open("a") as f:
        f.write(line + "\n")
    with pytest.raises(ConfigError, match=rf"{root}/train.csv:7: path '{re.escape(line.split()[0])}' must lie inside"):
        read_index("list", root)


def test_a_symbolic_link_inside_root_is_followed(tmp_path):
    root = list_layout(tmp_path / "l")
    elsewhere = encode(tmp_path / "store" / "kept.mp4")
    (root / "clips" / "linked.mp4").symlink_to(elsewhere)
    with (root / "train.csv").open("a") as f:
        f.write("clips/linked.mp4 2\n")
    train = read_index("list", root).videos["train"]
    assert train[-1] == (root / "clips" / "linked.mp4", 2) and train[-1][0].resolve() == elsewhere


@pytest.mark.parametrize("layout, file, content, message", [
    ("kinetics", "annotations/train.csv", "label,youtube_id,time_start,time_end,split\nx,../../../etc,0,10,train\n",
     "train.csv:2: path '../../../etc_000000_000010.mp4' must lie inside"),
    ("kinetics", "annotations/train.csv", "label,youtube_id,time_start,time_end,split\nx,abc,soon,10,train\n",
     "train.csv:2: expected whole seconds in time_start and time_end"),
    ("kinetics", "annotations/train.csv", "label,youtube_id,time_start,time_end,split\nx,abc\n",
     "train.csv:2: expected label,youtube_id"),
    ("ssv2", "something-something-v2-train.json", '[{"id": "../../x", "template": "Putting something on something"}]',
     "train.json: video 0: path '../../x.webm' must lie inside"),
    ("ssv2", "something-something-v2-train.json", '{"id": 1}', "train.json: expected a list of videos"),
    ("ssv2", "something-something-v2-train.json", '[{"id": 1}]', 'train.json: video 0: expected an object with "id"'),
    ("ssv2", "something-something-v2-labels.json", '["a", "b"]', "labels.json: expected an object mapping"),
    ("ucf101", "ucfTrainTestlist/classInd.txt", "1 Archery\nBowling\n", "classInd.txt:2: expected `number ClassName`"),
    ("ucf101", "ucfTrainTestlist/trainlist01.txt", "/etc/passwd 1\n", "trainlist01.txt:1: path '/etc/passwd' must lie"),
    ("ucf101", "ucfTrainTestlist/trainlist01.txt", b"\xff\xfe\x00binary", "trainlist01.txt: not a UTF-8 text file"),
    ("hmdb51", "testTrainMulti_7030_splits/archery_test_split1.txt", "../../../x.avi 1\n",
     "archery_test_split1.txt:1: path '../../../x.avi' must lie inside"),
])
def test_malformed_or_escaping_index_files_are_one_error_naming_file_and_line(layout, file, content, message, tmp_path):
    root = LAYOUTS[layout](tmp_path / layout)
    target = root / file
    target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
    with pytest.raises(ConfigError, match=re.escape(message)):
        read_index(layout, root)


def test_a_missing_root_and_an_unknown_format_are_named(tmp_path):
    with pytest.raises(ConfigError, match=f"dataset root {tmp_path}/nowhere does not exist"):
        build_dataset(f"ucf101:{tmp_path}/nowhere", "train", 0)
    with pytest.raises(ConfigError, match="unknown dataset format 'youtube'; known: synthetic, folder:ROOT"):
        build_dataset(f"youtube:{tmp_path}", "train", 0)


# ---- the data set -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_clips_have_the_requested_shape_in_every_layout(layout, tmp_path):
    root = LAYOUTS[layout](tmp_path / layout)
    train = build_dataset(f"{layout}:{root}", "train", seed=0)
    video, labels = train.batch([0, 1, 2], frames=4, size=16, stride=2, training=True)
    assert video.shape == (3, 3, 4, 16, 16) and video.dtype == torch.float32 and labels.shape == (3,)
    assert torch.equal(labels, train.labels([0, 1, 2]))
    video, _ = train.batch([3, 4], frames=8, size=24, stride=[1, 3], training=True)  # what methods may ask
    assert video.shape == (2, 3, 8, 24, 24)
    segments, _ = train.batch([5], frames=6, size=16, stride=0, training=False)
    assert _frames_of(segments[0]) == [2, 6, 10, 14, 18, 22]


def test_training_draws_dense_clips_and_evaluation_centres_them(tmp_path):
    root = folder_layout(tmp_path / "f")
    train = build_dataset(f"folder:{root}", "train", seed=0)
    val = build_dataset(f"folder:{root}", "val", seed=0)
    (clip,), _ = val.batch([0], frames=4, size=16, stride=2, training=False)
    assert _frames_of(clip) == [8, 10, 12, 14]  # centred in 24 frames
    seen = set()
    for i in range(30):
        (clip,), _ = train.batch([i], frames=4, size=16, stride=3, training=True)
        shown = _frames_of(clip)
        assert shown == [shown[0] + 3 * k for k in range(4)]
        seen.add(shown[0])
    assert len(seen) > 5 and max(seen) <= 24 - 10
    again, _ = train.batch([7], frames=4, size=16, stride=3, training=True)
    first, _ = build_dataset(f"folder:{root}", "train", seed=0).batch([7], 4, 16, 3, training=True)
    assert torch.equal(again, first)  # draws depend on (seed, index) only: a resumed run sees the same clips


def test_epochs_visit_every_training_video_once(tmp_path):
    root = folder_layout(tmp_path / "f")
    train = build_dataset(f"folder:{root}", "train", seed=3)
    n = len(train.videos)
    for epoch in range(2):
        assert sorted(train._video(i) for i in range(epoch * n, (epoch + 1) * n)) == list(range(n))
    assert [train._video(i) for i in range(n)] != [train._video(i) for i in range(n, 2 * n)]


def test_evaluation_views_are_clips_times_crops(tmp_path):
    root = folder_layout(tmp_path / "f")
    val = build_dataset(f"folder:{root}", "val", seed=0, views=[2, 3])
    video, labels = val.batch([0, 1], frames=4, size=16, stride=2, training=False)
    assert video.shape == (2, 6, 3, 4, 16, 16)
    assert _frames_of(video[0, 0]) == [0, 2, 4, 6] and _frames_of(video[0, 3]) == [17, 19, 21, 23]


def test_training_flips_some_clips_unless_left_and_right_matter(tmp_path):
    path = encode(tmp_path / "ramp.webm", ramp=True)

    def mirrored(flip: bool) -> list[bool]:
        out = []
        for index in range(20):
            clip = load_clip(ClipRequest(path, index, 2, 16, 1, True, flip, (1, 1), 0, None, tmp_path))
            out.append(bool(clip[0, 0, :, 0].mean() > clip[0, 0, :, -1].mean()))
        return out

    assert 3 < sum(mirrored(True)) < 17 and not any(mirrored(False))
    # flipped by default only where the classes are known not to depend on left and right
    assert build_dataset(f"kinetics:{kinetics_layout(tmp_path / 'k')}", "train", 0).flip
    assert not build_dataset(f"ssv2:{ssv2_layout(tmp_path / 's')}", "train", 0).flip
    assert not build_dataset(f"folder:{folder_layout(tmp_path / 'f')}", "train", 0).flip  # a pan left, flipped: right
    assert build_dataset(f"folder:{folder_layout(tmp_path / 'g')}", "train", 0, flip=True).flip


def test_unreadable_videos_are_skipped_counted_and_replaced(tmp_path, decoder):
    root = folder_layout(tmp_path / "f")
    broken = root / "train" / "Bowling" / "bowling_0.mp4"
    broken.write_bytes(b"not a video" * 50)
    empty = root / "train" / "Diving" / "diving_1.mp4"
    empty.write_bytes(b"")
    name = "torchcodec" if decoder.__name__.endswith("torchcodec_decode") else "pyav"
    with pytest.warns(UserWarning, match="missing or empty"):
        train = build_dataset(f"folder:{root}", "train", seed=0, decoder=name)
    with pytest.warns(UserWarning, match=f"skipping unreadable video {broken}"):
        video, labels = train.batch(list(range(len(train.videos))), frames=4, size=16, stride=2, training=True)
    assert video.shape[0] == len(train.videos) == 5
    assert train.skipped_videos() == {str(empty): "empty file", str(broken): train.skipped[str(broken)]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per file
        train.batch(list(range(5, 10)), frames=4, size=16, stride=2, training=True)


def test_a_run_trains_on_a_folder_and_lists_skipped_videos(tmp_path):
    root = folder_layout(tmp_path / "f")
    (root / "val" / "Archery" / "archery_0.mp4").write_bytes(b"garbage" * 100)
    config = tiny(dataset=f"folder:{root}", budget="6steps", eval_every=0.5, frames=4, size=16)
    with pytest.warns(UserWarning, match="skipping unreadable video"):
        run = execute(config, tmp_path / "runs", progress_bar=False)
    summary = results.read_json(run / results.SUMMARY)
    assert summary["status"] == "completed" and summary["top1"] is not None
    assert list(summary["skipped_videos"]) == [str(root / "val" / "Archery" / "archery_0.mp4")]
    # the unreadable evaluation video is dropped, never replaced by another that would then be scored twice
    evals = pd.read_parquet(run / results.EVALS)
    assert (evals.loc[evals.setting == "default", "clips"] == 2).all(), evals[["setting", "clips"]]


def test_an_unreadable_evaluation_video_is_dropped_not_replaced(tmp_path):
    root = folder_layout(tmp_path / "f", per_split={"train": 1, "val": 2})
    broken = root / "val" / "Bowling" / "bowling_1.mp4"
    broken.write_bytes(b"garbage" * 100)
    val = build_dataset(f"folder:{root}", "val", seed=0)
    with pytest.warns(UserWarning, match=f"skipping unreadable video {broken}"):
        video, labels = val.batch(range(len(val)), frames=4, size=16, stride=2, training=False)
    assert len(val) == 6 and video.shape[0] == len(labels) == 5
    assert sorted(labels.tolist()) == [0, 0, 1, 2, 2]  # Bowling once: its broken video left out, nothing doubled
    assert list(val.skipped_videos()) == [str(broken)]


def test_decoding_workers_give_the_same_clips(tmp_path):
    root = folder_layout(tmp_path / "f")
    inline = build_dataset(f"folder:{root}", "train", seed=0)
    pooled = build_dataset(f"folder:{root}", "train", seed=0, workers=2)
    for start in (0, 2, 4, 9):  # consecutive batches hit the prefetch; the jump to 9 misses it
        a, la = inline.batch([start, start + 1], 4, 16, 2, training=True)
        b, lb = pooled.batch([start, start + 1], 4, 16, 2, training=True)
        assert torch.equal(a, b) and torch.equal(la, lb)



# ---- the cache ----------------------------------------------------------------------------------------------


def test_cache_and_decode_give_the_same_frames(tmp_path, monkeypatch):
    root = ucf101_layout(tmp_path / "u")
    done = build_cache("ucf101", root, size=16, progress=False)
    assert done["videos"] == 9 and done["short"] == sampling.short_side(16)
    assert find_cache(root, sampling.short_side(16)) is not None
    assert find_cache(root, sampling.short_side(16) + 1) is None
    cached = build_dataset(f"ucf101:{root}", "train", seed=0)
    decoded = build_dataset(f"ucf101:{root}", "train", seed=0, cache=False)
    for stride in (2, 0):
        b, _ = decoded.batch([0, 1, 2], 4, 16, stride, training=True)
        with monkeypatch.context() as m:  # the cached data set must not decode
            for name in decoders.NAMES:
                m.setattr(decoders.module(name), "read_frames", lambda *a, **k: pytest.fail("decoded despite cache"))
            a, _ = cached.batch([0, 1, 2], 4, 16, stride, training=True)
        assert torch.equal(a, b)
    smaller, _ = cached.batch([0], 4, 12, 2, training=True)  # another size: resized from the cache
    assert smaller.shape == (1, 3, 4, 12, 12)
    again = build_cache("ucf101", root, size=16, progress=False)  # resumable: nothing decoded twice
    assert again["cached"] == 0 and again["videos"] == 9
    other = ucf101_layout(tmp_path / "u2")
    pooled = build_cache("ucf101", other, size=16, progress=False, workers=2)  # the same arrays, in parallel
    for key, entry in find_cache(root, sampling.short_side(16)).videos.items():
        here = np.load(root / ".vtbench-cache" / f"short{done['short']}" / "arrays" / entry["file"])
        there = find_cache(other, sampling.short_side(16))
        assert np.array_equal(here, np.load(Path(pooled["folder"]) / "arrays" / there.videos[key]["file"]))


def test_cache_lists_unreadable_videos(tmp_path):
    root = folder_layout(tmp_path / "f")
    (root / "val" / "Diving" / "diving_0.mp4").write_bytes(b"x" * 10)
    with pytest.warns(UserWarning, match="skipping unreadable video"):
        done = build_cache("folder", root, size=16, progress=False)
    assert done["unreadable"] == 1
    index = json.loads((root / ".vtbench-cache" / f"short{done['short']}" / "index.json").read_text())
    assert list(index["skipped"]) == ["val/Diving/diving_0.mp4"]


def test_data_check_and_cache_from_the_cli(tmp_path, capsys):
    root = hmdb51_layout(tmp_path / "h")
    (root / "diving" / "diving_clip_0.avi").write_bytes(b"")
    assert main(["data", "check", "--dataset", f"hmdb51:{root}", "--no-progress", "--size", "16"]) == 1
    out = capsys.readouterr().out
    assert "hmdb51:" in out and "3 classes" in out and "decode speed:" in out and "empty file" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith(("train", "val"))}
    assert rows["train"][:2] == ["6", "3"] and rows["train"][4] == "1"  # 6 listed, 3 classes, 1 empty
    assert main(["data", "cache", "--dataset", f"hmdb51:{root}", "--size", "16", "--no-progress"]) == 0
    assert "8 videos cached" in capsys.readouterr().out
    assert main(["data", "check", "--dataset", "nowhere"]) == 2


def test_evaluation_averages_the_views_probabilities():
    from contextlib import nullcontext

    from vtbench.engine.evaluate import evaluate

    class ViewScores(torch.nn.Module):  # logits from the clip's first pixel: view v of clip b says what it was told
        def forward(self, video, select=None):
            return video[:, 0, 0, 0, :2]

    video = torch.zeros(2, 3, 3, 1, 1, 2)  # 2 clips x 3 views, logits over 2 classes
    video[0, :, 0, 0, 0] = torch.tensor([[4.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # one sure view beats two unsure
    video[1, :, 0, 0, 0] = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    scores = evaluate(ViewScores(), [(video, torch.tensor([0, 1]))], None, torch.device("cpu"), nullcontext)
    assert scores["top1"] == 100.0
    probs = torch.tensor([[4.0, 0.0], [0.0, 1.0], [0.0, 1.0]]).softmax(-1).mean(0)
    expected = (-probs[0].log() - torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]).softmax(-1).mean(0)[1].log()) / 2
    assert scores["loss"] == pytest.approx(expected.item(), rel=1e-5)


def test_decoder_auto_takes_the_measured_faster_and_falls_back_to_pyav_saying_so(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(decoders, "torchcodec_missing", lambda: "ImportError: No module named 'torchcodec'")
    with pytest.warns(UserWarning, match="decoder auto: decoding with PyAV; TorchCodec cannot load here"):
        assert decoders.resolve("auto") == "pyav"
    with pytest.raises(ConfigError, match="decoder torchcodec cannot load here .*pip install -e '.\\[torchcodec\\]'"):
        decoders.resolve("torchcodec")
    with pytest.raises(ConfigError, match="data_args.decoder must be one of auto, pyav, torchcodec, torchcodec-cuda; "
                       "got 'ffmpeg'"):
        decoders.resolve("ffmpeg")
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    if reason := decoders.torchcodec_missing():
        pytest.skip(f"TorchCodec cannot load here: {reason}")
    assert decoders.resolve("auto") == "pyav"  # nothing measured here yet
    path = decoders.record_measurement({"pyav": 10.0, "torchcodec": 20.0})  # as the benchmark records it
    assert decoders.resolve("auto") == "torchcodec"
    measured = json.loads(path.read_text())
    path.write_text(json.dumps({**measured, "torchcodec": "0.0.1"}))  # measured with other versions: not taken
    assert decoders.resolve("auto") == "pyav"


def test_both_decoders_build_the_same_cache_and_skip_the_same_videos(tmp_path):
    if reason := decoders.torchcodec_missing():
        pytest.skip(f"TorchCodec cannot load here: {reason}")
    built = {}
    for name in ("pyav", "torchcodec"):
        root = ucf101_layout(tmp_path / name)
        next(root.rglob("*.avi")).write_bytes(b"not a video" * 40)  # the same broken file in both
        with pytest.warns(UserWarning, match="skipping unreadable video"):
            built[name] = build_cache("ucf101", root, size=16, progress=False, decoder=name)
        built[name]["cache"] = find_cache(root, sampling.short_side(16))
    pyav, torchcodec = built["pyav"], built["torchcodec"]
    assert (pyav["videos"], pyav["unreadable"]) == (torchcodec["videos"], torchcodec["unreadable"]) == (8, 1)
    assert pyav["cache"].videos.keys() == torchcodec["cache"].videos.keys()
    for key, entry in pyav["cache"].videos.items():
        a = np.load(Path(pyav["folder"]) / "arrays" / entry["file"]).astype(int)
        b = np.load(Path(torchcodec["folder"]) / "arrays" / torchcodec["cache"].videos[key]["file"]).astype(int)
        assert a.shape == b.shape and np.abs(a - b).max() <= 1, key
