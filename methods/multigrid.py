"""Multigrid training (Wu, Girshick, He, Feichtenhofer, Kraehenbuehl, "A Multigrid Method for Efficiently
Training Video Models", CVPR 2020, arXiv 1912.00998; reference code facebookresearch/SlowFast,
slowfast/utils/multigrid.py and slowfast/datasets/multigrid_helper.py).

Training cycles through batch shapes (clips, frames, size) that keep clips x frames x pixels per step about
constant, so early steps see many small, short clips and the model ends at the base shape.

- Long cycle: stages with (temporal, spatial) factors (0.25, 0.707), (0.5, 0.707), (0.5, 1), (1, 1) of the
  base (T, S); a stage's shape (t, s) gets batch multiplier round(T S^2 / (t s^2)) (8, 4, 2, 1 for these
  factors) and a learning rate scaled by it (`lr_scaling`: linear, sqrt or none).
- Short cycle (`short_cycle`, on by default as in the paper): within a stage, steps cycle through sizes
  0.5 S and 0.707 S, then the stage's own size, with further batch multipliers round((s_stage / s)^2)
  (4, 2, 1 at full size; 2, 1, 1 at 0.707 S) and no learning-rate change.
- A stage with fewer frames samples each clip with its own stride between the base stride and
  base stride x T / t, so clips still cover up to the original time span.
- `slowfast_schedule` reproduces SlowFast's own epoch-based schedule (shapes, relative learning rates,
  iteration saving) from its inputs; a test checks it against the paper's K400 configuration.

Departures: the schedule runs on budget progress, not epochs. SlowFast repeats the long cycle once inside
each learning-rate stage of a step schedule; our learning rate decays continuously with progress, so the long
cycle runs `cycles` times (default 3) over progress [0, 1 - final], each shape of a cycle getting an equal
share of progress (equal time is equal iterations, since a step costs about the same at every shape), and the
last `final` fraction (default 0.2) trains at the base shape, so training ends on the evaluation shape.
Frames and sizes are rounded to whole tubelets and patches (the ViT needs them; SlowFast rounds to whole
frames and pixels), so multipliers hold "within rounding" at small sizes. The position embedding is resampled
per shape (cached per grid). BatchNorm grouping from the CNN original does not apply to LayerNorm ViTs and is
left out.
"""

import math
from dataclasses import dataclass

from vtbench.engine.shape import BatchShape
from vtbench.errors import ConfigError

from . import register
from .base import Method

LONG_FACTORS = ((0.25, 2**-0.5), (0.5, 2**-0.5), (0.5, 1.0), (1.0, 1.0))
SHORT_FACTORS = (0.5, 2**-0.5)
LR_SCALINGS = ("linear", "sqrt", "none")


# ---- SlowFast's epoch-based schedule, for checking against the original ----------------------------------


@dataclass
class SlowFastSchedule:
    stages: list[tuple[int, list[int], int]]  # (lr step index, [batch factor, frames, size], end epoch)
    relative_lrs: list[float]  # of the long-cycle stages of the first lr step, before the gamma decay
    iteration_saving: float  # baseline iterations / multigrid iterations


def slowfast_schedule(frames: int, crop: int, steps: list[int], max_epoch: int, long_cycle: bool = True,
                      short_cycle: bool = True, epoch_factor: float = 1.5,
                      long_factors=LONG_FACTORS, short_factors=SHORT_FACTORS) -> SlowFastSchedule:
    """SlowFast's MultigridSchedule.get_long_cycle_schedule, written against its inputs."""
    default_size = frames * crop**2

    def with_batch(shapes):
        return [[int(round(default_size / (t * s * s))), t, s] for t, s in shapes]

    if not long_cycle:  # short cycle only: stretched epochs at the base shape
        shapes = with_batch([(frames, crop * short_factors[0]), (frames, crop * short_factors[1]), (frames, crop)])
        average = sum(s[0] for s in shapes) / len(shapes)
        iterations = max_epoch * epoch_factor / average
        return SlowFastSchedule([(0, shapes[-1], int(max_epoch * epoch_factor))], [1.0], max_epoch / iterations)

    all_shapes, average_batch = [], []
    for t_factor, s_factor in long_factors:
        t, s = int(round(frames * t_factor)), int(round(crop * s_factor))
        pairs = [(t, crop * short_factors[0]), (t, crop * short_factors[1]), (t, s)] if short_cycle else [(t, s)]
        shapes = with_batch(pairs)
        all_shapes.append(shapes)
        average_batch.append(sum(b for b, _, _ in shapes) / len(shapes))

    schedule, total_iterations = [], 0.0
    for index in range(len(steps) - 1):
        step_epochs = steps[index + 1] - steps[index]
        for shapes, average in zip(all_shapes, average_batch, strict=True):
            epochs = step_epochs * average / sum(average_batch)
            total_iterations += epochs / average
            schedule.append((index, shapes[-1], epochs, average))
    saving = steps[-1] / total_iterations
    finetune = (max_epoch - steps[-1]) / saving * average_batch[-1]
    schedule.append((len(steps) - 1, all_shapes[-1][-1], finetune, average_batch[-1]))

    scale = max_epoch * epoch_factor / sum(s[2] for s in schedule)
    stages, iterations, cumulative, previous_end = [], 0.0, 0.0, 0
    for index, shape, epochs, average in schedule:
        cumulative += epochs * scale
        end = int(round(cumulative))
        stages.append((index, shape, end))
        iterations += (end - previous_end) / average
        previous_end = end
    lrs = [float(shape[0]) for index, shape, _ in stages if index == 0]
    return SlowFastSchedule(stages, lrs, max_epoch / iterations)


