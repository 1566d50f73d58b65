"""A run's evaluation protocol: when it evaluates, which settings (the default, then the reduced-token sweep and
the methods' own) on which clips, and the row each evaluation leaves in evals.parquet."""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch

from vtbench.core.budget import Used
from vtbench.core.shape import BatchShape
from vtbench.engine.config import RunConfig
from vtbench.engine.evaluate import EvalData, evaluate
from vtbench.methods import EvalSetting
from vtbench.methods.reductions import parse

WINDOW_COLUMNS = ("energy_j", "power_w", "mem_device", "mem_allocated", "mem_rss")  # the training window's, as
# `window_<name>`; the CPU's two come named already


@dataclass(frozen=True)
class EvalRow:
    """One evaluation of one setting: a row of evals.parquet (the runner adds the evaluation's own measurements)."""

    point: float  # the progress point it was due at
    progress: float  # the progress it ran at (past the point by at most a step)
    step: int
    used_s: float
    used_flops: float
    used_samples: int
    setting: str  # "default", a shared reduction's name, or a method's own setting
    top1: float
    top5: float
    loss: float
    tokens: float | None  # real tokens per clip the blocks saw; None where this process scored no clip
    clips: int  # scored, over every process
    frames: int
    size: int
    stride: int | tuple[int, int]
    keep: float | None  # tokens over the full token grid's
    eval_s: float
    window: dict[str, Any]  # the training window that ends here: energy, power, memory, the CPU's share

    def as_row(self) -> dict[str, Any]:
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "window"}
        row.update({f"window_{k}": self.window[k] for k in WINDOW_COLUMNS})
        row.update(window_cpu_util=self.window["window_cpu_util"], window_wait_share=self.window["window_wait_share"])
        return row


def eval_points(every: float) -> list[float]:
    """The progress points at which a run evaluates: every `every` of the budget, and the end."""
    points = math.ceil(1 / every - 1e-9)
    return [round(min(1.0, (k + 1) * every), 10) for k in range(points)]


class Evaluation:
    """The settings a run is scored under, the clips it is scored on, the points it is scored at and the rows it has
    left so far (a part of the checkpoint). `settings` are the shared reduced-token sweep, then the methods' own that
    the sweep does not already name."""

    def __init__(self, config: RunConfig, data: EvalData, shape: BatchShape, method_settings: list,
                 tubelet: tuple[int, int, int]):
        self.config, self.data, self.shape, self.tubelet = config, data, shape, tubelet
        shared = [EvalSetting(r.name, select=r) for r in map(parse, config.eval_sweep)]
        names = {s.name for s in shared}
        self.settings = shared + [s for s in method_settings if s.name not in names]
        self.points = eval_points(config.eval_every)
        self.next = 0  # the index of the first point not yet evaluated
        self.rows: list[dict[str, Any]] = []

    def due(self, progress: float) -> float | None:
        """The first point not yet evaluated, if `progress` has reached it."""
        if self.next < len(self.points) and progress + 1e-9 >= self.points[self.next]:
            return self.points[self.next]
        return None

    def default_row(self, point: float) -> dict[str, Any]:
        return next(r for r in self.rows if r["point"] == point and r["setting"] == "default")

    def state_dict(self) -> dict[str, Any]:
        return {"next": self.next, "rows": self.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.next, self.rows = state["next"], state["rows"]

    def run(self, model: torch.nn.Module, chain, point: float, progress: float, used: Used, window: dict[str, Any],
            device: torch.device, autocast: Callable, reduce: Callable,
            on_shape: Callable[[BatchShape], None]) -> list[dict[str, Any]]:
        """The default setting, then (at the final point, or every point on request) the sweep, each after the
        methods' own evaluation selections `chain`: one row each. `on_shape` hears each setting's batch shape
        before it runs (a run that runs out of memory says during which)."""
        settings = [("default", chain, None, None)]
        if self.config.eval_sweep_at == "every" or point == 1.0:
            settings += [(s.name, after(s.select, chain), s.frames, s.size) for s in self.settings]
        rows = []
        for name, select, frames, size in settings:
            began = time.perf_counter()
            frames, size = frames or self.shape.frames, size or self.shape.size
            on_shape(BatchShape(self.config.eval_batch_size, frames, size, self.shape.stride))
            clips = self.config.eval_clips if point == 1.0 and name == "default" else self.config.eval_subset
            batches = self.data.batches(frames, size, self.shape.stride, clips)
            scores = evaluate(model, batches, select, device, autocast, reduce=reduce)
            full = frames // self.tubelet[0] * (size // self.tubelet[1]) ** 2
            keep = None if scores["tokens"] is None else scores["tokens"] / full  # None: this rank scored no clip
            rows.append(EvalRow(
                point=point, progress=progress, step=used.steps, used_s=used.s, used_flops=used.flops,
                used_samples=used.samples, setting=name, **scores, frames=frames, size=size, stride=self.shape.stride,
                keep=keep, eval_s=time.perf_counter() - began, window=window).as_row())
        return rows


def after(select, chain):
    """`select` run after the methods' own evaluation selections `chain`."""
    if hasattr(select, "after"):  # a shared reduction knows what must happen before the chain
        return select.after(chain)
    if chain is None:
        return select
    return lambda tokens: select(chain(tokens))
