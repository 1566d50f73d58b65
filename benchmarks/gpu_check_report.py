"""The GPU check's report (benchmarks/gpu_check.py): its figures as Markdown, and as JSON without NaN."""

import math
import traceback
from pathlib import Path
from typing import Any

import torch


def cell(key: str, value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and key.endswith(("bytes", "mem_allocated", "mem_reserved", "mem_device")):
        return f"{value / 2**30:.2f} GiB"
    if isinstance(value, list):
        return ", ".join(cell(key, v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(rows: dict[str, dict[str, Any]]) -> list[str]:
    columns = list(dict.fromkeys(key for row in rows.values() for key in row))
    lines = ["| setting | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(cell(c, row.get(c)) for c in columns) + " |")
    return lines


JSON_ONLY = ("run_summary", "run_steps")  # whole files, for whoever needs a figure the summary does not give


def figures_markdown(figures: dict[str, Any]) -> list[str]:
    figures = {k: v for k, v in figures.items() if k not in JSON_ONLY}
    scalars = {k: v for k, v in figures.items() if not isinstance(v, dict)}
    lines = ["| figure | value |", "|---|---|"] + [f"| {k} | {cell(k, v)} |" for k, v in scalars.items()]
    for key, value in figures.items():
        if not isinstance(value, dict):
            continue
        lines += ["", f"{key}:", ""]
        if value and all(isinstance(v, dict) for v in value.values()):
            lines += table(value)
        else:
            lines += [f"- {k}: {cell(k, v)}" for k, v in value.items()] or ["- (none)"]
    return lines


def markdown(report: dict[str, Any], titles: dict[str, str]) -> str:
    """The report as Markdown: the machine, then each section (`titles`, in order) with its figures or why it has
    none."""
    m = report["machine"]
    device = m.get("device_name") if m["device"].startswith("cuda") else m["gpu"]
    lines = ["# GPU check (benchmarks/gpu_check.py)", "",
             f"{device}; driver {m.get('driver')}; torch {m['torch']} (CUDA {m.get('cuda') or torch.version.cuda}); "
             f"{m['date']}; scale {report['scale']}; {report['wall_s']:.0f} s of a {report['time_limit_s']:.0f} s "
             f"limit. Device-absent packages imported: {', '.join(report['imported_absent_on_device']) or 'none'}."]
    for number, (name, title) in enumerate(titles.items(), 1):
        section = report["sections"][name]
        lines += ["", f"## {number}. {title} (`{name}`)", ""]
        if section["status"] == "skipped":
            lines.append(f"Skipped: {section['skipped']}")
        elif section["status"] == "failed":
            lines.append(f"Failed after {section['wall_s']:.1f} s: {section['error']} ({section.get('where', '')})")
        else:
            lines += [f"{section['wall_s']:.1f} s.", ""] + figures_markdown(section["figures"])
    return "\n".join(lines) + "\n"


def json_ready(value: Any) -> Any:
    """Non-finite floats as null (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


def error_place(err: BaseException, root: Path) -> str:
    """The innermost line of this repository that the error passed through (else the innermost of all)."""
    frames = traceback.extract_tb(err.__traceback__)
    ours = [f for f in frames if Path(f.filename).is_relative_to(root) and ".venv" not in Path(f.filename).parts]
    where = (ours or frames)[-1]
    return f"{where.filename}:{where.lineno} in {where.name}"


def error_text(err: BaseException, root: Path) -> str:
    return f"{traceback.format_exception_only(err)[-1].strip()} ({error_place(err, root)})"
