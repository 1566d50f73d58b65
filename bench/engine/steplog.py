"""steps.parquet: one row per `log_every` training steps (docs/design.md, "What a run writes"), summarising them.

A row gives the running totals as of its last step (step, progress, budget used in every unit), the means over its
steps of what varies per step (loss, learning rate, clips, frames, size, tokens per clip, step time and the time of
it spent waiting for the batch), the interval's throughput and the share of its step time spent waiting, and the
figures the runner adds at its end (memory, method columns). Losses stay on the device until `read_losses`, so
logging costs no synchronisation per step.
"""

import math
from typing import Any

import torch

DATA_BOUND_SHARE = 0.1  # a run that waited longer than this share of its training time for batches is data-bound
MEANS = ("lr", "clips", "frames", "size", "tokens", "keep", "step_s", "data_s")


class StepLog:
    def __init__(self, every: int):
        self.every = every
        self.rows: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []  # the steps of the interval not yet summarised
        self.read = 0  # rows whose loss is on the host

    def add(self, step: dict[str, Any]) -> bool:
        """Record one step (loss, lr, clips, frames, size, tokens, keep, step_s and data_s, the part of step_s spent
        waiting for the batch); True when an interval is full."""
        self.pending.append(step)
        return len(self.pending) >= self.every

    def close_interval(self, totals: dict[str, Any]) -> None:
        """Summarise the pending steps into a row, with `totals` (step, progress, used_*, ...) as of the last."""
        if not self.pending:
            return
        steps = self.pending
        row = dict(totals)
        row["steps"] = len(steps)
        row["loss"] = torch.stack([s["loss"].detach().float() for s in steps]).mean()
        for key in MEANS:
            row[key] = sum(s[key] for s in steps) / len(steps)
        row["clips_per_s"] = sum(s["clips"] for s in steps) / sum(s["step_s"] for s in steps)
        row["data_share"] = sum(s["data_s"] for s in steps) / sum(s["step_s"] for s in steps)
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


def data_wait_figures(wait_s: float, wall_s: float) -> dict[str, Any]:
    """How much of its training time (`wall_s`, on the clock) a process waited for batches; over DATA_BOUND_SHARE the
    run is data-bound: its figures count (the wait is on the clock, as it is for a user) but a saving in model work
    could not show."""
    share = wait_s / wall_s if wall_s else None
    return {"data_wait_s": wait_s, "data_wait_share": share,
            "data_bound": None if share is None else share > DATA_BOUND_SHARE}
