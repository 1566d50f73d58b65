"""`vtbench status`, `vtbench report`, `vtbench plan` and `vtbench demo`: a study folder read, reported or (the
demo) written and reported."""

import argparse
import json
import re
from pathlib import Path

from vtbench.cli.grid import run_grid
from vtbench.errors import VtbenchError
from vtbench.report import write_report
from vtbench.report.plan import markdown, plan_table
from vtbench.studies.folder import writable_folder
from vtbench.studies.status import format_status, study_status


def _study_folder(path: str, command: str) -> Path:
    study = Path(path)
    if not study.is_dir():
        raise VtbenchError(f"study folder {study} does not exist" if not study.exists() else
                           f"{study} is a file; vtbench {command} takes a study folder (OUT/<study>/)")
    return study


def cmd_status(args: argparse.Namespace) -> int:
    status = study_status(_study_folder(args.study_dir, "status"), args.storage)
    print(json.dumps(status, indent=1) if args.json else format_status(status))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
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


def cmd_plan(args: argparse.Namespace) -> int:
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


DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"  # in the source checkout


def cmd_demo(args: argparse.Namespace) -> int:
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
