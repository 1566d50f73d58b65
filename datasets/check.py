"""`vtbench data check --dataset FORMAT:ROOT`: what a data set holds and whether it can be read: classes,
videos per split, missing, empty and unreadable files (each tried by decoding one clip), and decode speed.

Decode speed is given per core: clips decoded per second of this process's CPU time (libavcodec's threads
included), for the clip shape asked (`--frames`, `--size`, `--stride`), and in one process's wall time. With
`--compare DIR` the same videos of a re-encoded copy (`vtbench data reencode`) are timed too, and a decoded cache
(`vtbench data cache`), where one fits the clip size, is timed reading. With `--model PRESET --gpu NAME`, `feeding`
turns these into the cores it takes to keep that model training on that GPU:

    GPU clips/s = peak bf16 FLOP/s (bench/engine/mfu.py's table) x MFU / training FLOPs per clip (vtbench estimate)
    cores       = GPU clips/s / clips/s per core   (and / N with data_args.repeats N: one decode serves N clips)
"""

import time
from pathlib import Path

from tabulate import tabulate
from tqdm import tqdm

from vtbench.errors import ConfigError

from . import decode, decoders
from .cache import find_cache
from .decode import Unreadable
from .layouts import SPLITS, read_index
from .sampling import dense_indices, dense_starts, resize_short, short_side
from .video import missing_or_empty


