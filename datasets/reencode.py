"""`vtbench data reencode --dataset FORMAT:ROOT --out DIR`: a copy of a data set re-encoded for training.

The copy has the same layout under DIR (the annotation and list files copied, every video at its own relative
path), each video re-encoded: scaled so that its short side is `short` (never upscaled; even dimensions, as
yuv420p needs), H.264 (libx264, yuv420p) with a keyframe every `gop` frames and no scene-cut keyframes, audio
dropped, frame rate and frame count kept (a variable frame rate becomes constant at the average rate), and a
display matrix (a phone's portrait video) applied to the pixels, so that the copy is stored upright.

Why: decoding a clip means decoding from the keyframe at or before its first frame. Web videos often have a
keyframe every few seconds (250 frames is x264's default), so a 16-frame clip from the middle of a video can cost
a hundred frames or more of decoding; with a keyframe every 16 frames it costs at most 15 frames more than the
clip. Videos much larger than the training size spend most of their decoding on pixels that are thrown away.

Every output is an MP4 container (Matroska for .mkv), whatever its name: the names stay because the annotation
files list them, and FFmpeg-based readers (PyAV, TorchCodec) recognise the container by its content. (H.264 in
AVI loses the presentation times PyAV indexes frames by, and WebM does not take H.264.)

Resumable: a video is written to `<name>.vtbench-part` and renamed when complete; finished videos are skipped on
a rerun. The originals are never written: DIR may not be ROOT or lie inside it. An unreadable input (missing,
empty, truncated, not a video) is reported and left out of the copy; the rest goes on.
"""

import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.stream import VideoStream
from tqdm import tqdm

from vtbench.errors import ConfigError

from .decode import Unreadable
from .layouts import SPLITS, read_index

PART = ".vtbench-part"
# the annotation and list files of each layout, globs under ROOT; copied as they are
ANNOTATIONS = {
    "folder": (),
    "list": ("train.csv", "val.csv", "test.csv"),
    "kinetics": ("annotations/*",),
    "ssv2": ("something-something-v2-*.json",),
    "ucf101": ("ucfTrainTestlist/*",),
    "hmdb51": ("**/*_test_split[0-9].txt",),
}
SPLIT_NUMBERS = {"ucf101": (1, 2, 3), "hmdb51": (1, 2, 3)}  # every split's videos are copied


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path
    short: int
    gop: int
    crf: int
    threads: int  # libavcodec threads for decoding and encoding (0: as many as it likes)


@dataclass
class Outcome:
    written: int = 0
    done: int = 0  # finished by an earlier run
    unreadable: dict[str, str] = field(default_factory=dict)  # input path -> why
    bytes_before: int = 0  # the inputs of the videos in the copy (written now or before)
    bytes_after: int = 0  # their outputs
    annotations: int = 0
    seconds: float = 0.0


def rotation_unsupported() -> str | None:
    """Why this PyAV cannot read a video's display matrix (so re-encoding would store portrait videos on their
    side), or None."""
    if hasattr(av.VideoFrame, "rotation") or hasattr(VideoStream, "side_data"):
        return None
    return (f"PyAV {av.__version__} cannot read a video's rotation (its display matrix): the copy would store "
            "portrait videos on their side; pip install 'av>=14'")


def _rotation(frame, stream) -> int:
    """Quarter turns counter-clockwise that the display matrix asks for (as datasets/decode.py turns them)."""
    angle = getattr(frame, "rotation", None)
    if angle is None:
        side_data = getattr(stream, "side_data", None)
        angle = side_data.get("DISPLAYMATRIX") if isinstance(side_data, dict) else 0
    return round((angle or 0) / 90) % 4


def output_size(width: int, height: int, short: int) -> tuple[int, int]:
    """(width, height) with the short side at `short`, never larger than the input, both even."""
    scale = min(1.0, short / min(width, height))

    def even(x: float) -> int:
        return max(2, 2 * int(round(x * scale / 2)))

    return even(width), even(height)


def container_format(path: Path) -> str:
    return "matroska" if path.suffix.lower() == ".mkv" else "mp4"


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def plan(layout: str, root: str | Path, out: str | Path) -> tuple[Path, Path, list[Path], list[Path]]:
    """(root, out, the videos of every split, the annotation files), refusing an `out` that is ROOT or inside it."""
    root, out = Path(root).expanduser(), Path(out).expanduser()
    index = read_index(layout, root, 1)  # refuses a missing ROOT or a broken layout
    if _inside(out.resolve(), root.resolve()):
        where = "the data set root" if out.resolve() == root.resolve() else f"inside the data set root {root}"
        raise ConfigError(f"--out {out} is {where}: the copy must go elsewhere (the originals are never written)")
    videos = {path for name in SPLITS for path, _ in index.videos[name]}
    for number in SPLIT_NUMBERS.get(layout, ())[1:]:
        try:
            other = read_index(layout, root, number)
        except ConfigError:
            continue  # this split's files are not there
        videos |= {path for name in SPLITS for path, _ in other.videos[name]}
    annotations = sorted({p for pattern in ANNOTATIONS[layout] for p in root.glob(pattern)
                          if p.is_file() and ".vtbench-cache" not in p.relative_to(root).parts})
    return root, out, sorted(videos), annotations


