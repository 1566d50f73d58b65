"""Multigrid training (Wu, Girshick, He, Feichtenhofer, Kraehenbuehl, "A Multigrid Method for Efficiently
Training Video Models", CVPR 2020, arXiv 1912.00998; reference code facebookresearch/SlowFast,
slowfast/utils/multigrid.py and slowfast/datasets/multigrid_helper.py).

Training cycles through batch shapes (clips, frames, size) that keep clips x frames x pixels per step about
constant, so early steps see many small, short clips and the model ends at the base shape.

- Long cycle: stages with (temporal, spatial) factors (0.25, 0.707), (0.5, 0.707), (0.5, 1), (1, 1) of the
  base (T, S); a stage's shape (t, s) gets batch multiplier round(T S^2 / (t s^2)) (8, 4, 2, 1 for these
  factors).
- Short cycle (`short_cycle`, on by default as in the paper): within a stage, steps cycle through sizes
  0.5 S and 0.707 S, then the stage's own size, with further batch multipliers round((s_stage / s)^2)
  (4, 2, 1 at full size; 2, 1, 1 at 0.707 S) and no learning-rate change, as SlowFast's
  ShortCycleBatchSampler. SlowFast's loader keeps it in the final fine-tuning phase too, and so does this
  method by default (`final_short_cycle: false` trains the final phase at the base shape alone).
- A stage with fewer frames samples each clip with its own stride between the base stride and
  base stride x T / t, so clips still cover up to the original time span.
- `cycle_stages` gives the shapes of every stage and step; `slowfast_schedule` lays them out as SlowFast's
  epoch-based schedule (shapes, relative learning rates, iteration saving), and the tests check both against
  the paper's K400 configuration, the method's own steps included.

Learning rate (`lr_scaling`, default `none`): SlowFast scales the (SGD) learning rate linearly with a stage's
batch multiplier. With AdamW we measured linear, sqrt and none on the default workload, 5 seeds each, at a FLOPs
budget of about a minute of the baseline (`vtbench grid configs/multigrid_lr.yaml`, 1.5e12 FLOPs): final top-1
none 83.6 +- 1.0, sqrt 74.1 +- 11.2, linear 42.2 +- 22.1 (mean +- sd over seeds); the baseline 43.5 +- 5.8, and
the baseline at multigrid's mean learning-rate multiplier (`mean_lr_scale`, the constant with the same integral
of the scheduled rate: 1.72 for sqrt, 3.33 for linear) 39.7 +- 6.6 and 41.5 +- 11.7. So the gain is the shape
schedule's (5.2 times the clips per FLOP), not a higher mean learning rate; none beats linear in every seed;
none against sqrt (+9.5 points, higher in 4 of 5 seeds) is not resolved at 5 seeds, and none is the default for
its far smaller spread.

Departures: the schedule runs on budget progress, not epochs. SlowFast repeats the long cycle once inside
each learning-rate stage of a step schedule; our learning rate decays continuously with progress, so the long
cycle runs `cycles` times (default 3) over progress [0, 1 - final], each shape of a cycle getting an equal
share of progress (equal time is equal iterations, since a step costs about the same at every shape), and the
last `final` fraction (default 0.2) trains at the base shape's stage (with its short cycle, as above).
The learning rate is not scaled by default (above). Frames and sizes are rounded to whole tubelets and patches
(the ViT needs them; SlowFast rounds to whole frames and pixels), so multipliers hold "within rounding" at small
sizes. The position embedding is resampled per shape (cached per grid). BatchNorm grouping and precise BN from
the CNN original do not apply to LayerNorm ViTs and are left out.
"""

import math
from dataclasses import dataclass

from vtbench.core.budget import lr_factor
from vtbench.core.shape import BatchShape
from vtbench.errors import ConfigError

from .base import Method
from .card import Claim
from .params import Param
from .registry import register

LONG_FACTORS = ((0.25, 2**-0.5), (0.5, 2**-0.5), (0.5, 1.0), (1.0, 1.0))
SHORT_FACTORS = (0.5, 2**-0.5)
LR_SCALINGS = ("linear", "sqrt", "none")


# ---- the shapes of one long cycle, each stage with its short cycle ----------------------------------------


