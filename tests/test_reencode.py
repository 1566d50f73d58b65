"""`vtbench data reencode`: a copy of a data set in the same layout, every video re-encoded for training (short
side, H.264 with a keyframe every --gop frames, frame rate and count kept, upright), resumable, the originals
untouched, unreadable inputs reported and skipped, an output inside ROOT refused."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from videos import encode, folder_layout, frame_of, rotated_video, ucf101_layout

from vtbench.cli import main
from vtbench.datasets import reencode as reencoding
from vtbench.datasets.decode import probe, read_frames
from vtbench.datasets.layouts import read_index


def _stream_facts(path: Path) -> dict:
    """Size, codec, pixel format, frames decoded, keyframe packets and rate of a video's first stream."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        facts = {"codec": stream.codec_context.name, "audio": len(container.streams.audio),
                 "rate": float(stream.average_rate)}
        keyframes = [packet.is_keyframe for packet in container.demux(stream) if packet.size]
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    return {**facts, "size": (frames[0].width, frames[0].height), "format": frames[0].format.name,
            "frames": len(frames), "keyframes": [k for k, key in enumerate(keyframes) if key],
            "rotation": getattr(frames[0], "rotation", 0) or 0}


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_folder_layout_is_copied_at_the_short_side_with_short_gops_and_resumes(tmp_path, capsys):
    root = folder_layout(tmp_path / "f", {"train": 1, "val": 1})  # 6 videos of 24 frames, 40 x 32, 12 fps
    encode(root / "train" / "Archery" / "odd.mp4", frames=24, height=30, width=42)  # scales to odd widths
    (root / "val" / "Diving" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 50)
    before = _digests(root)
    out = tmp_path / "copy"
    argv = ["data", "reencode", "--dataset", f"folder:{root}", "--out", str(out), "--short-side", "16", "--gop", "5",
            "--no-progress"]
    assert main(argv) == 1  # an unreadable input: reported, skipped, the rest written
    text = capsys.readouterr().out
    assert len([line for line in text.splitlines() if line.startswith("unreadable ")]) == 1
    assert f"unreadable {root / 'val' / 'Diving' / 'broken.mp4'}: " in text
    assert "7 videos written, 0 skipped as done earlier, 1 unreadable" in text
    assert "1 unreadable videos left out of the copy" in text and " MiB before, " in text
    assert _digests(root) == before  # the originals are never touched
    copied = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert copied == sorted(k for k in before if not k.endswith("broken.mp4"))  # same places, no part files left
    for name in copied:
        facts = _stream_facts(out / name)
        expected = (22, 16) if name.endswith("odd.mp4") else (20, 16)  # 42 x 30 -> 22.4 x 16, made even
        assert facts["size"] == expected and facts["codec"] == "h264" and facts["format"] == "yuv420p"
        assert facts["frames"] == 24 and facts["rate"] == 12.0 and facts["audio"] == 0
        assert facts["keyframes"] == [0, 5, 10, 15, 20]  # one every --gop frames, no others
    video = out / "train" / "Bowling" / "bowling_0.mp4"
    count, fps = probe(video)
    assert (count, fps) == (24, 12.0)
    assert [frame_of(f) for f in read_frames(video, [0, 7, 13, 23], count)] == [0, 7, 13, 23]  # the same frames
    index = read_index("folder", out)
    assert len(index.classes) == 3 and sum(len(v) for v in index.videos.values()) == 7

    assert main(argv) == 1  # a second run: everything done is skipped, the broken one reported again
    text = capsys.readouterr().out
    assert "0 videos written, 7 skipped as done earlier, 1 unreadable" in text


def test_never_upscaled(tmp_path, capsys):
    root = folder_layout(tmp_path / "f", {"train": 1, "val": 1})
    out = tmp_path / "copy"
    assert main(["data", "reencode", "--dataset", f"folder:{root}", "--out", str(out), "--no-progress"]) == 0
    assert "6 videos written" in capsys.readouterr().out
    assert _stream_facts(out / "val" / "Archery" / "archery_0.mp4")["size"] == (40, 32)  # short side 32 < 256


def test_ucf101_layout_in_parallel_with_its_split_lists(tmp_path, capsys):
    root = ucf101_layout(tmp_path / "u")  # .avi names, split lists 1 and 2
    out = tmp_path / "copy"
    assert main(["data", "reencode", "--dataset", f"ucf101:{root}", "--out", str(out), "--short-side", "16",
                 "--gop", "8", "--workers", "2", "--no-progress"]) == 0
    assert "9 videos written, 0 skipped as done earlier, 0 unreadable; 5 annotation files copied" in \
        capsys.readouterr().out
    for listing in (root / "ucfTrainTestlist").iterdir():
        assert (out / "ucfTrainTestlist" / listing.name).read_bytes() == listing.read_bytes()
    for split in (1, 2):
        original, copy = read_index("ucf101", root, split), read_index("ucf101", out, split)
        assert copy.classes == original.classes
        assert {name: [(p.relative_to(out), c) for p, c in v] for name, v in copy.videos.items()} == \
            {name: [(p.relative_to(root), c) for p, c in v] for name, v in original.videos.items()}
    video = out / "UCF-101" / "Diving" / "v_Diving_g02_c01.avi"
    facts = _stream_facts(video)  # H.264 in an MP4 container under the listed .avi name
    assert facts["size"] == (20, 16) and facts["frames"] == 24 and facts["keyframes"] == [0, 8, 16]
    assert [frame_of(f) for f in read_frames(video, [0, 5, 23], 24)] == [0, 5, 23]