def reencode(layout: str, root: str | Path, out: str | Path, short: int = 256, gop: int = 16, workers: int = 0,
             crf: int = 23, progress: bool = True, say=print) -> Outcome:
    """Write the re-encoded copy (in `workers` processes, 0: in this one); `say` gets one line per unreadable
    video as it is found."""
    if short < 2:
        raise ConfigError(f"--short-side must be at least 2, got {short}")
    if gop < 1:
        raise ConfigError(f"--gop must be at least 1, got {gop}")
    if workers < 0:
        raise ConfigError(f"--workers must be 0 or more, got {workers}")
    if not 0 <= crf <= 51:
        raise ConfigError(f"--crf must be in [0, 51], got {crf}")
    if reason := rotation_unsupported():
        raise ConfigError(reason)
    began = time.perf_counter()
    root, out, videos, annotations = plan(layout, root, out)
    outcome = Outcome()
    for file in annotations:
        target = out / file.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, target)
        outcome.annotations += 1
    threads = 0 if workers <= 1 else max(1, (os.cpu_count() or 1) // workers)
    originals = {v.resolve() for v in videos}
    jobs = []
    for video in videos:
        target = out / video.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)  # a class folder stays even if all its videos are unreadable
        if target.resolve() in originals:  # a link in DIR back into ROOT: never write over an original
            outcome.unreadable[str(video)] = f"its output {target} is an original video; not written"
            say(f"skipped {video}: {outcome.unreadable[str(video)]}")
        elif target.exists():
            outcome.done += 1
            outcome.bytes_before += video.stat().st_size if video.exists() else 0
            outcome.bytes_after += target.stat().st_size
        else:
            jobs.append(Job(video, target, short, gop, crf, threads))
    bar = tqdm(total=len(videos), initial=len(videos) - len(jobs), desc=f"re-encoding {layout}:{root}", unit="video",
               disable=not progress)
    pool = None
    if workers:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        done = pool.map(encode_one, jobs) if pool else map(encode_one, jobs)
        for job, (before, after, reason) in zip(jobs, done, strict=True):
            bar.update(1)
            if reason is not None:
                outcome.unreadable[str(job.source)] = reason
                (tqdm.write if progress else say)(f"unreadable {job.source}: {reason}")
                continue
            outcome.written += 1
            outcome.bytes_before += before
            outcome.bytes_after += after
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
        bar.close()
    outcome.seconds = time.perf_counter() - began
    return outcome


def encode_one(job: Job) -> tuple[int, int, str | None]:
    """Re-encode one video: (input bytes, output bytes, None), or (0, 0, why it is unreadable)."""
    part = job.target.with_name(job.target.name + PART)
    try:
        before = job.source.stat().st_size
        if before == 0:
            raise Unreadable("empty file")
        _encode(job, part)
    except FileNotFoundError:
        part.unlink(missing_ok=True)
        return 0, 0, "missing"
    except (Unreadable, av.FFmpegError, OSError, ValueError, RuntimeError) as err:
        part.unlink(missing_ok=True)
        return 0, 0, str(err) if isinstance(err, Unreadable) else f"{type(err).__name__}: {err}"
    after = part.stat().st_size
    os.replace(part, job.target)
    return before, after, None


def _encode(job: Job, part: Path) -> None:
    with av.open(str(job.source)) as source:
        if not source.streams.video:
            raise Unreadable("no video stream")
        stream = source.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = job.threads
        rate = Fraction(stream.average_rate or stream.guessed_rate or 25)
        with av.open(str(part), "w", format=container_format(job.target)) as target:
            encoder, turns, count = None, 0, 0
            for frame in source.decode(stream):
                if encoder is None:
                    turns = _rotation(frame, stream)
                    upright = (frame.height, frame.width) if turns % 2 else (frame.width, frame.height)
                    width, height = output_size(*upright, job.short)
                    stored = (height, width) if turns % 2 else (width, height)  # scaled before it is turned
                    encoder = target.add_stream("libx264", rate=rate)
                    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
                    encoder.codec_context.gop_size = job.gop
                    encoder.codec_context.thread_count = job.threads
                    # a keyframe every gop frames exactly: no scene-cut keyframes, none closer than gop
                    encoder.options = {"crf": str(job.crf),
                                       "x264-params": f"keyint={job.gop}:min-keyint={job.gop}:scenecut=0"}
                if turns:
                    rgb = frame.reformat(*stored, format="rgb24", interpolation="AREA").to_ndarray()
                    picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.rot90(rgb, turns)), format="rgb24")
                    picture = picture.reformat(format="yuv420p")
                else:
                    picture = frame.reformat(*stored, format="yuv420p", interpolation="AREA")
                picture.pts, picture.time_base = count, 1 / rate
                _any_type(picture)  # the source's frame types would force keyframes where it had them
                target.mux(encoder.encode(picture))
                count += 1
            if encoder is None:
                raise Unreadable("no frames")
            target.mux(encoder.encode())


def _any_type(frame) -> None:
    try:
        frame.pict_type = 0  # PyAV >= 13: PictureType.NONE
    except (TypeError, ValueError):
        frame.pict_type = "NONE"


def summary(outcome: Outcome, dataset: str, out: str | Path) -> str:
    def size(n: int) -> str:
        return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.2f} MiB"

    ratio = f" ({outcome.bytes_after / outcome.bytes_before:.2f} times)" if outcome.bytes_before else ""
    lines = [f"{dataset} re-encoded to {out}: {outcome.written} videos written, {outcome.done} skipped as done "
             f"earlier, {len(outcome.unreadable)} unreadable; {outcome.annotations} annotation files copied",
             f"videos in the copy: {size(outcome.bytes_before)} before, {size(outcome.bytes_after)} after{ratio}; "
             f"{outcome.seconds:.1f} s"]
    if outcome.unreadable:
        lines.append(f"{len(outcome.unreadable)} unreadable videos left out of the copy (listed above); the loader "
                     "skips and counts missing videos")
    return "\n".join(lines)
