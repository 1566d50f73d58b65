"""The `vtbench` command line. Errors a user can fix print one line and exit 2, without a traceback."""

import argparse
import os
import re
import sys
import time
from pathlib import Path

from vtbench.engine.config import RunConfig, apply, load_run_config, parse_method, parse_set
from vtbench.engine.init import check_fits
from vtbench.errors import VtbenchError
from vtbench.studies.folder import writable_folder


def _run_parser(sub) -> None:
    p = sub.add_parser("run", help="train one configuration under a budget")
    p.add_argument("--config", metavar="FILE.yaml", help="a run config; flags below override it")
    p.add_argument("--dataset", help="data set (default: synthetic)")
    p.add_argument("--model", help="model preset: vit_tiny (default), vit_small, vit_base, vit_large, vit_huge")
    p.add_argument("--method", action="append", metavar="NAME[:key=value,...]", default=None,
                   help="a training accelerator; repeat for a list, applied in order; none is the baseline")
    p.add_argument("--budget", help="20s, 5min, 2h, 3e12flops, 200steps or 5000samples (default: 60s)")
    p.add_argument("--seed", type=int)
    p.add_argument("--nproc", type=int, metavar="N",
                   help="processes that carry the run together (torch.distributed DDP: one GPU each, or gloo on the "
                        "CPU); batch_size stays the global batch. Under torchrun or SLURM the launcher's world size")
    p.add_argument("--out", default="results/runs", help="results folder (default: results/runs)")
    p.add_argument("--set", action="append", default=[], metavar="key=value",
                   help="any run setting, e.g. --set lr=3e-4 --set model_args.depth=2")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--wait", action="store_true",
                   help="if another process is training this run, wait for it instead of exiting")


def _estimate_parser(sub) -> None:
    p = sub.add_parser("estimate", help="FLOPs and activation memory per method, on meta tensors (runs nothing)")
    p.add_argument("--model", default="vit_base", help="model preset (default: vit_base)")
    p.add_argument("--arch", default="joint", help="joint (default) or factorised")
    p.add_argument("--frames", type=int, help="frames per clip (default: the preset's)")
    p.add_argument("--size", type=int, help="frame size in pixels (default: the preset's)")
    p.add_argument("--classes", type=int, default=400, help="classifier width (default: 400, Kinetics)")
    p.add_argument("--progress", type=float, default=0.5, help="budget progress for scheduled methods (default 0.5)")
    p.add_argument("--method", action="append", default=[], metavar="NAME[:key=value,...][+NAME...]",
                   help="one row per flag; join methods of one list with +")
    p.add_argument("--set", action="append", default=[], metavar="key=value", help="any run setting")


def cmd_estimate(args: argparse.Namespace) -> int:
    from vtbench.engine.estimate import estimate, table

    values = {"model": args.model, "arch": args.arch, "frames": args.frames, "size": args.size}
    config = apply(apply(RunConfig(), {k: v for k, v in values.items() if v is not None}), parse_set(args.set),
                   where="--set")
    if not 0 <= args.progress <= 1:
        raise VtbenchError(f"--progress {args.progress} is outside [0, 1]")
    if args.classes < 1:
        raise VtbenchError(f"--classes must be at least 1, got {args.classes}")
    settings = [[]] + [[parse_method(m) for m in flag.split("+")] for flag in args.method]
    print(table([estimate(config, methods, args.progress, args.classes) for methods in settings]))
    from vtbench.methods import REGISTRY

    content = sorted({m.name for methods in settings for m in methods
                      if REGISTRY.get(m.name) and REGISTRY[m.name].claim and not REGISTRY[m.name].claim.estimable})
    if content:
        print(f"{', '.join(content)}: the tokens kept depend on the clips' content, which meta tensors lack; shown "
              "with every token, the upper bound (a run's `keep` column gives the measured share)")
    return 0


def _methods_parser(sub) -> None:
    p = sub.add_parser("methods", help="the registered methods: their papers and parameters (type, default, allowed "
                                       "values)")
    p.add_argument("name", nargs="?", metavar="NAME", help="one method: every parameter, what it does, and the "
                                                           "method's description")


def cmd_methods(args: argparse.Namespace) -> int:
    from vtbench.methods import REGISTRY
    from vtbench.methods.params import card, catalogue

    if args.name is None:
        print(catalogue(dict(sorted(REGISTRY.items()))))
        return 0
    if args.name not in REGISTRY:
        raise VtbenchError(f"unknown method {args.name!r}; known: {', '.join(sorted(REGISTRY))}")
    print(card(args.name, REGISTRY[args.name]))
    return 0