def _clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all its threads)."""
    return time.perf_counter(), time.process_time()


def _clip_indices(count: int, frames: int, stride: int) -> list[int]:
    return dense_indices(count, frames, stride, dense_starts(count, frames, stride, None)[0])


def _timing(clips: int, wall: float, cpu: float, frames: int) -> dict:
    return {"clips": clips, "wall_s": wall, "cpu_s": cpu, "clips_per_s": clips / wall if wall > 0 else None,
            "frames_per_s": clips * frames / wall if wall > 0 else None,
            "clips_per_core_s": clips / cpu if cpu > 0 else None}


def check(layout: str, root: str | Path, split: int = 1, limit: int | None = None, frames: int = 16,
          stride: int = 2, size: int = 224, progress: bool = True, decoder: str = "auto",
          compare: str | Path | None = None) -> dict:
    decoder = decoders.resolve(decoder)
    probe, read_frames = decoders.module(decoder).probe, decoders.module(decoder).read_frames
    if decoder == "pyav":
        decode.load()  # before the first clip is timed
    root = Path(root).expanduser()
    index = read_index(layout, root, split)
    if compare is not None and not Path(compare).expanduser().is_dir():
        raise ConfigError(f"--compare {compare} is not a folder (a re-encoded copy: vtbench data reencode)")
    report = {"dataset": f"{layout}:{root}", "classes": len(index.classes), "splits": {}, "unreadable": {},
              "frames": frames, "stride": stride, "size": size, "short": short_side(size), "decoder": decoder,
              "speeds": {}}
    wall = cpu = 0.0
    read = []  # the videos decoded, for the copy and the cache
    for name in SPLITS:
        videos = index.videos[name]
        counts = {"listed": len(videos), "missing": 0, "empty": 0, "unreadable": 0, "checked": 0,
                  "classes": len({label for _, label in videos})}
        for path, _ in tqdm(videos[:limit] if limit else videos, desc=f"checking {name}", unit="video",
                            disable=not progress):
            reason = missing_or_empty(path)
            if reason in ("missing", "empty file"):
                counts["missing" if reason == "missing" else "empty"] += 1
                report["unreadable"][str(path)] = reason
                continue
            began = _clock()
            try:
                count, _ = probe(path)
                read_frames(path, _clip_indices(count, frames, stride), count, short_side(size))
            except Unreadable as err:
                counts["unreadable"] += 1
                report["unreadable"][str(path)] = str(err)
                continue
            ended = _clock()
            wall, cpu = wall + ended[0] - began[0], cpu + ended[1] - began[1]
            read.append(path)
            counts["checked"] += 1
        report["splits"][name] = counts
    report["speeds"]["originals"] = _timing(len(read), wall, cpu, frames)
    report["clips_per_s"] = report["speeds"]["originals"]["clips_per_s"]
    report["frames_per_s"] = report["speeds"]["originals"]["frames_per_s"]
    if compare is not None:
        copy = Path(compare).expanduser()
        report["compare"] = str(copy)
        report["speeds"]["re-encoded copy"] = _decode_speed([copy / p.relative_to(root) for p in read], probe,
                                                            read_frames, frames, stride, size, progress)
    if cache := find_cache(root, short_side(size)):
        report["cache_short"] = cache.short
        report["speeds"]["decoded cache"] = _cache_speed(cache, read, frames, stride, size)
    report["clip"] = f"{frames} frames at stride {stride}, short side {short_side(size)}, decoded with {decoder}"
    return report


def _decode_speed(paths: list[Path], probe, read_frames, frames: int, stride: int, size: int,
                  progress: bool) -> dict:
    wall = cpu = 0.0
    clips = unreadable = 0
    for path in tqdm(paths, desc="timing the copy", unit="video", disable=not progress):
        began = _clock()
        try:
            count, _ = probe(path)
            read_frames(path, _clip_indices(count, frames, stride), count, short_side(size))
        except Unreadable:
            unreadable += 1
            continue
        ended = _clock()
        wall, cpu = wall + ended[0] - began[0], cpu + ended[1] - began[1]
        clips += 1
    return {**_timing(clips, wall, cpu, frames), "unreadable": unreadable}


def _cache_speed(cache, paths: list[Path], frames: int, stride: int, size: int) -> dict:
    """Reading the clips from the cache as the data set does (resized when the cache's short side is larger)."""
    wall = cpu = 0.0
    clips = 0
    for path in paths:
        count = cache.frames(path)
        if count is None:
            continue
        began = _clock()
        resize_short(cache.read(path, sorted(set(_clip_indices(count, frames, stride)))), short_side(size))
        ended = _clock()
        wall, cpu = wall + ended[0] - began[0], cpu + ended[1] - began[1]
        clips += 1
    return _timing(clips, wall, cpu, frames)


def _speed_line(what: str, speed: dict, extra: str = "") -> str:
    if not speed["clips"]:
        return f"{what}: nothing could be read"
    return (f"{what}: {speed['clips_per_core_s']:.1f} clips/s per core{extra} ({speed['clips_per_s']:.1f} clips/s, "
            f"{speed['frames_per_s']:.0f} frames/s in one process; {speed['clips']} clips)")


def table(report: dict, feed_lines: list[str] | None = None) -> str:
    """The check's report as text; `feed_lines` (the cores it takes to feed a model, vtbench.engine.feeding) go
    after the speeds."""
    rows = [[name, c["listed"], c["classes"], c["checked"], c["missing"], c["empty"], c["unreadable"]]
            for name, c in report["splits"].items()]
    lines = [f"{report['dataset']}: {report['classes']} classes",
             tabulate(rows, headers=["split", "videos", "classes", "read", "missing", "empty", "unreadable"]),
             f"clip: {report['clip']}; clips/s per core = clips per second of this process's CPU time (decoder "
             "threads included), on this machine's cores"]
    speeds = report.get("speeds", {})
    original = speeds.get("originals")
    lines.append(_speed_line("decode speed", original) if original and original["clips"]
                 else "decode speed: nothing could be read")
    copy = speeds.get("re-encoded copy")
    if copy:
        ratio = ""
        if copy["clips"] and original and original["clips"]:
            ratio = f", {copy['clips_per_core_s'] / original['clips_per_core_s']:.2f} times the originals'"
        missing = f"; {copy['unreadable']} missing or unreadable there" if copy["unreadable"] else ""
        lines.append(_speed_line(f"decode speed of the re-encoded copy {report['compare']}", copy, ratio) + missing)
    cache = speeds.get("decoded cache")
    if cache:
        lines.append(_speed_line(f"read speed of the decoded cache (short side {report['cache_short']})", cache))
    if feed_lines:
        lines += feed_lines
    if report["unreadable"]:
        lines += ["unreadable:"] + [f"  {path}: {why}" for path, why in list(report["unreadable"].items())[:20]]
        if len(report["unreadable"]) > 20:
            lines.append(f"  ... and {len(report['unreadable']) - 20} more")
    return "\n".join(lines)