# ---- our progress-based schedule ---------------------------------------------------------------------------


def round_to(value: float, unit: int, what: str) -> int:
    rounded = int(round(value / unit)) * unit
    if rounded < unit:
        raise ConfigError(f"method 'multigrid': a {what} of {value:g} rounds to zero (units of {unit})")
    return rounded


@dataclass(frozen=True)
class Stage:
    frames: int
    size: int
    multiplier: int  # clips per step relative to the base batch


def long_cycle_stages(base: BatchShape, tubelet: tuple[int, int, int], factors=LONG_FACTORS) -> list[Stage]:
    tt, p, _ = tubelet
    stages = []
    for t_factor, s_factor in factors:
        frames = round_to(base.frames * t_factor, tt, f"stage's frames ({base.frames} x {t_factor:g})")
        size = round_to(base.size * s_factor, p, f"stage's size ({base.size} x {s_factor:.3f})")
        multiplier = max(1, round(base.frames * base.size**2 / (frames * size**2)))
        stages.append(Stage(frames, size, multiplier))
    return stages


def short_cycle_sizes(stage: Stage, base: BatchShape, patch: int) -> list[tuple[int, int]]:
    """(size, extra batch multiplier) of each step of the short cycle of a stage."""
    sizes = [round_to(base.size * f, patch, f"short-cycle size ({base.size} x {f:.3f})") for f in SHORT_FACTORS]
    return [(s, max(1, round((stage.size / s) ** 2))) for s in sizes] + [(stage.size, 1)]


@register
class Multigrid(Method):
    name = "multigrid"

    def __init__(self, long_cycle: bool = True, short_cycle: bool = True, cycles: int = 3, final: float = 0.2,
                 lr_scaling: str = "linear"):
        if not isinstance(cycles, int) or cycles < 1:
            raise ValueError(f"cycles={cycles!r} must be a whole number >= 1")
        if not 0 <= final < 1:
            raise ValueError(f"final={final!r} is outside the allowed range [0, 1)")
        if lr_scaling not in LR_SCALINGS:
            raise ValueError(f"lr_scaling={lr_scaling!r} is not allowed; choose one of {', '.join(LR_SCALINGS)}")
        self.long_cycle, self.short_cycle, self.cycles, self.final = long_cycle, short_cycle, cycles, final
        self.lr_scaling = lr_scaling
        self.stages: list[Stage] = []
        self.patch = 1

    def prepare(self, run) -> None:
        tubelet = run.model.patch_embed.tubelet
        self.patch = tubelet[1]
        base = run.base_shape
        full = Stage(base.frames, base.size, 1)
        self.stages = long_cycle_stages(base, tubelet) if self.long_cycle else [full]
        if self.short_cycle:
            for stage in self.stages:
                short_cycle_sizes(stage, base, self.patch)  # refuses sizes that round to zero, before training

    def stage(self, progress: float) -> Stage | None:
        """The long-cycle stage at `progress`, None in the final phase."""
        if progress >= 1 - self.final:
            return None
        position = progress / (1 - self.final) * self.cycles  # cycles done, fractional
        index = int((position % 1) * len(self.stages))
        return self.stages[min(index, len(self.stages) - 1)]

    def batch_shape(self, progress: float, step: int, base: BatchShape) -> BatchShape:
        stage = self.stage(progress)
        if stage is None:
            return base
        size, extra = stage.size, 1
        if self.short_cycle:
            size, extra = short_cycle_sizes(stage, base, self.patch)[step % 3]
        stride = base.stride
        if stage.frames < base.frames:
            stride = (base.stride, base.stride * base.frames // stage.frames)
        return BatchShape(base.clips * stage.multiplier * extra, stage.frames, size, stride)

    def lr_scale(self, progress: float, shape: BatchShape) -> float:
        stage = self.stage(progress)
        multiplier = 1 if stage is None else stage.multiplier
        return {"linear": multiplier, "sqrt": math.sqrt(multiplier), "none": 1.0}[self.lr_scaling]

    def log_columns(self, progress: float) -> dict:
        stage = self.stage(progress)
        return {"multigrid_stage": -1 if stage is None else self.stages.index(stage)}
