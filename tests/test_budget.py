import math
import time

import pytest

from vtbench.core.budget import Budget, BudgetClock, lr_factor
from vtbench.errors import ConfigError


@pytest.mark.parametrize(
    "text, amount, unit",
    [("20s", 20, "s"), ("5min", 300, "s"), ("2h", 7200, "s"), ("1.5h", 5400, "s"), ("3e12flops", 3e12, "flops"),
     ("200steps", 200, "steps"), ("5000samples", 5000, "samples"), (" 90S ", 90, "s")],
)
def test_budget_forms(text, amount, unit):
    budget = Budget.parse(text)
    assert (budget.amount, budget.unit) == (amount, unit)


@pytest.mark.parametrize("text", ["", "20", "twenty s", "5 parsecs", "0s", "-3steps", "2.5steps"])
def test_malformed_budget_names_the_allowed_forms(text):
    with pytest.raises(ConfigError, match="allowed forms|positive amount"):
        Budget.parse(text)


def test_clock_counts_steps_samples_and_flops():
    clock = BudgetClock(Budget.parse("4steps"))
    clock.start()
    for _ in range(3):
        clock.add_step(samples=8, flops=1e9)
    assert clock.progress() == pytest.approx(0.75)
    assert (clock.used.steps, clock.used.samples, clock.used.flops) == (3, 24, 3e9)
    clock.add_step(8, 1e9)
    assert clock.progress() == 1.0


def test_off_clock_time_is_recorded_apart_and_not_charged():
    clock = BudgetClock(Budget.parse("10s"))
    began = time.perf_counter()
    clock.start()
    time.sleep(0.05)
    with clock.off_clock("eval"):
        time.sleep(0.2)
    time.sleep(0.05)
    clock.stop()
    elapsed = time.perf_counter() - began
    assert clock.off_clock_s["eval"] >= 0.2
    assert 0.1 <= clock.used.s <= elapsed - clock.off_clock_s["eval"] + 1e-3  # everything but the off-clock span
    stopped = clock.used.s
    time.sleep(0.02)
    assert clock.read().s == stopped  # a stopped clock does not run


@pytest.mark.parametrize("decay", ["linear", "cosine"])
def test_lr_warms_up_then_reaches_zero_exactly_at_the_end(decay):
    assert lr_factor(0.0, 0.1, decay) == 0
    assert lr_factor(0.05, 0.1, decay) == pytest.approx(0.5)
    assert lr_factor(0.1, 0.1, decay) == pytest.approx(1.0)
    assert lr_factor(1.0, 0.1, decay) == 0
    values = [lr_factor(p / 100, 0.1, decay) for p in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_lr_decay_shapes():
    assert lr_factor(0.55, 0.1, "linear") == pytest.approx(0.5)
    assert lr_factor(0.55, 0.1, "cosine") == pytest.approx(0.5)
    assert lr_factor(0.325, 0.1, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert lr_factor(0.5, 0.0, "linear") == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="warmup"):
        lr_factor(0.5, 1.0)
