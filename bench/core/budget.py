"""Training budgets, the budget clock and the progress-driven learning-rate schedule
(docs/design.md, "The budget clock").

A budget is an amount of one unit: device seconds, counted FLOPs, optimizer steps or training samples.
`progress = used / budget` drives every schedule, so one method definition fits any budget.
"""

import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from vtbench.errors import ConfigError

UNITS = ("s", "flops", "steps", "samples")
_TIME_UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(s|min|h|flops|steps|samples)\s*$", re.I)
LARGEST = 1e30  # above any real budget (1e30 FLOPs is a million H100-years); infinity is no budget
FORMS = "'20s', '5min', '2h' (device time), '3e12flops', '200steps' or '5000samples'"


@dataclass(frozen=True)
class Budget:
    amount: float
    unit: str  # one of UNITS; time budgets are held in seconds

    @classmethod
    def parse(cls, text: str) -> "Budget":
        match = _PATTERN.match(str(text))
        if not match:
            raise ConfigError(f"budget {text!r} is not understood; allowed forms: {FORMS}")
        amount, unit = float(match.group(1)), match.group(2).lower()
        if unit in _TIME_UNITS:
            amount, unit = amount * _TIME_UNITS[unit], "s"
        if not math.isfinite(amount) or amount > LARGEST:
            raise ConfigError(f"budget {text!r} is too large: at most {LARGEST:.0e} of any unit")
        if amount <= 0 or (unit in ("steps", "samples") and amount != int(amount)):
            raise ConfigError(f"budget {text!r} must be a positive amount (whole for steps and samples)")
        return cls(amount, unit)

    def __str__(self) -> str:
        """The canonical form: time in seconds, whole steps and samples (`1min` -> `60s`)."""
        amount = int(self.amount) if self.unit in ("steps", "samples") else format(self.amount, ".12g")
        return f"{amount}{self.unit}"


@dataclass
class Used:
    """What training has spent so far, in every unit at once."""

    s: float = 0.0
    flops: float = 0.0
    steps: int = 0
    samples: int = 0


class BudgetClock:
    """Counts what training spends. Time runs only between `start()` and `stop()`, less `off_clock()` spans.

    Time is device time: a run carried by several processes spends their wall time on each of their devices.
    `charge` is the share of every step's cost that is paid (1 for every real run): time and FLOPs are counted
    at that share, and steps and samples, which also index the data, are counted whole but weigh that share
    against a budget in their unit. Only a positive control charges less (vtbench.methods.control).
    On CUDA, `read(sync=True)` synchronises the device first, so queued kernels are paid for; the runner
    does that where it compares with the budget at a boundary (evaluation, logging, the end), not per step.
    """

    def __init__(self, budget: Budget, used: Used | None = None, device: torch.device | None = None,
                 devices: int = 1, charge: float = 1.0):
        if not 0 < charge <= 1:
            raise ConfigError(f"charge must lie in (0, 1], got {charge}")
        self.budget = budget
        self.charge = charge
        self.devices = devices  # processes carrying the run, each on its own device: time counts on every one
        self.used = used or Used()
        self._cuda = device is not None and device.type == "cuda"
        self._since: float | None = None
        self.off_clock_s: dict[str, float] = {}

    def start(self) -> None:
        self._since = time.perf_counter()

    def stop(self) -> None:
        self.read(sync=True)
        self._since = None

    def read(self, sync: bool = False) -> Used:
        """Bring `used.s` up to now and return `used`."""
        if self._since is not None:
            if sync and self._cuda:
                torch.cuda.synchronize()
            now = time.perf_counter()
            self.used.s += (now - self._since) * self.devices * self.charge
            self._since = now
        return self.used

    def add_step(self, samples: int, flops: float) -> None:
        self.used.steps += 1
        self.used.samples += samples
        self.used.flops += flops * self.charge

    def progress(self, sync: bool = False) -> float:
        """Progress now (brings the time up to date first)."""
        self.read(sync)
        return self.fraction()

    def fraction(self) -> float:
        """Progress as of the last read: used / budget in the budget's unit, at most 1."""
        used = self.used
        spent = {"s": used.s, "flops": used.flops, "steps": used.steps * self.charge,
                 "samples": used.samples * self.charge}
        return min(1.0, spent[self.budget.unit] / self.budget.amount)

    def state_dict(self) -> dict:
        return {"used": vars(self.used).copy(), "off_clock_s": dict(self.off_clock_s)}

    def load_state_dict(self, state: dict) -> None:
        self.used, self.off_clock_s = Used(**state["used"]), dict(state["off_clock_s"])

    @contextmanager
    def off_clock(self, what: str) -> Iterator[None]:
        """Time inside is not charged to the budget; it is recorded under `what` (eval, checkpoint, ...)."""
        self.read(sync=True)
        running, self._since = self._since, None
        began = time.perf_counter()
        try:
            yield
        finally:
            self.off_clock_s[what] = self.off_clock_s.get(what, 0.0) + time.perf_counter() - began
            if running is not None:
                self._since = time.perf_counter()


def lr_factor(progress: float, warmup: float, decay: str = "linear") -> float:
    """Learning-rate multiplier: linear warm-up over `warmup` of progress, then decay to 0 exactly at progress 1."""
    if not 0 <= warmup < 1:
        raise ConfigError(f"warmup must be a fraction of progress in [0, 1), got {warmup}")
    if decay not in ("linear", "cosine"):
        raise ConfigError(f"lr decay must be 'linear' or 'cosine', got {decay!r}")
    p = min(max(progress, 0.0), 1.0)
    if p < warmup:
        return p / warmup
    q = (p - warmup) / (1 - warmup)
    return 1 - q if decay == "linear" else 0.5 * (1 + math.cos(math.pi * q))