@dataclass(frozen=True)
class Stage:
    frames: int
    size: int
    multiplier: int  # the long-cycle batch factor: clips per step relative to the base batch, and the lr factor
    cycle: tuple[tuple[int, int], ...]  # (size, clips per step relative to the base batch) of each short-cycle step


def round_to(value: float, unit: int, what: str) -> int:
    rounded = int(round(value / unit)) * unit
    if rounded < unit:
        raise ConfigError(f"method 'multigrid': a {what} of {value:g} rounds to zero (units of {unit})")
    return rounded


def cycle_stages(base: BatchShape, tubelet: tuple[int, int, int], long_cycle: bool = True,
                 short_cycle: bool = True) -> list[Stage]:
    """The stages of one long cycle (the base shape alone without the long cycle). A stage (t, s) gets the batch
    factor round(T S^2 / (t s^2)); its short cycle steps through sizes 0.5 S and 0.707 S, then its own, the
    batch growing by round((s / size)^2) as SlowFast's ShortCycleBatchSampler does."""
    tt, p, _ = tubelet
    factors = LONG_FACTORS if long_cycle else ((1.0, 1.0),)
    stages = []
    for t_factor, s_factor in factors:
        frames = round_to(base.frames * t_factor, tt, f"stage's frames ({base.frames} x {t_factor:g})")
        size = round_to(base.size * s_factor, p, f"stage's size ({base.size} x {s_factor:.3f})")
        multiplier = max(1, round(base.frames * base.size**2 / (frames * size**2)))
        cycle = [(size, multiplier)]
        if short_cycle:
            sizes = [round_to(base.size * f, p, f"short-cycle size ({base.size} x {f:.3f})") for f in SHORT_FACTORS]
            cycle = [(s, multiplier * max(1, round((size / s) ** 2))) for s in sizes] + cycle
        stages.append(Stage(frames, size, multiplier, tuple(cycle)))
    return stages


# ---- SlowFast's epoch-based schedule over the same stages, for checking against the original --------------


@dataclass
class SlowFastSchedule:
    stages: list[tuple[int, list[int], int]]  # (lr step index, [batch factor, frames, size], end epoch)
    relative_lrs: list[float]  # of the long-cycle stages of the first lr step, before the gamma decay
    iteration_saving: float  # baseline iterations / multigrid iterations
    mean_batch: float  # clips per iteration over one long cycle, relative to the base batch


def slowfast_schedule(frames: int, crop: int, steps: list[int], max_epoch: int, long_cycle: bool = True,
                      short_cycle: bool = True, epoch_factor: float = 1.5) -> SlowFastSchedule:
    """SlowFast's MultigridSchedule.get_long_cycle_schedule (slowfast/utils/multigrid.py), written against its
    inputs, over the stages `cycle_stages` gives the method (whole frames and pixels: a 1x1x1 tubelet)."""
    stages = cycle_stages(BatchShape(1, frames, crop, 1), (1, 1, 1), long_cycle, short_cycle)
    average_batch = [sum(m for _, m in s.cycle) / len(s.cycle) for s in stages]
    mean_batch = sum(average_batch) / len(average_batch)
    if not long_cycle:  # short cycle only: stretched epochs at the base shape
        iterations = max_epoch * epoch_factor / average_batch[0]
        base = [1, frames, crop]
        return SlowFastSchedule([(0, base, int(max_epoch * epoch_factor))], [1.0], max_epoch / iterations, mean_batch)

    schedule, total_iterations = [], 0.0
    for index in range(len(steps) - 1):
        step_epochs = steps[index + 1] - steps[index]
        for stage, average in zip(stages, average_batch, strict=True):
            epochs = step_epochs * average / sum(average_batch)
            total_iterations += epochs / average
            schedule.append((index, [stage.multiplier, stage.frames, stage.size], epochs, average))
    saving = steps[-1] / total_iterations
    finetune = (max_epoch - steps[-1]) / saving * average_batch[-1]
    last = stages[-1]
    schedule.append((len(steps) - 1, [last.multiplier, last.frames, last.size], finetune, average_batch[-1]))

    scale = max_epoch * epoch_factor / sum(s[2] for s in schedule)
    result, iterations, cumulative, previous_end = [], 0.0, 0.0, 0
    for index, shape, epochs, average in schedule:
        cumulative += epochs * scale
        end = int(round(cumulative))
        result.append((index, shape, end))
        iterations += (end - previous_end) / average
        previous_end = end
    lrs = [float(shape[0]) for index, shape, _ in result if index == 0]
    return SlowFastSchedule(result, lrs, max_epoch / iterations, mean_batch)