def _grid_parser(sub) -> None:
    p = sub.add_parser("grid", help="run a whole ablation grid; run it again to resume after any crash")
    p.add_argument("config", metavar="CONFIG.yaml")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes (--executor local) or SLURM array tasks (--executor slurm); default 1")
    p.add_argument("--executor", choices=("inline", "local", "slurm"), default="inline")
    p.add_argument("--nproc", type=int, metavar="N", help="processes per cell (the YAML's nproc_per_run)")
    p.add_argument("--out", default="results", help="results folder; the study goes to OUT/<study>/")
    p.add_argument("--no-progress", action="store_true")


def cmd_grid(args: argparse.Namespace) -> int:
    from vtbench.cli.grid import run_grid

    return run_grid(args)


def _tune_parser(sub) -> None:
    p = sub.add_parser("tune", help="an Optuna search over method parameters, each trial a budgeted run; "
                                    "run it again to continue the study")
    p.add_argument("config", metavar="CONFIG.yaml")
    p.add_argument("--storage", metavar="URL", help="default: a journal file in the study folder; "
                   "postgresql://user@host/db for many machines")
    p.add_argument("--workers", type=int, default=1, help="parallel workers sharing the storage (default 1)")
    p.add_argument("--executor", choices=("inline", "local", "slurm"), default=None,
                   help="default: inline for one worker, local processes for more")
    p.add_argument("--trials", type=int, help="ended trials to reach (default: the config's `trials`)")
    p.add_argument("--nproc", type=int, metavar="N", help="processes per trial's run (the YAML's nproc_per_run)")
    p.add_argument("--out", default="results", help="results folder; the study goes to OUT/<study>/")
    p.add_argument("--no-progress", action="store_true")


def cmd_tune(args: argparse.Namespace) -> int:
    from vtbench.cli.tune import run_tune

    if args.executor is None:
        args.executor = "local" if args.workers > 1 else "inline"
    return run_tune(args)


def _data_parser(sub) -> None:
    p = sub.add_parser("data", help="real video data sets: check a data set, cache decoded frames, re-encode it")
    actions = p.add_subparsers(dest="action", required=True)
    cache = actions.add_parser("cache", help="decode every video once to memory-mapped uint8 arrays")
    check = actions.add_parser("check", help="count videos, classes and unreadable files; measure decode speed "
                                             "and the cores it takes to feed a model on a GPU")
    reencode = actions.add_parser("reencode", help="a copy of the data set in the same layout, every video "
                                                   "re-encoded for training: smaller, H.264, short GOPs")
    for q in (cache, check, reencode):
        q.add_argument("--dataset", required=True, metavar="FORMAT:ROOT",
                       help="folder, list, kinetics, ssv2, ucf101 or hmdb51, then the data set's root")
        q.add_argument("--no-progress", action="store_true")
    for q in (cache, check):
        q.add_argument("--split", type=int, default=1, help="ucf101 / hmdb51 split (1, 2 or 3)")
        q.add_argument("--decoder", default="auto", choices=("auto", "pyav", "torchcodec"),
                       help="as data_args.decoder (default auto: the one measured faster here)")
    cache.add_argument("--size", type=int, required=True, help="the clip size training will ask for (pixels)")
    cache.add_argument("--workers", type=int, default=0, help="decoding processes (default 0: this one)")
    check.add_argument("--limit", type=int, help="check at most this many videos per split")
    check.add_argument("--size", type=int, default=224, help="clip size for the decode-speed figure (default 224)")
    check.add_argument("--frames", type=int, default=16, help="frames per clip for the decode speed (default 16)")
    check.add_argument("--stride", type=int, default=2, help="frame stride of the clip (default 2)")
    check.add_argument("--compare", metavar="DIR", help="also time the same videos in a re-encoded copy "
                                                        "(vtbench data reencode --out DIR)")
    check.add_argument("--model", metavar="PRESET", help="with --gpu: the decoding cores it takes to feed this model "
                                                         "preset's training at the clip shape")
    check.add_argument("--gpu", metavar="NAME", help="the GPU, as NVML names it (e.g. 'NVIDIA H100 80GB HBM3')")
    check.add_argument("--mfu", type=float, default=0.35, help="the model FLOP utilisation assumed (default 0.35)")
    check.add_argument("--repeats", type=int, default=2, metavar="N",
                       help="data_args.repeats for the last column: clips per decode (default 2)")
    reencode.add_argument("--out", required=True, metavar="DIR", help="where the copy goes (not inside ROOT)")
    reencode.add_argument("--short-side", type=int, default=256, help="short side of the copy in pixels, never "
                                                                      "upscaled (default 256)")
    reencode.add_argument("--gop", type=int, default=16, help="a keyframe every this many frames (default 16)")
    reencode.add_argument("--crf", type=int, default=23, help="x264's constant rate factor: lower is better and "
                                                              "larger (default 23)")
    reencode.add_argument("--workers", type=int, default=0, help="encoding processes (default 0: this one)")