def test_rotation_is_applied_to_the_pixels(tmp_path):
    root = tmp_path / "f"
    for split in ("train", "val"):
        (root / split / "a").mkdir(parents=True)
        rotated_video(root / split / "a" / "v.mp4", 90)
    outcome = reencoding.reencode("folder", root, tmp_path / "copy", short=16, gop=4, progress=False)
    assert outcome.written == 2 and not outcome.unreadable
    copy = tmp_path / "copy" / "train" / "a" / "v.mp4"
    facts = _stream_facts(copy)
    assert facts["size"] == (16, 20) and facts["rotation"] == 0  # stored upright, no display matrix left
    upright = read_frames(root / "train" / "a" / "v.mp4", [0, 7], 8, 16).astype(int)  # the decoder turns it
    stored = read_frames(copy, [0, 7], 8, 16).astype(int)
    assert stored.shape == upright.shape and np.abs(stored - upright).mean() < 6
    assert stored[0, -3:].mean() > 150 and stored[0, :3].mean() < 50  # the band, once on the left, at the bottom


def test_refusals_exit_2_with_one_line(tmp_path, capsys, monkeypatch):
    root = folder_layout(tmp_path / "f", {"train": 1, "val": 1})
    before = _digests(root)
    for out in (root, root / "copy", root / "train" / "x"):
        assert main(["data", "reencode", "--dataset", f"folder:{root}", "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "must go elsewhere" in err, err
    assert _digests(root) == before and not (root / "copy").exists()
    monkeypatch.setattr(reencoding, "rotation_unsupported", lambda: "PyAV 1.0 cannot read a video's rotation")
    assert main(["data", "reencode", "--dataset", f"folder:{root}", "--out", str(tmp_path / "c")]) == 2
    assert "cannot read a video's rotation" in capsys.readouterr().err and not (tmp_path / "c").exists()
    monkeypatch.undo()
    assert main(["data", "reencode", "--dataset", f"folder:{root}", "--out", str(tmp_path / "c"), "--gop", "0"]) == 2
    assert "--gop must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize(("width", "height", "short", "expected"),
                         [(340, 256, 256, (340, 256)), (1920, 1080, 256, (456, 256)), (1080, 1920, 256, (256, 456)),
                          (321, 241, 256, (320, 240)), (100, 60, 256, (100, 60))])
def test_output_size_keeps_the_short_side_even_and_never_upscales(width, height, short, expected):
    assert reencoding.output_size(width, height, short) == expected


KILLED_MID_WRITE = """
import sys, time
from pathlib import Path
from vtbench.datasets import reencode
root, out, flag = sys.argv[1:4]
frames = {"n": 0}
def slowly(frame, any_type=reencode._any_type):  # called once per frame written
    any_type(frame)
    frames["n"] += 1
    if frames["n"] == 24 + 100:  # the second video (150 frames), 100 in: the encoder has written part of it
        Path(flag).touch()
        time.sleep(120)
reencode._any_type = slowly
reencode.reencode("folder", root, out, short=16, gop=5, progress=False)
"""


def _long_video(path: Path, frames: int) -> None:
    """A video long enough for the encoder to write part of its copy before the end (x264 looks 40 frames ahead)."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 40, 32, "yuv420p"
        for _ in range(frames):
            image = rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def test_a_copy_killed_mid_write_is_finished_by_running_it_again(tmp_path):
    root = folder_layout(tmp_path / "f", {"train": 1, "val": 1})  # 6 videos of 24 frames
    _long_video(root / "train" / "Archery" / "long.mp4", frames=150)  # the second in order
    out, flag = tmp_path / "copy", tmp_path / "writing"
    script = tmp_path / "killed.py"
    script.write_text(KILLED_MID_WRITE)
    child = subprocess.Popen([sys.executable, str(script), str(root), str(out), str(flag)])
    try:
        waited = time.monotonic()
        while not flag.exists() and child.poll() is None and time.monotonic() - waited < 120:
            time.sleep(0.05)
        assert flag.exists(), "the child never reached the second video"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    parts = list(out.rglob(f"*{reencoding.PART}"))
    assert [p.name for p in parts] == [f"long.mp4{reencoding.PART}"] and parts[0].stat().st_size > 0
    assert [p.name for p in out.rglob("*.mp4")] == ["archery_0.mp4"]  # one finished, one half written
    argv = ["data", "reencode", "--dataset", f"folder:{root}", "--out", str(out), "--short-side", "16", "--gop", "5",
            "--no-progress"]
    assert main(argv) == 0
    assert not list(out.rglob(f"*{reencoding.PART}"))
    original, copy = read_index("folder", root), read_index("folder", out)
    assert copy.classes == original.classes
    assert {k: sorted((p.relative_to(out), label) for p, label in v) for k, v in copy.videos.items()} == \
        {k: sorted((p.relative_to(root), label) for p, label in v) for k, v in original.videos.items()}  # as before
    for video in out.rglob("*.mp4"):  # the half-written one was written again, whole
        assert _stream_facts(video)["frames"] == (150 if video.name == "long.mp4" else 24)
