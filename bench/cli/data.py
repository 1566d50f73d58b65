"""`vtbench data cache|check|reencode`: real video data sets."""

import argparse

from vtbench.datasets.cache import build_cache
from vtbench.datasets.check import check, table
from vtbench.datasets.reencode import reencode, summary
from vtbench.engine.feeding import feeding, feeding_lines, gpu_peak
from vtbench.errors import VtbenchError
from vtbench.models import PRESETS


def cmd_data(args: argparse.Namespace) -> int:
    if ":" not in args.dataset:
        raise VtbenchError(f"--dataset is FORMAT:ROOT (e.g. folder:/data/ucf), got {args.dataset!r}")
    layout, root = args.dataset.split(":", 1)
    if args.action == "cache":
        if args.size < 1:
            raise VtbenchError(f"--size must be positive, got {args.size}")
        if args.workers < 0:
            raise VtbenchError(f"--workers must be 0 or more, got {args.workers}")
        done = build_cache(layout, root, args.size, args.split, progress=not args.no_progress, workers=args.workers,
                           decoder=args.decoder)
        print(f"{done['videos']} videos cached ({done['cached']} new, {done['unreadable']} unreadable), "
              f"{done['bytes'] / 2**30:.2f} GiB at short side {done['short']}: {done['folder']}")
        return 0
    if args.action == "reencode":
        outcome = reencode(layout, root, args.out, args.short_side, args.gop, args.workers, args.crf,
                           progress=not args.no_progress)
        print(summary(outcome, args.dataset, args.out))
        return 0 if not outcome.unreadable else 1
    for flag in ("size", "frames", "stride"):
        if getattr(args, flag) < 1:
            raise VtbenchError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if (args.model is None) != (args.gpu is None):
        raise VtbenchError("--model and --gpu go together: the cores to feed that model's training on that GPU")
    if args.gpu is not None:
        gpu_peak(args.gpu)  # an unknown GPU or preset is refused before anything is decoded
        if args.model not in PRESETS:
            raise VtbenchError(f"unknown model preset {args.model!r}; known: {', '.join(PRESETS)}")
        if not 0 < args.mfu <= 1:
            raise VtbenchError(f"--mfu is a fraction in (0, 1], got {args.mfu}")
        if args.repeats < 1:
            raise VtbenchError(f"--repeats must be at least 1, got {args.repeats}")
    report = check(layout, root, args.split, args.limit, frames=args.frames, stride=args.stride, size=args.size,
                   progress=not args.no_progress, decoder=args.decoder, compare=args.compare)
    feed = feeding(report, args.model, args.gpu, args.mfu, args.repeats) if args.gpu is not None else None
    print(table(report, feeding_lines(feed) if feed else None))
    return 0 if not report["unreadable"] else 1