# ---- the method: the same stages on budget progress ----------------------------------------------------------


@register
class Multigrid(Method):
    name = "multigrid"
    claim = Claim("Multigrid (Wu et al., CVPR 2020)", "the same accuracy in less time",
                  "4.5x less wall-clock (R50 SlowFast, K400), +0.8 top-1", "ViT-B, 16 x 224^2, long + short cycle")
    params = {
        "long_cycle": Param(bool, True, help="cycle through the long cycle's stages (fewer frames, smaller sizes, "
                                             "more clips)"),
        "short_cycle": Param(bool, True, help="within a stage, cycle through smaller sizes step by step"),
        "cycles": Param(int, 3, low=1, help="long cycles over the progress before the final phase"),
        "final": Param(float, 0.2, low=0, high=1, high_open=True, help="the last fraction of progress, trained at "
                                                                         "the base shape's stage"),
        "lr_scaling": Param(str, "none", choices=LR_SCALINGS, help="the learning rate times a stage's batch "
                                                                     "multiplier, its square root, or unchanged"),
        "final_short_cycle": Param(bool, True, help="keep the short cycle in the final phase"),
    }

    def __init__(self, long_cycle: bool = True, short_cycle: bool = True, cycles: int = 3, final: float = 0.2,
                 lr_scaling: str = "none", final_short_cycle: bool = True):
        self.long_cycle, self.short_cycle, self.cycles, self.final = long_cycle, short_cycle, cycles, final
        self.lr_scaling, self.final_short_cycle = lr_scaling, final_short_cycle
        self.stages: list[Stage] = []
        self.final_stage: Stage | None = None

    def prepare(self, run) -> None:
        tubelet, base = run.model.patch_embed.tubelet, run.base_shape
        self.stages = cycle_stages(base, tubelet, self.long_cycle, self.short_cycle)
        self.final_stage = cycle_stages(base, tubelet, False, self.short_cycle and self.final_short_cycle)[0]

    def stage(self, progress: float) -> Stage | None:
        """The long-cycle stage at `progress`, None in the final phase."""
        if progress >= 1 - self.final:
            return None
        position = progress / (1 - self.final) * self.cycles  # cycles done, fractional
        index = int((position % 1) * len(self.stages))
        return self.stages[min(index, len(self.stages) - 1)]

    def batch_shape(self, progress: float, step: int, base: BatchShape) -> BatchShape:
        stage = self.stage(progress) or self.final_stage
        size, clips = stage.cycle[step % len(stage.cycle)]
        stride = base.stride
        if stage.frames < base.frames:
            stride = (base.stride, base.stride * base.frames // stage.frames)
        return BatchShape(base.clips * clips, stage.frames, size, stride)

    def planned_shape(self, progress: float, step: int, base: BatchShape) -> BatchShape:
        return self.batch_shape(progress, step, base)  # a function of its arguments alone

    def lr_scale(self, progress: float, shape: BatchShape) -> float:
        stage = self.stage(progress)
        return scaled(1 if stage is None else stage.multiplier, self.lr_scaling)

    def mean_lr_scale(self, warmup: float, decay: str = "linear", points: int = 100_000) -> float:
        """The constant a baseline's learning rate would need for the same integral of the scheduled learning
        rate over the budget as this method's (the control that separates the shape schedule's gain from a
        higher mean learning rate)."""
        grid = [(k + 0.5) / points for k in range(points)]
        weights = [lr_factor(p, warmup, decay) for p in grid]
        return sum(w * self.lr_scale(p, None) for w, p in zip(weights, grid, strict=True)) / sum(weights)

    def log_columns(self, progress: float) -> dict:
        stage = self.stage(progress)
        return {"multigrid_stage": -1 if stage is None else self.stages.index(stage)}


def scaled(multiplier: int, scaling: str) -> float:
    return {"linear": float(multiplier), "sqrt": math.sqrt(multiplier), "none": 1.0}[scaling]
