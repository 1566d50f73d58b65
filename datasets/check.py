"""`vtbench data check --dataset FORMAT:ROOT`: what a data set holds and whether it can be read: classes,
videos per split, missing, empty and unreadable files (each tried by decoding one clip), and decode speed."""

import time
from pathlib import Path

from tqdm import tqdm

from . import decoders
from .decode import Unreadable
from .layouts import SPLITS, read_index
from .sampling import dense_indices, dense_starts, short_side
from .video import missing_or_empty


def check(layout: str, root: str | Path, split: int = 1, limit: int | None = None, frames: int = 16,
          stride: int = 2, size: int = 224, progress: bool = True, decoder: str = "auto") -> dict:
    decoder = decoders.resolve(decoder)
    probe, read_frames = decoders.module(decoder).probe, decoders.module(decoder).read_frames
    index = read_index(layout, root, split)
    report = {"dataset": f"{layout}:{root}", "classes": len(index.classes), "splits": {}, "unreadable": {}}
    decoded_s = decoded_frames = clips = 0
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
            began = time.perf_counter()
            try:
                count, _ = probe(path)
                start = dense_starts(count, frames, stride, None)[0]
                read_frames(path, dense_indices(count, frames, stride, start), count, short_side(size))
            except Unreadable as err:
                counts["unreadable"] += 1
                report["unreadable"][str(path)] = str(err)
                continue
            decoded_s += time.perf_counter() - began
            decoded_frames += frames
            clips += 1
            counts["checked"] += 1
        report["splits"][name] = counts
    report["clips_per_s"] = clips / decoded_s if decoded_s else None
    report["frames_per_s"] = decoded_frames / decoded_s if decoded_s else None
    report["clip"] = f"{frames} frames at stride {stride}, short side {short_side(size)}, decoded with {decoder}"
    return report


def table(report: dict) -> str:
    from tabulate import tabulate

    rows = [[name, c["listed"], c["classes"], c["checked"], c["missing"], c["empty"], c["unreadable"]]
            for name, c in report["splits"].items()]
    lines = [f"{report['dataset']}: {report['classes']} classes",
             tabulate(rows, headers=["split", "videos", "classes", "read", "missing", "empty", "unreadable"]),
             f"decode speed: {report['clips_per_s'] or 0:.1f} clips/s ({report['frames_per_s'] or 0:.0f} frames/s; "
             f"{report['clip']}, one process)" if report["clips_per_s"] else "decode speed: nothing could be read"]
    if report["unreadable"]:
        lines += ["unreadable:"] + [f"  {path}: {why}" for path, why in list(report["unreadable"].items())[:20]]
        if len(report["unreadable"]) > 20:
            lines.append(f"  ... and {len(report['unreadable']) - 20} more")
    return "\n".join(lines)
