"""The instrument controls: a positive control whose clock pays a known share of each step, and a placebo that
differs from the baseline by its random stream alone."""

import json

import pandas as pd
import pytest
from conftest import tiny

from vtbench.core.budget import Budget, BudgetClock
from vtbench.engine.config import MethodSpec, RunConfig
from vtbench.engine.runner import execute
from vtbench.errors import ConfigError
from vtbench.methods import build_method
from vtbench.methods.base import Seeds


def test_a_charged_clock_pays_its_share_of_time_flops_and_counted_steps():
    clock = BudgetClock(Budget.parse("4steps"), charge=0.5)
    clock.start()
    for _ in range(4):
        clock.add_step(samples=8, flops=1e9)
    assert clock.progress() == pytest.approx(0.5)  # four steps weigh two against a budget of steps
    assert (clock.used.steps, clock.used.samples, clock.used.flops) == (4, 32, 2e9)  # counts stay whole
    with pytest.raises(ConfigError, match="charge"):
        BudgetClock(Budget.parse("4steps"), charge=0)


def _summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def test_the_positive_control_trains_what_the_baseline_trains_at_twice_its_budget(tmp_path):
    control = execute(tiny(budget="8steps", methods=[MethodSpec("control", {"speedup": 2})]), tmp_path / "c",
                      progress_bar=False)
    baseline = execute(tiny(budget="16steps"), tmp_path / "b", progress_bar=False)
    c, b = _summary(control), _summary(baseline)
    assert c["steps"] == b["steps"] == 16 and c["expected_speedup"] == 2.0
    assert c["total_flops"] == pytest.approx(b["total_flops"] / 2)  # it is charged half of what it did
    loss = [pd.read_parquet(d / "steps.parquet")["loss"].tolist() for d in (control, baseline)]
    assert loss[0] == loss[1]  # the same training, step for step
    assert c["top1"] == b["top1"]


def test_the_positive_control_pays_a_share_of_device_time(tmp_path):
    control = _summary(execute(tiny(budget="1s", methods=[MethodSpec("control", {"speedup": 4})]), tmp_path / "c",
                               progress_bar=False))
    baseline = _summary(execute(tiny(budget="1s"), tmp_path / "b", progress_bar=False))
    assert 1.0 <= control["train_s"] < 1.5
    assert control["steps"] > 2 * baseline["steps"]  # about four times the steps in the same charged time


def test_the_placebo_draws_another_random_stream_and_changes_nothing_else(tmp_path):
    placebo = execute(tiny(methods=[MethodSpec("placebo", {})]), tmp_path / "p", progress_bar=False)
    baseline = execute(tiny(), tmp_path / "b", progress_bar=False)
    again = execute(tiny(methods=[MethodSpec("placebo", {})]), tmp_path / "again", progress_bar=False)
    losses = [pd.read_parquet(d / "steps.parquet")["loss"].tolist() for d in (placebo, baseline, again)]
    assert losses[0] != losses[1] and losses[0] == losses[2]  # independent of the baseline, reproducible itself
    assert _summary(placebo)["expected_speedup"] == 1.0 and _summary(placebo)["steps"] == _summary(baseline)["steps"]
    other = build_method(MethodSpec("placebo", {"stream": 2}))
    placebo = build_method(MethodSpec("placebo", {}))
    assert len({placebo.derived_seed(s) for s in range(3)} | {other.derived_seed(0)}) == 4


@pytest.mark.parametrize("spec", [MethodSpec("control", {"speedup": 0.5}), MethodSpec("placebo", {"stream": 0}),
                                  MethodSpec("placebo", {"stream": 1.5})])
def test_bad_control_parameters_are_refused_naming_them(spec):
    with pytest.raises(ConfigError, match="speedup|stream"):
        build_method(spec)


def test_the_placebo_varies_what_it_is_asked_to_and_keeps_the_rest():
    seeds = Seeds(3, 3)
    weights = build_method(MethodSpec("placebo", {})).random_seeds(seeds)  # the default
    data = build_method(MethodSpec("placebo", {"vary": "data"})).random_seeds(seeds)
    both = build_method(MethodSpec("placebo", {"vary": "all"})).random_seeds(seeds)
    assert weights.data == 3 and weights.weights != 3
    assert data.weights == 3 and data.data != 3
    assert both.weights != 3 and both.data != 3


def test_a_changed_default_makes_another_run_and_finished_runs_stay_found():
    def run_id(params, **settings):
        return RunConfig(methods=[MethodSpec("placebo", params)], budget="6e11flops", eval_clips=2048, eval_subset=512,
                         eval_every=0.25, eval_sweep=[], **settings).resolve().run_id()

    # the calibration's placebo of seed 0, made before `vary` existed (when it varied all) and before the run's
    # position table was stated (it was the learned one), keeps its id
    assert run_id({"vary": "all"}, model_args={"pos_embed": "separable"}) == "8eb02a08ebad"
    assert run_id({"vary": "all"}) != "8eb02a08ebad"  # the default table is now the fixed one: another run
    assert run_id({}) == run_id({"vary": "weights"}) != run_id({"vary": "all"})