def cmd_data(args: argparse.Namespace) -> int:
    if ":" not in args.dataset:
        raise VtbenchError(f"--dataset is FORMAT:ROOT (e.g. folder:/data/ucf), got {args.dataset!r}")
    layout, root = args.dataset.split(":", 1)
    if args.action == "cache":
        from vtbench.datasets.cache import build_cache

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
        from vtbench.datasets.reencode import reencode, summary

        outcome = reencode(layout, root, args.out, args.short_side, args.gop, args.workers, args.crf,
                           progress=not args.no_progress)
        print(summary(outcome, args.dataset, args.out))
        return 0 if not outcome.unreadable else 1
    from vtbench.datasets.check import check, table
    from vtbench.engine.feeding import feeding, feeding_lines, gpu_peak

    for flag in ("size", "frames", "stride"):
        if getattr(args, flag) < 1:
            raise VtbenchError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if (args.model is None) != (args.gpu is None):
        raise VtbenchError("--model and --gpu go together: the cores to feed that model's training on that GPU")
    if args.gpu is not None:
        from vtbench.models import PRESETS

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


def _status_parser(sub) -> None:
    p = sub.add_parser("status", help="what a grid or tuning study has done and what is left, while it runs or "
                                      "after")
    p.add_argument("study_dir", metavar="STUDY_DIR", help="OUT/<study>/")
    p.add_argument("--storage", metavar="URL", help="a tuning study's database, when it was not a journal file")
    p.add_argument("--json", action="store_true", help="the same as JSON, for scripts")


def _study_folder(path: str, command: str) -> Path:
    study = Path(path)
    if not study.is_dir():
        raise VtbenchError(f"study folder {study} does not exist" if not study.exists() else
                           f"{study} is a file; vtbench {command} takes a study folder (OUT/<study>/)")
    return study


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from vtbench.studies.status import format_status, study_status

    status = study_status(_study_folder(args.study_dir, "status"), args.storage)
    print(json.dumps(status, indent=1) if args.json else format_status(status))
    return 0


def _report_parser(sub) -> None:
    p = sub.add_parser("report", help="Markdown report, figures and tables of a study")
    p.add_argument("study_dir", metavar="STUDY_DIR")
    p.add_argument("--out", help="default: reports/<study>/")


def cmd_report(args: argparse.Namespace) -> int:
    from vtbench.report import write_report

    study = Path(args.study_dir)
    if not study.is_dir():
        raise VtbenchError(f"study folder {study} does not exist" if not study.exists() else
                           f"{study} is a file; vtbench report takes a study folder (OUT/<study>/)")
    out = writable_folder(Path(args.out or Path("reports") / study.name))
    try:
        path = write_report(study, out)
    except FileNotFoundError as err:
        raise VtbenchError(str(err)) from None
    print(path)
    return 0


def _plan_parser(sub) -> None:
    p = sub.add_parser("plan", help="from a finished study: the seeds each comparison needs to resolve a speed-up, "
                                    "and what they cost")
    p.add_argument("study_dir", metavar="STUDY_DIR")
    p.add_argument("--speedup", type=float, default=1.3, metavar="X",
                   help="the true speed-up to detect (default 1.3)")
    p.add_argument("--power", type=float, default=0.8, help="the power wanted (default 0.8)")
    p.add_argument("--out", metavar="DIR", help="also write plan.md and plan.csv there (the study's report folder)")


