import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from conftest import tiny

from vtbench.core.shape import BatchShape
from vtbench.engine.config import MethodSpec
from vtbench.engine.runner import execute
from vtbench.errors import ConfigError
from vtbench.methods import RunContext, build_method
from vtbench.methods.multigrid import Multigrid, cycle_stages, slowfast_schedule
from vtbench.models import build_model

K400 = dict(frames=32, crop=224, steps=[0, 94, 154, 196], max_epoch=239)


def test_slowfast_schedule_reproduces_the_k400_reference():
    schedule = slowfast_schedule(**K400, long_cycle=True, short_cycle=True)
    shapes = [shape for index, shape, _ in schedule.stages if index == 0]
    assert shapes == [[8, 8, 158], [4, 16, 158], [2, 16, 224], [1, 32, 224]]
    assert [shape for index, shape, _ in schedule.stages if index == 1] == shapes  # repeats per lr stage
    assert schedule.stages[-1][1] == [1, 32, 224]  # then the fine-tuning phase at the base shape
    assert schedule.relative_lrs == [8, 4, 2, 1]
    assert round(schedule.iteration_saving, 2) == 3.42
    assert round(slowfast_schedule(**K400, long_cycle=True, short_cycle=False).iteration_saving, 2) == 2.19
    assert round(slowfast_schedule(**K400, long_cycle=False, short_cycle=True).iteration_saving, 2) == 1.56


def _stepped(method, base, steps=24_000):
    """What a run asks of the method: (progress, clips, frames, size, lr scale) of every step of a budget."""
    rows = []
    for step in range(steps):
        progress = step / steps
        shape = method.batch_shape(progress, step, base)
        rows.append((progress, shape.clips, shape.frames, shape.size, method.lr_scale(progress, shape)))
    return pd.DataFrame(rows, columns=["progress", "clips", "frames", "size", "lr_scale"])


def test_the_method_runs_slowfast_k400_schedule_through_its_own_steps():
    """SlowFast's K400 configuration (T=32, S=224, three lr steps each with one long cycle, then fine-tuning),
    through the hooks a run calls."""
    base = BatchShape(1, 32, 224, 2)
    method = Multigrid(cycles=3, final=0.2, lr_scaling="linear")  # SlowFast's (SGD) scaling
    stub = SimpleNamespace(patch_embed=SimpleNamespace(tubelet=(1, 1, 1)))
    method.prepare(RunContext(tiny().resolve(), stub, base, 400, torch.device("cpu"), None))
    steps = _stepped(method, base)
    stage_steps = steps.iloc[2::3]  # the third step of each short cycle is at the stage's own size
    long_part = stage_steps[stage_steps["progress"] < 0.8]
    shapes = long_part[["clips", "frames", "size"]].drop_duplicates().values.tolist()
    assert shapes == [[8, 8, 158], [4, 16, 158], [2, 16, 224], [1, 32, 224]]  # SlowFast's K400 shapes
    in_order = long_part[["clips", "frames", "size"]].ne(long_part[["clips", "frames", "size"]].shift()).any(axis=1)
    assert in_order.sum() == 3 * 4  # three long cycles of four stages
    assert long_part.drop_duplicates(["clips"])["lr_scale"].tolist() == [8, 4, 2, 1]  # SlowFast's relative lrs
    # equal iterations per shape, as SlowFast gives each shape epochs in proportion to its mean batch: clips per
    # iteration average (16+8+8)/3, (8+4+4)/3, (8+4+2)/3, (4+2+1)/3 over the stages, 69/12 = 5.75 in all
    long_cycle = steps[steps["progress"] < 0.8]
    assert long_cycle["clips"].mean() == pytest.approx(69 / 12, rel=0.01)
    first = steps.iloc[:3]
    assert first[["clips", "size"]].values.tolist() == [[16, 112], [8, 158], [8, 158]]  # SlowFast's short cycle
    final = steps[steps["progress"] >= 0.8]
    assert final.iloc[:3][["clips", "size"]].values.tolist() == [[4, 112], [2, 158], [1, 224]]  # short cycle kept
    assert (final["frames"] == 32).all() and (final["lr_scale"] == 1).all()


BASE = BatchShape(8, 16, 64, 2)


def _prepared(base=BASE, **params):
    method = Multigrid(**params)
    model = build_model("vit_tiny", "joint", 10, base.frames, base.size, tubelet=(2, 8, 8))
    method.prepare(RunContext(tiny().resolve(), model, base, 10, torch.device("cpu"), None))
    return method, base


def test_long_cycle_keeps_clips_frames_pixels_about_constant():
    base = BatchShape(8, 16, 64, 2)
    stages = cycle_stages(base, (2, 8, 8), short_cycle=False)
    assert [(s.frames, s.size, s.multiplier) for s in stages] == [(4, 48, 7), (8, 48, 4), (8, 64, 2), (16, 64, 1)]
    method, _ = _prepared(short_cycle=False, cycles=1, final=0.2)
    volumes = []
    for p in (0.0, 0.25, 0.45, 0.65, 0.85):
        shape = method.batch_shape(p, 0, base)
        volumes.append(shape.clips * shape.frames * shape.size**2)
    assert max(volumes) / min(volumes) < 1.15  # equal within rounding to whole tubelets and patches
    assert method.batch_shape(0.85, 0, base) == base  # the final phase runs at the base shape


