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

import os
import platform
import time
from pathlib import Path

from tqdm import tqdm

from vtbench.errors import ConfigError

from . import decoders
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
    import av  # noqa: F401 - loaded before the first clip is timed

    decoder = decoders.resolve(decoder)
    probe, read_frames = decoders.module(decoder).probe, decoders.module(decoder).read_frames
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
    from .cache import find_cache

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


def gpu_peak(gpu: str) -> float:
    """The GPU's dense bf16 peak FLOP/s from bench/engine/mfu.py's table, or one error listing the known names."""
    from vtbench.engine.mfu import GPU_PEAKS_TFLOPS, gpu_model
    from vtbench.engine.mfu import gpu_peak as peak_of

    peak = peak_of(gpu, "bf16")
    if peak is None:
        raise ConfigError(f"unknown GPU {gpu!r} (model {gpu_model(gpu)!r}); known: {', '.join(GPU_PEAKS_TFLOPS)} "
                          "(as NVML names them, e.g. 'NVIDIA H100 80GB HBM3')")
    return peak


def feeding(report: dict, model: str, gpu: str, mfu: float = 0.35, repeats: int = 2) -> dict:
    """The cores it takes to feed `model` training on `gpu` at `mfu`, from each speed the check measured."""
    from vtbench.engine.config import RunConfig
    from vtbench.engine.estimate import estimate
    from vtbench.engine.mfu import gpu_model

    if not 0 < mfu <= 1:
        raise ConfigError(f"--mfu is a fraction in (0, 1], got {mfu}")
    if repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, got {repeats}")
    peak = gpu_peak(gpu)
    config = RunConfig(model=model, frames=report["frames"], size=report["size"], stride=report["stride"],
                       eval_sweep=[])  # the training cost only: no evaluation settings to check against the shape
    train_flops = estimate(config, [], 0.5, max(1, report["classes"])).train_gflops * 1e9
    gpu_clips = peak * mfu / train_flops
    rows = []
    for source, speed in report["speeds"].items():
        per_core = speed.get("clips_per_core_s")
        cores = gpu_clips / per_core if per_core else None
        rows.append({"source": source, "clips_per_core_s": per_core, "cores": cores,
                     "cores_repeats": cores / repeats if cores is not None else None})
    return {"model": model, "gpu": gpu, "gpu_model": gpu_model(gpu), "peak": peak, "mfu": mfu, "repeats": repeats,
            "train_flops": train_flops, "gpu_clips_per_s": gpu_clips, "rows": rows}


def _speed_line(what: str, speed: dict, extra: str = "") -> str:
    if not speed["clips"]:
        return f"{what}: nothing could be read"
    return (f"{what}: {speed['clips_per_core_s']:.1f} clips/s per core{extra} ({speed['clips_per_s']:.1f} clips/s, "
            f"{speed['frames_per_s']:.0f} frames/s in one process; {speed['clips']} clips)")


def table(report: dict, feed: dict | None = None) -> str:
    from tabulate import tabulate

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
    if feed:
        lines += feeding_lines(feed)
    if report["unreadable"]:
        lines += ["unreadable:"] + [f"  {path}: {why}" for path, why in list(report["unreadable"].items())[:20]]
        if len(report["unreadable"]) > 20:
            lines.append(f"  ... and {len(report['unreadable']) - 20} more")
    return "\n".join(lines)


SOURCES = {"originals": "decoding the originals", "re-encoded copy": "decoding the re-encoded copy",
           "decoded cache": "reading the decoded cache"}


def feeding_lines(feed: dict) -> list[str]:
    from tabulate import tabulate

    n = feed["repeats"]
    rows = [[SOURCES.get(r["source"], r["source"]),
             f"{r['clips_per_core_s']:.1f}" if r["clips_per_core_s"] else "-",
             f"{r['cores']:.1f}" if r["cores"] is not None else "-",
             f"{r['cores_repeats']:.1f}" if r["cores_repeats"] is not None else "-"] for r in feed["rows"]]
    cpu = platform.processor() or platform.machine()
    return [
        f"feeding {feed['model']} on {feed['gpu']} ({feed['gpu_model']}: {feed['peak'] / 1e12:.1f} bf16 TFLOP/s "
        f"dense) at MFU {feed['mfu']:g}: {feed['train_flops'] / 1e9:.1f} training GFLOPs per clip, so "
        f"{feed['gpu_clips_per_s']:.1f} clips/s",
        tabulate(rows, headers=["clips from", "clips/s per core", "cores", f"cores, data_args.repeats {n}"],
                 disable_numparse=True, colalign=("left", "right", "right", "right")),
        f"cores are this machine's ({cpu}, {os.cpu_count()} logical cores here): decoding and resizing only, "
        "without cropping, collation and transfer, so a loader needs at least this many of them",
        f"data_args.repeats {n}: one decode serves {n} clips, so {n} times fewer cores; an upper bound of the gain "
        "(each clip still costs its crop, flip and transfer)",
    ]