def cmd_plan(args: argparse.Namespace) -> int:
    from vtbench.report.plan import markdown, plan_table

    study = _study_folder(args.study_dir, "plan")
    if not args.speedup > 0 or args.speedup == 1:
        raise VtbenchError(f"--speedup must be a positive ratio other than 1, got {args.speedup}")
    if not 0 < args.power < 1:
        raise VtbenchError(f"--power must lie in (0, 1), got {args.power}")
    plan = plan_table(study, args.speedup, args.power)
    text = markdown(plan, args.speedup, args.power)
    print(text)
    if args.out:
        out = writable_folder(Path(args.out))
        out.mkdir(parents=True, exist_ok=True)
        plan.to_csv(out / "plan.csv", index=False)
        (out / "plan.md").write_text(text + "\n")
    return 0


def _pretrain_parser(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain a small image ViT on synthetic stills and save it in timm's format "
                                        "(a start for fine-tuning studies: init.format=timm)")
    p.add_argument("--out", required=True, metavar="FILE.safetensors")
    p.add_argument("--model", default="vit_tiny", help="the preset whose spatial side it matches (default vit_tiny)")
    p.add_argument("--steps", type=int, default=600, help="training steps (default 600)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from vtbench.engine.pretrain import pretrain

    record = pretrain(args.out, args.model, args.steps, args.batch_size, args.lr, args.seed)
    print(f"{args.out}: {record['preset']} image model, {record['steps']} steps in {record['train_s']:.0f}s, "
          f"top-1 {record['val_top1']:.1f}% on {record['eval_images']} held-out stills ({len(record['classes'])} "
          f"classes)")
    return 0


DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"  # in the source checkout


def _demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="the demo grid on the synthetic data (four seeds per method, about 15 minutes "
                                    "on a 2-core CPU), then its report")
    p.add_argument("--out", default="results")
    p.add_argument("--report", default="reports/demo")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")


def cmd_demo(args: argparse.Namespace) -> int:
    from vtbench.cli.grid import run_grid
    from vtbench.report import write_report

    config = DEMO_CONFIG
    if not config.exists():
        raise VtbenchError(f"{config} is missing: the demo needs a source checkout (pip install -e .)")
    writable_folder(Path(args.report), "--report")
    grid_args = argparse.Namespace(config=str(config), workers=args.workers, out=args.out,
                                   executor="local" if args.workers > 1 else "inline", no_progress=args.no_progress)
    status = run_grid(grid_args)
    report = write_report(Path(args.out) / "demo", Path(args.report))
    print(_headline(report.read_text()))
    print(f"\nthe whole report: {report}")
    return status


def _headline(report: str) -> str:
    """The report's opening sections (speed-ups, instrument checks, resolving power), without their explanations."""
    start = report.find("## Speed-up at equal top-1")
    end = report.find("## Top-1 at equal budget")
    if start < 0:
        return report
    lines = report[start:end if end > start else len(report)].splitlines()
    kept = "\n".join(line for line in lines if not line or line.startswith(("#", "|", "-")))
    return re.sub(r"\n{3,}", "\n\n", kept).strip()


def build_config(args: argparse.Namespace) -> RunConfig:
    config = load_run_config(args.config) if args.config else RunConfig()
    flags = {k: getattr(args, k) for k in ("dataset", "model", "budget", "seed") if getattr(args, k) is not None}
    config = apply(config, flags)
    if args.method is not None:
        config = apply(config, {"methods": [parse_method(m) for m in args.method]})
    return apply(config, parse_set(args.set), where="--set")


def cmd_run(args: argparse.Namespace) -> int:
    from vtbench.engine.distributed import launched_size
    from vtbench.engine.launch import execute_or_launch

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
    from vtbench.studies.folder import Claim

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
    from vtbench.engine.results import SUMMARY, read_json

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vtbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    _estimate_parser(sub)
    _methods_parser(sub)
    _grid_parser(sub)
    _tune_parser(sub)
    _data_parser(sub)
    _report_parser(sub)
    _plan_parser(sub)
    _status_parser(sub)
    _demo_parser(sub)
    _pretrain_parser(sub)
    args = parser.parse_args(argv)
    try:
        commands = {"run": cmd_run, "estimate": cmd_estimate, "grid": cmd_grid, "tune": cmd_tune, "data": cmd_data,
                    "report": cmd_report, "plan": cmd_plan, "status": cmd_status, "demo": cmd_demo,
                    "pretrain": cmd_pretrain, "methods": cmd_methods}
        return commands[args.command](args)
    except VtbenchError as err:
        print(f"vtbench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vtbench: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