def test_short_cycle_sizes_and_multipliers():
    method, base = _prepared(cycles=1, final=0.2)
    at_full = [method.batch_shape(0.5, step, base) for step in range(3)]  # stage (8 frames, 64 px)
    assert [(s.size, s.clips) for s in at_full] == [(32, 8 * 2 * 4), (48, 8 * 2 * 2), (64, 8 * 2 * 1)]
    at_small = [method.batch_shape(0.05, step, base) for step in range(3)]  # stage (4 frames, 48 px)
    assert [(s.size, s.clips) for s in at_small] == [(32, 8 * 7 * 2), (48, 8 * 7), (48, 8 * 7)]


def test_stages_follow_progress_and_cycles():
    method, base = _prepared(cycles=3, final=0.2, short_cycle=False)
    stages = [method.stage(p / 1000) for p in range(1000)]
    in_order = [stages[0]] + [b for a, b in zip(stages, stages[1:], strict=False) if b != a]
    assert in_order == method.stages * 3 + [None]  # three long cycles, then the final phase
    lengths = [sum(1 for s in stages[:800] if s == stage) for stage in method.stages]
    assert all(abs(n - 200) <= 2 for n in lengths)  # each shape an equal share of progress
    assert stages[799] is not None and stages[800] is None


def test_learning_rate_scales_with_the_long_cycle_multiplier_only():
    method, base = _prepared(lr_scaling="linear", cycles=1, final=0.2)
    assert {method.lr_scale(0.05, method.batch_shape(0.05, s, base)) for s in range(3)} == {7}
    sqrt, _ = _prepared(lr_scaling="sqrt", cycles=1, final=0.2)
    assert sqrt.lr_scale(0.05, None) == pytest.approx(math.sqrt(7))
    none, _ = _prepared(lr_scaling="none", cycles=1, final=0.2)
    assert none.lr_scale(0.05, None) == 1.0
    assert method.lr_scale(0.9, None) == 1.0


def test_the_control_learning_rate_has_the_same_integral_as_the_schedule():
    method, _ = _prepared(lr_scaling="linear", cycles=1, final=0.2, short_cycle=False)  # multipliers 7, 4, 2, 1

    def mass(a, b):  # integral of the learning-rate factor 1 - p (no warm-up) over [a, b]
        return (b - a) - (b * b - a * a) / 2

    bounds = [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    expected = sum(m * mass(a, b) for m, a, b in zip([7, 4, 2, 1, 1], bounds, bounds[1:], strict=False)) / 0.5
    assert method.mean_lr_scale(warmup=0.0) == pytest.approx(expected, rel=1e-4)
    none, _ = _prepared(cycles=1, final=0.2)
    assert none.lr_scaling == "none" and none.mean_lr_scale(warmup=0.1) == pytest.approx(1.0)


def test_fewer_frames_draw_a_stride_per_clip():
    method, base = _prepared(cycles=1, final=0.2, short_cycle=False)
    assert method.batch_shape(0.05, 0, base).stride == (2, 8)  # 4 of 16 frames: up to 4x the base stride
    assert method.batch_shape(0.3, 0, base).stride == (2, 4)
    assert method.batch_shape(0.7, 0, base).stride == 2


@pytest.mark.parametrize("final_short_cycle", [True, False])
def test_steps_parquet_shows_the_schedule(final_short_cycle, tmp_path):
    params = {"cycles": 1, "final_short_cycle": final_short_cycle}
    config = tiny(frames=8, size=32, budget="30steps", methods=[MethodSpec("multigrid", params)],
                  model_args={"dim": 32, "depth": 1, "heads": 2, "tubelet": [2, 8, 8]})
    steps = pd.read_parquet(execute(config, tmp_path, progress_bar=False) / "steps.parquet")
    long_cycle = steps[steps["progress"] <= 0.8 - 1e-9]
    assert set(long_cycle["frames"]) == {2, 4, 8} and set(steps["size"]) == {16, 24, 32}
    final = steps[steps["progress"] > 0.8 + 1e-9]
    assert (final["frames"] == 8).all() and steps["multigrid_stage"].iloc[-1] == -1
    if final_short_cycle:  # as SlowFast's loader: the short cycle goes on at the base shape
        assert set(zip(final["size"], final["clips"], strict=True)) == {(16, 16), (24, 8), (32, 4)}
    else:
        assert (final["clips"] == 4).all() and (final["size"] == 32).all()
    assert steps["lr"].iloc[0] == 0


@pytest.mark.parametrize("params, message", [
    ({"final": 1.0}, r"final=1.0 is outside the allowed range \[0, 1\)"),
    ({"cycles": 0}, "cycles=0 must be a whole number"),
    ({"lr_scaling": "cubic"}, "lr_scaling='cubic' is not allowed"),
])
def test_bad_parameters_are_named(params, message):
    with pytest.raises(ConfigError, match=message):
        build_method(MethodSpec("multigrid", params))


def test_a_shape_that_rounds_to_zero_is_refused_before_training(tmp_path):
    config = tiny(frames=4, size=16, methods=[MethodSpec("multigrid")],
                  model_args={"dim": 32, "depth": 1, "heads": 2, "tubelet": [4, 8, 8]})
    with pytest.raises(ConfigError, match="rounds to zero"):
        execute(config, tmp_path, progress_bar=False)
    assert not any(tmp_path.iterdir())
