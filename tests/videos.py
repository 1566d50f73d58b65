"""Short videos the tests encode themselves with PyAV, laid out as each supported data set expects. Frame k of
every video is a uniform grey of level 8k + 4, so the frame a clip took can be read back from its pixels."""

import json
import math
import struct
from pathlib import Path

import av
import numpy as np

CODECS = {".mp4": "libx264", ".webm": "libvpx-vp9", ".avi": "mpeg4"}


def level(k: int) -> int:
    return 8 * k + 4


def frame_of(pixels: np.ndarray) -> int:
    """The frame index a decoded uint8 frame shows."""
    return int(round((float(pixels.mean()) - 4) / 8))


def encode(path: Path, frames: int = 24, height: int = 32, width: int = 40, fps: int = 12, ramp: bool = False) -> Path:
    """ramp: a left-to-right grey ramp instead of the frame's level (to tell a mirrored clip)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(CODECS[path.suffix], rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if path.suffix == ".mp4":
            stream.options = {"crf": "10"}
        for k in range(frames):
            image = np.full((height, width, 3), level(k), dtype=np.uint8)
            if ramp:
                image[:] = np.linspace(30, 220, width, dtype=np.uint8)[None, :, None]
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


CLASSES = ["Archery", "Bowling", "Diving"]


def folder_layout(root: Path, per_split: dict[str, int] | None = None, suffix: str = ".mp4") -> Path:
    per_split = per_split or {"train": 2, "val": 1}
    for split, count in per_split.items():
        for c in CLASSES:
            for n in range(count):
                encode(root / split / c / f"{c.lower()}_{n}{suffix}")
    return root


def list_layout(root: Path) -> Path:
    for split, count in (("train", 2), ("val", 1)):
        lines = []
        for label, c in enumerate(CLASSES):
            for n in range(count):
                relative = f"clips/{split}_{c}_{n}.mp4"
                encode(root / relative)
                lines.append(f"{relative} {label}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def kinetics_layout(root: Path, val_name: str = "validate.csv") -> Path:
    (root / "annotations").mkdir(parents=True)
    for split, file in (("train", "train.csv"), ("val", val_name)):
        rows = ["label,youtube_id,time_start,time_end,split"]
        for c in CLASSES:
            for n in range(2 if split == "train" else 1):
                youtube_id = f"{c[:3]}{split}{n}xyzAB"[:11]
                rows.append(f"{c.lower()} things,{youtube_id},{10 * n},{10 * n + 10},{split}")
                encode(root / split / f"{youtube_id}_{10 * n:06d}_{10 * n + 10:06d}.mp4")
        (root / "annotations" / file).write_text("\n".join(rows) + "\n")
    return root


def ssv2_layout(root: Path) -> Path:
    templates = ["Pushing something from left to right", "Putting something on something",
                 "Pulling something from right to left"]
    (root / "20bn-something-something-v2").mkdir(parents=True)
    (root / "something-something-v2-labels.json").write_text(json.dumps({t: str(k) for k, t in enumerate(templates)}))
    video_id = 100
    for split, file in (("train", "train"), ("val", "validation")):
        entries = []
        for t in templates:
            for _ in range(2 if split == "train" else 1):
                bracketed = t.replace("something", "[something]")
                entries.append({"id": str(video_id), "label": t.lower(), "template": bracketed, "placeholders": []})
                encode(root / "20bn-something-something-v2" / f"{video_id}.webm")
                video_id += 1
        (root / f"something-something-v2-{file}.json").write_text(json.dumps(entries))
    return root


def ucf101_layout(root: Path) -> Path:
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{k + 1} {c}\n" for k, c in enumerate(CLASSES)))
    for split in (1, 2):
        train, test = [], []
        for c in CLASSES:
            for g in (1, 2, 3):
                name = f"{c}/v_{c}_g{g:02d}_c01.avi"
                if not (root / "UCF-101" / name).exists():
                    encode(root / "UCF-101" / name)
                (test if g == split else train).append(name)
        (lists / f"trainlist{split:02d}.txt").write_text("".join(f"{n} {CLASSES.index(n.split('/')[0]) + 1}\n"
                                                                  for n in train))
        (lists / f"testlist{split:02d}.txt").write_text("".join(f"{n}\n" for n in test))
    return root


def hmdb51_layout(root: Path) -> Path:
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    for c in CLASSES:
        c = c.lower()
        lines = []
        for n, mark in enumerate(("1", "1", "2", "0")):
            name = f"{c}_clip_{n}.avi"
            encode(root / c / name)
            lines.append(f"{name} {mark} ")
        (splits / f"{c}_test_split1.txt").write_text("\n".join(lines) + "\n")
    return root


def rotated_video(path: Path, rotation: int) -> np.ndarray:
    """An MP4 whose display matrix (a phone's portrait video) turns its pictures `rotation` degrees counter-clockwise;
    returns the stored picture. The matrix is written into the track header ('tkhd') after encoding, as FFmpeg's
    muxer writes it, so that any PyAV the project takes can make the file (set_display_rotation is recent)."""
    image = np.zeros((32, 40, 3), dtype=np.uint8)
    image[:, :10] = 200  # a bright band on the left of the stored picture
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt, stream.options = 40, 32, "yuv420p", {"crf": "10"}
        for _ in range(8):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    data = bytearray(path.read_bytes())
    at = data.index(b"tkhd") + 4  # the box's version and flags
    at += 4 + (20 if data[at] == 0 else 32) + 16  # times, track id, duration, reserved, layer, group, volume
    assert struct.unpack_from(">9i", data, at) == (1 << 16, 0, 0, 0, 1 << 16, 0, 0, 0, 1 << 30)  # identity
    cos, sin = round(math.cos(math.radians(rotation))), round(math.sin(math.radians(rotation)))
    struct.pack_into(">9i", data, at, cos << 16, -sin << 16, 0, sin << 16, cos << 16, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))
    return image
