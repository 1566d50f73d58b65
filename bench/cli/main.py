"""The `vtbench` command line. Errors a user can fix print one line and exit 2, without a traceback."""

import argparse
import importlib
import sys

from vtbench.errors import VtbenchError

# Each subcommand: the module that implements it and its function there (args -> exit status). This module builds
# the parser only; a subcommand's module is imported when that subcommand runs, so `vtbench --help` needs no torch.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("vtbench.cli.run", "cmd_run"),
    "estimate": ("vtbench.cli.model", "cmd_estimate"),
    "methods": ("vtbench.cli.model", "cmd_methods"),
    "pretrain": ("vtbench.cli.model", "cmd_pretrain"),
    "grid": ("vtbench.cli.grid", "run_grid"),
    "tune": ("vtbench.cli.tune", "run_tune"),
    "data": ("vtbench.cli.data", "cmd_data"),
    "status": ("vtbench.cli.study", "cmd_status"),
    "report": ("vtbench.cli.study", "cmd_report"),
    "plan": ("vtbench.cli.study", "cmd_plan"),
    "demo": ("vtbench.cli.study", "cmd_demo"),
}


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


def _methods_parser(sub) -> None:
    p = sub.add_parser("methods", help="the registered methods: their papers and parameters (type, default, allowed "
                                       "values)")
    p.add_argument("name", nargs="?", metavar="NAME", help="one method: every parameter, what it does, and the "
                                                           "method's description")


def _grid_parser(sub) -> None:
    p = sub.add_parser("grid", help="run a whole ablation grid; run it again to resume after any crash")
    p.add_argument("config", metavar="CONFIG.yaml")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes (--executor local) or SLURM array tasks (--executor slurm); default 1")
    p.add_argument("--executor", choices=("inline", "local", "slurm"), default="inline")
    p.add_argument("--nproc", type=int, metavar="N", help="processes per cell (the YAML's nproc_per_run)")
    p.add_argument("--out", default="results", help="results folder; the study goes to OUT/<study>/")
    p.add_argument("--no-progress", action="store_true")


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
        q.add_argument("--decoder", default="auto", choices=("auto", "pyav", "torchcodec", "torchcodec-cuda"),
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


def _status_parser(sub) -> None:
    p = sub.add_parser("status", help="what a grid or tuning study has done and what is left, while it runs or "
                                      "after")
    p.add_argument("study_dir", metavar="STUDY_DIR", help="OUT/<study>/")
    p.add_argument("--storage", metavar="URL", help="a tuning study's database, when it was not a journal file")
    p.add_argument("--json", action="store_true", help="the same as JSON, for scripts")


def _report_parser(sub) -> None:
    p = sub.add_parser("report", help="Markdown report, figures and tables of a study")
    p.add_argument("study_dir", metavar="STUDY_DIR")
    p.add_argument("--out", help="default: reports/<study>/")


def _plan_parser(sub) -> None:
    p = sub.add_parser("plan", help="from a finished study: the seeds each comparison needs to resolve a speed-up, "
                                    "and what they cost")
    p.add_argument("study_dir", metavar="STUDY_DIR")
    p.add_argument("--speedup", type=float, default=1.3, metavar="X",
                   help="the true speed-up to detect (default 1.3)")
    p.add_argument("--power", type=float, default=0.8, help="the power wanted (default 0.8)")
    p.add_argument("--out", metavar="DIR", help="also write plan.md and plan.csv there (the study's report folder)")


def _pretrain_parser(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain a small image ViT on synthetic stills and save it in timm's format "
                                        "(a start for fine-tuning studies: init.format=timm)")
    p.add_argument("--out", required=True, metavar="FILE.safetensors")
    p.add_argument("--model", default="vit_tiny", help="the preset whose spatial side it matches (default vit_tiny)")
    p.add_argument("--steps", type=int, default=600, help="training steps (default 600)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)


def _demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="the demo grid on the synthetic data (four seeds per method, about 15 minutes "
                                    "on a 2-core CPU), then its report")
    p.add_argument("--out", default="results")
    p.add_argument("--report", default="reports/demo")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        module, function = COMMANDS[args.command]
        return getattr(importlib.import_module(module), function)(args)
    except VtbenchError as err:
        print(f"vtbench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vtbench: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
