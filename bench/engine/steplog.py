"""steps.parquet: one row per `log_every` training steps (docs/design.md, "What a run writes"), summarising them.

A row gives the running totals as of its last step (step, progress, budget used in every unit), the means over its
steps of what varies per step (loss, learning rate, clips, frames, size, tokens per clip, step time and the time of
it spent waiting for the batch), the interval's throughput and the share of its step time spent waiting, and the
figures the runner adds at its end (memory, method columns). Losses stay on the device until `read_losses`, so
logging costs no synchronisation per step.

While a run trains, its rows are appended to a journal, steps.jsonl, at each checkpoint: only the rows new since the
last one, so a long run's checkpoints cost no more than its first. The checkpoint records how many rows (and bytes)
the journal held; a resumed run reads those back, and its first save cuts off whatever was appended after them. The
finished run's steps.parquet is written once, from every row, and the journal removed.
"""

import json
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from vtbench.engine.results import write_parquet
from vtbench.errors import VtbenchError

# Data-bound: the batches came slower than the model took them. Where a loader prepares them while the model trains, a
# wait of more than a tenth of the training time says so; where they are made in line, between steps, only their
# taking longer than everything else does (over half the time), since there every method pays for them alike.
DATA_BOUND_SHARE = 0.1
IN_LINE_BOUND_SHARE = 0.5


@dataclass(frozen=True)
class Step:
    """One training step, as the log records it."""

    loss: torch.Tensor  # this process's loss (its share of the batch's, with several), on the device until read
    lr: float
    clips: int  # this process's
    frames: int
    size: int
    tokens: float  # real tokens per clip the blocks saw, mean over the blocks
    keep: float  # tokens over the full token grid's
    step_s: float
    data_s: float  # the part of step_s spent waiting for the batch


MEANS = tuple(f.name for f in fields(Step) if f.name != "loss")  # averaged over an interval's steps


class StepLog:
    def __init__(self, every: int, journal: Path | None = None, table: Path | None = None):
        self.every, self.journal, self.table = every, journal, table
        self.rows: list[dict[str, Any]] = []
        self.pending: list[Step] = []  # the steps of the interval not yet summarised
        self.read = 0  # rows whose loss is on the host
        self.saved, self.saved_bytes = 0, 0  # rows in the journal, and its length with them

    def add(self, step: Step) -> bool:
        """Record one step; True when an interval is full."""
        self.pending.append(step)
        return len(self.pending) >= self.every

    def close_interval(self, totals: dict[str, Any]) -> None:
        """Summarise the pending steps into a row, with `totals` (step, progress, used_*, ...) as of the last."""
        if not self.pending:
            return
        steps = self.pending
        row = dict(totals)
        row["steps"] = len(steps)
        row["loss"] = torch.stack([s.loss.detach().float() for s in steps]).mean()
        for key in MEANS:
            row[key] = sum(getattr(s, key) for s in steps) / len(steps)
        step_s = sum(s.step_s for s in steps)
        row["clips_per_s"] = sum(s.clips for s in steps) / step_s
        row["data_share"] = sum(s.data_s for s in steps) / step_s
        self.rows.append(row)
        self.pending = []

    def read_losses(self, reduce=None) -> dict[str, Any] | None:
        """Bring the losses of new rows to the host (one synchronisation); the first non-finite row, if any.
        `reduce` adds up the ranks' shares of each loss when several processes carry the run."""
        unread, self.read = self.rows[self.read:], len(self.rows)
        if not unread:
            return None
        values = torch.stack([r["loss"] for r in unread]).cpu()
        values = (reduce(values) if reduce else values).tolist()
        for row, value in zip(unread, values, strict=True):
            row["loss"] = value
        return next((r for r in unread if not math.isfinite(r["loss"])), None)

    def save(self) -> None:
        """Append the rows read since the last save to the journal, after cutting off whatever a run killed before its
        checkpoint left there, and flush it to the disk (the checkpoint that names the rows comes after)."""
        new = self.rows[self.saved:self.read]
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(self.journal, os.O_RDWR | os.O_CREAT, 0o666), "r+b") as f:
            if os.fstat(f.fileno()).st_size < self.saved_bytes:
                raise VtbenchError(f"{self.journal}: shorter than the {self.saved_bytes} bytes this run wrote to it")
            f.seek(self.saved_bytes)
            f.truncate()
            f.writelines((json.dumps(row, default=_number) + "\n").encode() for row in new)
            f.flush()
            os.fsync(f.fileno())
            self.saved, self.saved_bytes = self.read, f.tell()

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.saved, "bytes": self.saved_bytes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The rows the journal held at the checkpoint (the first `bytes` of it); read only, so that every rank of a
        run can. A checkpoint of the first layout holds the rows themselves, and that of a run that ended names those of
        its table (the journal is gone): the next save writes them out."""
        if isinstance(state["rows"], list):
            self.rows, self.saved, self.saved_bytes = state["rows"], 0, 0
        elif not self.journal.exists() and self.table.exists():
            self.rows = pd.read_parquet(self.table).head(state["rows"]).to_dict("records")
            self.saved, self.saved_bytes = 0, 0
        elif not self.journal.exists():
            raise VtbenchError(f"{self.journal}: missing, and its checkpoint names {state['rows']} rows in it; delete "
                               "the run's folder to train it afresh")
        else:
            with self.journal.open("rb") as f:
                lines = f.read(state["bytes"]).decode(errors="replace").splitlines()
            try:
                self.rows = [json.loads(line) for line in lines]
            except json.JSONDecodeError:
                self.rows = []
            if len(self.rows) != state["rows"]:
                raise VtbenchError(f"{self.journal}: holds {len(self.rows)} readable of the {state['rows']} rows its "
                                   "checkpoint names; delete the run's folder to train it afresh")
            self.saved, self.saved_bytes = len(lines), state["bytes"]
        self.read = len(self.rows)

    def finish(self) -> None:
        """Write every row to the table (steps.parquet) and remove the journal."""
        if self.rows:
            write_parquet(self.table, self.rows)
        if self.journal is not None:
            self.journal.unlink(missing_ok=True)


def _number(value: Any) -> Any:
    """A NumPy scalar as a Python number, for JSON."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def data_wait_figures(wait_s: float, wall_s: float, ahead: bool) -> dict[str, Any]:
    """How much of its training time (`wall_s`, on the clock) a process spent getting its batches, and whether that
    made it data-bound. `ahead`: a loader prepared them while the model trained, so the time is a wait for a loader
    that fell behind, and a method's saving in model work cannot show past it (bound over DATA_BOUND_SHARE).
    Otherwise they were made in line, between steps (the synthetic renderer on a CPU, decoding without workers): a
    saving in model work shows on the rest of the time, and the run is bound only where its data took longer than
    everything else (IN_LINE_BOUND_SHARE). Either way the figures count: the time is on the clock, as for a user."""
    share = wait_s / wall_s if wall_s else None
    limit = DATA_BOUND_SHARE if ahead else IN_LINE_BOUND_SHARE
    return {"data_wait_s": wait_s, "data_wait_share": share, "data_ahead": ahead,
            "data_bound": None if share is None else share > limit}
