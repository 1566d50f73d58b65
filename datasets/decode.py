"""Decoding the frames a clip needs with PyAV: threaded decoding, and a seek to the first needed frame when the
clip is short against the video rather than decoding the whole file. Frames come out as uint8 RGB arrays
(frames, height, width, 3), resized on the way out by libswscale so that the short side is `short`, and turned
upright where the container's display matrix says so (as TorchCodec turns them)."""

import functools
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np

SEEK_WHEN = 0.5  # seek when the clip spans less than this fraction of the video
THREADS = "AUTO"


_RESIZE = None  # one libswscale context per process, reused across frames and files


def _reformatter():
    global _RESIZE
    if _RESIZE is None:
        from av.video.reformatter import VideoReformatter  # PyAV where a video is decoded (vtbench.datasets)

        _RESIZE = VideoReformatter()
    return _RESIZE


def load() -> None:
    """Import PyAV and make the resizer now (a decoding speed measured after this leaves the import out)."""
    _reformatter()


class Unreadable(Exception):
    """A file that is missing, empty, truncated or not a video; the loader skips it."""


def probe(path: Path) -> tuple[int, float]:
    """(frame count, frames per second) from the container, without decoding (counted by decoding when the
    container does not say)."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = _stream(container, path)
            fps = float(stream.average_rate or stream.guessed_rate or 25)
            frames = stream.frames
            if not frames and stream.duration and stream.time_base:
                frames = int(round(float(stream.duration * stream.time_base) * fps))
            if not frames and container.duration:
                frames = int(round(container.duration / 1e6 * fps))
            if not frames:
                frames = sum(1 for _ in container.decode(stream))
    except (av.FFmpegError, OSError, ValueError) as err:
        raise Unreadable(f"{type(err).__name__}: {err}") from None
    if frames < 1:
        raise Unreadable("no frames")
    return frames, fps


def _stream(container, path: Path):
    if not container.streams.video:
        raise Unreadable(f"{path} has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = THREADS  # frame and slice threads inside libavcodec
    return stream


def output_size(width: int, height: int, short: int | None) -> tuple[int, int]:
    if not short:
        return width, height
    if width <= height:
        return short, max(1, round(height * short / width))
    return max(1, round(width * short / height)), short


def read_frames(path: Path, indices: list[int], count: int, short: int | None = None) -> np.ndarray:
    """Frames `indices` (in [0, count), any order, repeats allowed) of the video, uint8 (len, H, W, 3).

    Frame k is the one whose presentation time is nearest k / fps after the stream's start. Frames past the
    last decodable one (a count estimated from the container's duration can be a little high) repeat it.
    """
    import av

    wanted = set(indices)
    first, last = min(wanted), max(wanted)
    got = None
    try:
        if first > 0 and (last - first + 1) < SEEK_WHEN * count:
            try:
                got, landed = _decode(path, wanted, short, seek=True)
                if landed is None or landed > first:  # the demuxer seeked past the clip: decode from the start
                    got = None
            except av.FFmpegError:  # some containers cannot seek; decoding from the start always works
                got = None
        if got is None:
            got, _ = _decode(path, wanted, short, seek=False)
    except (av.FFmpegError, OSError, ValueError) as err:
        raise Unreadable(f"{type(err).__name__}: {err}") from None
    if not got:
        raise Unreadable(f"no frame decoded at or after frame {first}")
    out = []
    keys = sorted(got)
    for k in indices:  # nearest decoded frame at or before k (or the first one), for gaps and a short tail
        if k in got:
            out.append(got[k])
            continue
        below = [j for j in keys if j <= k]
        out.append(got[below[-1] if below else keys[0]])
    return np.stack(out)


def _display_rotation(frame, stream) -> float | None:
    """The counter-clockwise angle of the video's display matrix: with the frame in PyAV >= 14, with the stream
    before it; None where this PyAV gives neither."""
    if hasattr(frame, "rotation"):
        return frame.rotation or 0
    side_data = getattr(stream, "side_data", None)
    if isinstance(side_data, dict):
        return side_data.get("DISPLAYMATRIX") or 0
    return None


@functools.cache
def _cannot_turn_upright(version: str) -> None:
    warnings.warn(f"PyAV {version} gives no display matrix: videos are decoded as stored (a phone's portrait video "
                  "on its side), where TorchCodec and players turn them upright", stacklevel=4)


def _decode(path: Path, wanted: set[int], short: int | None, seek: bool) -> tuple[dict[int, np.ndarray], int | None]:
    """The wanted frames found by decoding (after a seek to the first of them, if asked), and the index of the
    first frame the decoder produced."""
    import av

    first, last = min(wanted), max(wanted)
    got: dict[int, np.ndarray] = {}
    landed = None
    with av.open(str(path)) as container:
        stream = _stream(container, path)
        fps = Fraction(stream.average_rate or stream.guessed_rate or 25)
        base = stream.time_base
        start = stream.start_time or 0
        if seek:
            container.seek(int(start + first / fps / base), stream=stream, backward=True, any_frame=False)
        size, turns = None, 0
        resize = _reformatter()
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            k = int(round((frame.pts - start) * base * fps))
            landed = k if landed is None else landed
            if k > last:
                break
            if k < first:
                continue
            if size is None:
                # a display matrix (a phone's portrait video) turns the frame upright, as TorchCodec and players do
                angle = _display_rotation(frame, stream)
                if angle is None:
                    _cannot_turn_upright(av.__version__)
                turns = round((angle or 0) / 90) % 4
                width, height = (frame.height, frame.width) if turns % 2 else (frame.width, frame.height)
                size = output_size(width, height, short)
                if turns % 2:
                    size = size[::-1]  # scaled before it is turned
            if k in wanted or not got:
                # to RGB first, then scaled: libswscale's combined scale-and-convert darkens by about two grey
                # levels (a uniform level 44 came out 42); converted first, it stays 44, as TorchCodec gives
                rgb = frame.reformat(format="rgb24")
                array = resize.reformat(rgb, width=size[0], height=size[1], format="rgb24").to_ndarray()
                got[k] = np.ascontiguousarray(np.rot90(array, turns)) if turns else array
    return got, landed
