"""`vtbench run`: one configuration trained under its budget, in this process or in `--nproc` local ones."""

import argparse
import os
import sys
import time
from pathlib import Path

from vtbench.engine.config import RunConfig, apply, load_run_config, parse_method, parse_set
from vtbench.engine.distributed import launched_size
from vtbench.engine.init import check_fits
from vtbench.engine.launch import execute_or_launch
from vtbench.engine.results import SUMMARY, read_json
from vtbench.errors import VtbenchError
from vtbench.studies.folder import Claim, writable_folder


def build_config(args: argparse.Namespace) -> RunConfig:
    config = load_run_config(args.config) if args.config else RunConfig()
    flags = {k: getattr(args, k) for k in ("dataset", "model", "budget", "seed") if getattr(args, k) is not None}
    config = apply(config, flags)
    if args.method is not None:
        config = apply(config, {"methods": [parse_method(m) for m in args.method]})
    return apply(config, parse_set(args.set), where="--set")


def cmd_run(args: argparse.Namespace) -> int:
    config = build_config(args)
    launched = launched_size()  # > 1: torchrun or SLURM started this process as one rank of the run
    if launched > 1 and args.nproc not in (None, launched):
        raise VtbenchError(f"--nproc {args.nproc} disagrees with the launcher's world size {launched} (WORLD_SIZE)")
    nproc = launched if launched > 1 else args.nproc
    config = (apply(config, {"nproc": nproc}) if nproc is not None else config).resolve()
    main_rank = launched <= 1 or os.environ.get("RANK", "0") == "0"
    check_fits(config)  # a checkpoint that does not fit is refused before a folder or a process exists
    out = writable_folder(Path(args.out))
    claim = _claim_run(out, config.run_id(), args.wait) if main_rank else None
    try:
        run_dir = execute_or_launch(config, out, progress_bar=not args.no_progress)
    except VtbenchError:
        raise
    except Exception as err:  # the run recorded it (status failed) and stays resumable
        print(f"vtbench: run failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    finally:
        if claim is not None:
            claim.release()
    if not main_rank:
        return 0
    status = _print_outcome(run_dir)
    print(run_dir)
    return 0 if status == "completed" else 1


def _claim_run(out: Path, run_id: str, wait: bool):
    """Hold the run folder while this process trains it (the grid's claim, `OUT/<run_id>.claim`): a second
    identical command exits naming the holder, or with --wait waits for it."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{run_id}.claim"
    told = False
    while (claim := Claim.take(path)) is None:
        holder = Claim.describe(path)
        if not wait:
            raise VtbenchError(f"{out / run_id} is being trained by {holder}; run the same command with --wait to "
                               "wait for it, or let it finish")
        if not told:
            print(f"vtbench: waiting for {holder}, which is training {out / run_id}", file=sys.stderr)
            told = True
        time.sleep(WAIT_POLL_S)
    return claim


WAIT_POLL_S = 2.0


def _print_outcome(run_dir: Path) -> str:
    """One line on stderr about how the run ended; returns its status."""
    s = read_json(run_dir / SUMMARY)
    if "steps" not in s:  # a run of several processes whose rank 0 was stopped before it could write its figures
        print(f"{s['status']}: {s.get('error')}", file=sys.stderr)
        return s["status"]
    top1 = "n/a" if s.get("top1") is None else f"{s['top1']:.1f}%"
    print(f"{s['status']}: top-1 {top1} after {s['steps']} steps, {s['train_s']:.1f}s on the clock "
          f"(+{s['eval_s']:.1f}s evaluation), {s['samples']} clips", file=sys.stderr)
    if s.get("error"):
        print(f"{s['status']}: {s['error']}", file=sys.stderr)
    return s["status"]
