"""`vtbench status STUDY_DIR`: what a grid or tuning study has done and what is left, while it runs or after.

Everything comes from files the study already writes: `plan.json` (what the launcher was asked to run: a grid's
cells, a tuning study's number of trials), each run's `summary.json` (how it ended), `progress.json` (where a
training run stands), `attempts.json` (a grid cell's failures), its claim (which worker holds it), and for a tuning
study the Optuna storage (the trials and their states).
"""

from pathlib import Path
from typing import Any

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

from vtbench.core.budget import Budget
from vtbench.engine import results
from vtbench.errors import VtbenchError
from vtbench.studies.folder import claim_holder
from vtbench.studies.tune import ENDED as RUN_OUTCOMES
from vtbench.studies.tune import _quiet_optuna

PLAN = "plan.json"
ENDED = ("completed", "diverged", "oom", "pruned")
ORDER = ("completed", "pruned", "diverged", "oom", "failed", "running", "pending")


def write_plan(folder: Path, plan: dict[str, Any]) -> None:
    results.write_json(folder / PLAN, plan)


def study_status(folder: Path, storage: str | None = None) -> dict[str, Any]:
    """The study's entries (grid cells or trials), each with its state, and the totals."""
    folder = Path(folder)
    marker = folder / "study.json"
    if not marker.exists():
        raise VtbenchError(f"{folder} is not a study folder (no study.json): give OUT/<study>/ of a grid or tune")
    kind = results.read_json(marker).get("kind", "grid")
    plan = results.read_json(folder / PLAN) if (folder / PLAN).exists() else {}
    entries = _grid_cells(folder, plan) if kind == "grid" else _trials(folder, plan, storage)
    counts = {state: sum(e["state"] == state for e in entries) for state in ORDER}
    runs = {e.get("run_id") or id(e): e.get("device_s") or 0.0 for e in entries}  # a run shared by trials: once
    used = sum(runs.values())
    left, unknown = _left(entries)
    return {"study": folder.name, "kind": kind, "folder": str(folder), "entries": entries,
            "counts": {k: v for k, v in counts.items() if v}, "device_s_used": used, "device_s_left": left,
            "left_unknown": unknown, "planned": bool(plan)}


# ---- a grid -------------------------------------------------------------------------------------------------


def _grid_cells(folder: Path, plan: dict[str, Any]) -> list[dict[str, Any]]:
    cells = plan.get("cells") or [{"run_id": d.name, "label": d.name, "budget": None} for d in _run_dirs(folder)]
    retries = plan.get("retries", 1)
    entries = []
    for cell in cells:
        entry = {"run_id": cell["run_id"], "label": cell.get("label", cell["run_id"]), "budget": cell.get("budget")}
        entry.update(_run_state(folder, cell["run_id"]))
        attempts_file = folder / cell["run_id"] / "attempts.json"
        attempts = results.read_json(attempts_file) if attempts_file.exists() else {}
        if entry["state"] == "pending" and attempts.get("failed") and \
                not (folder / cell["run_id"] / results.SUMMARY).exists():
            # it failed before its run could write summary.json (building its data or model, its launch)
            entry.update(state="failed", error=attempts.get("error"))
        if entry["state"] == "failed":
            entry["retries_left"] = max(0, retries + 1 - attempts.get("failed", 1))
        entries.append(entry)
    return entries


def _run_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and (d / results.CONFIG).exists())


def _run_state(folder: Path, run_id: str) -> dict[str, Any]:
    """A run's state from its files: running (a live claim), ended or failed (its summary), else pending, with
    where it stands when it has begun."""
    run_dir = folder / run_id
    entry: dict[str, Any] = {"state": "pending"}
    progress = results.read_json(run_dir / results.PROGRESS) if (run_dir / results.PROGRESS).exists() else None
    if progress:
        entry.update(progress=progress["progress"], step=progress["step"], device_s=progress["used_s"])
        entry["budget"] = entry.get("budget") or progress.get("budget")
    holder = claim_holder(folder / f"{run_id}.claim")
    summary = results.read_json(run_dir / results.SUMMARY) if (run_dir / results.SUMMARY).exists() else None
    if holder:
        entry.update(state="running", worker=holder)
    elif summary:
        entry.update(state=summary["status"], top1=summary.get("top1"), device_s=summary.get("train_s"),
                     error=summary.get("error"))
        if summary["status"] in ENDED:
            entry["progress"] = 1.0 if summary["status"] == "completed" else entry.get("progress")
    return entry


# ---- a tuning study ----------------------------------------------------------------------------------------


def _trials(folder: Path, plan: dict[str, Any], storage: str | None) -> list[dict[str, Any]]:
    _quiet_optuna()
    journal = folder / "optuna.journal"
    if storage is None and not journal.exists():
        raise VtbenchError(f"{folder}: the study's trials are not in a journal file here; give the storage it "
                           "was run with: vtbench status DIR --storage URL")
    if storage is None:
        storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal), JournalFileOpenLock(str(journal))))
    try:
        study = optuna.load_study(study_name=folder.name, storage=storage)
    except KeyError:
        raise VtbenchError(f"the storage holds no study named {folder.name!r}") from None
    trials = study.get_trials(deepcopy=False)
    numbers = {t.number: t for t in trials}
    # a retry (the same parameters, so the same run) names the trial it takes over: interrupted, or its worker dead
    retry_of = {t.number: t.user_attrs.get("resumes", t.system_attrs.get("failed_trial")) for t in trials}
    retried = {n for n in retry_of.values() if n is not None}
    entries = []
    for trial in trials:
        if trial.user_attrs.get("surplus"):
            continue
        run_id = trial.user_attrs.get("run_id")
        source = numbers.get(retry_of[trial.number])
        if run_id is None and source is not None and trial.state.name == "WAITING":  # where its run resumes
            run_id = source.user_attrs.get("run_id")
        entry = {"trial": trial.number, "run_id": run_id, "label": f"trial {trial.number} {trial.params}",
                 "budget": plan.get("budget")}
        state = trial.state.name.lower()
        if run_id:
            entry.update(_run_state(folder, run_id))
        if state == "running":
            worker = trial.user_attrs.get("worker") or {}
            entry.update(state="running", worker=f"process {worker.get('pid')} on {worker.get('host')}")
        elif state == "waiting":
            entry["state"] = "pending"
        elif state in ("complete", "pruned"):
            entry["state"] = "completed" if state == "complete" else "pruned"
        elif trial.user_attrs.get("status") in RUN_OUTCOMES:  # failed by its run's outcome
            entry["state"] = trial.user_attrs["status"]
        else:  # its worker died or was interrupted: not counted; the same parameters run again, the run resuming
            reason = "interrupted" if trial.user_attrs.get("status") == "interrupted" else "its worker died"
            again = "its parameters run again" if trial.number in retried else \
                "its retries are used up; another trial takes its place"
            entry.update(state="failed", error=f"{reason}; {again}", retried=True)
        entries.append(entry)
    target = plan.get("trials")
    counted = sum(not e.get("retried") for e in entries)
    for _ in range(max(0, (target or 0) - counted)):  # trials not drawn yet
        entries.append({"trial": None, "run_id": None, "label": "not drawn yet", "budget": plan.get("budget"),
                        "state": "pending"})
    return entries


# ---- what is left ------------------------------------------------------------------------------------------


def _left(entries: list[dict[str, Any]]) -> tuple[float, int]:
    """Device seconds the unended entries still need, from their budgets: a time budget's rest, else the device
    time a unit of progress took (the entry's own so far, or its budget's ended entries'); and how many entries
    could not be estimated."""
    per_budget: dict[str, list[float]] = {}
    for e in entries:
        if e["state"] == "completed" and e.get("budget") and e.get("device_s"):
            per_budget.setdefault(e["budget"], []).append(e["device_s"])
    left, unknown = 0.0, 0
    for e in entries:
        if e["state"] in ENDED or (e["state"] == "failed" and not e.get("retries_left")) or e.get("retried"):
            continue
        done = e.get("progress") or 0.0
        budget = _budget(e.get("budget"))
        if budget is not None and budget.unit == "s":
            left += budget.amount * (1 - done)
        elif done > 0 and e.get("device_s"):
            left += e["device_s"] / done * (1 - done)
        elif per_budget.get(e.get("budget")):
            left += sum(per_budget[e["budget"]]) / len(per_budget[e["budget"]]) * (1 - done)
        else:
            unknown += 1
    return left, unknown


def _budget(text: str | None) -> Budget | None:
    try:
        return Budget.parse(text) if text else None
    except Exception:  # noqa: BLE001 - an estimate, not a check
        return None


# ---- words -------------------------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    if round(seconds) < 60:
        return f"{round(seconds)}s"
    minutes = round(seconds / 60)
    return f"{minutes}min" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}min"


def entry_line(e: dict[str, Any]) -> str:
    state = e["state"]
    if state in ENDED or state == "completed":
        top1 = "n/a" if e.get("top1") is None else f"{e['top1']:.1f}%"
        detail = f"top-1 {top1:>6}  {duration(e.get('device_s') or 0):>7}"
        if state != "completed" and e.get("error"):
            detail += f"  ({e['error'].splitlines()[0][:80]})"
    elif state == "running":
        detail = f"{100 * (e.get('progress') or 0):5.1f}%  {e.get('worker')}"
    elif state == "pending":
        detail = f"resumes at {100 * e['progress']:.1f}%" if e.get("progress") else ""
    else:  # failed
        line = (e.get("error") or "no error recorded").splitlines()[0][:160]
        retries = e.get("retries_left")
        detail = line + (f"  ({retries} retr{'y' if retries == 1 else 'ies'} left)" if retries is not None else "")
    name = f"  ({e['run_id']})" if e.get("run_id") and e["run_id"] != e["label"] else ""
    return f"{state:>9}  {e['label']}{name}  {detail}".rstrip()


def format_status(status: dict[str, Any]) -> str:
    entries = status["entries"]
    noun = "cells" if status["kind"] == "grid" else "trials"
    counts = ", ".join(f"{n} {state}" for state, n in status["counts"].items())
    lines = [f"study {status['study']} ({status['kind']}), {len(entries)} {noun}: {counts or 'none yet'}"]
    if not status["planned"]:
        lines.append("(no plan.json: the study was started by an older vtbench; pending cells that never began are "
                     "not listed)")
    order = {state: k for k, state in enumerate(("running", "failed", "pending", *ENDED))}
    lines += [entry_line(e) for e in sorted(entries, key=lambda e: order.get(e["state"], 9))]
    left = f"about {duration(status['device_s_left'])} of device time left"
    if status["left_unknown"]:
        left += f" (and {status['left_unknown']} {noun} whose budget gives no estimate yet)"
    lines.append(f"device time used {duration(status['device_s_used'])}; {left}")
    return "\n".join(lines)
