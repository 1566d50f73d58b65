"""Harness overhead: the runner's training loop against a bare PyTorch loop, step by step in one process.

Both train the same model on the same data, batch and seed. The runner's time is its on-clock time (train_s:
data, forward, backward, optimizer, plus its clock, logging rows, FLOP counting, learning-rate schedule and
CPU-share readings); the bare loop has none of those. Evaluation and checkpoints are off the runner's clock, so
they are not part of the comparison.

This machine's speed drifts by up to a fifth from one ten-second window to the next (a fixed matrix product,
timed back to back, varies that much), more than the overhead being measured: two loops run one after the
other (even bare, runner, runner, bare) compare the machine's moments, not the loops. So the loops are
interleaved step by step: the runner runs as it always does, and before each of its steps the bare loop takes
one step of its own, timed apart and taken off the runner's time. Both loops then see the same moments of the
machine, to within one step. Each repeat gives two overheads: of the total time, and the median over intervals
of 10 steps. A third figure needs no comparison: the share of the runner's on-clock time spent outside its
steps (clock, progress, schedule, log rows, CPU-share readings), from its own steps.parquet. The last lines give
the median and the worst of each.

    python benchmarks/harness_overhead.py [--steps 150] [--repeats 5] [--set frames=8 ...]
"""

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from timm.optim import param_groups_weight_decay

from vtbench.datasets import build_dataset
from vtbench.engine.config import RunConfig, apply, parse_set
from vtbench.engine.results import SUMMARY, read_json
from vtbench.engine.runner import Run, _seed_everything


class BareLoop:
    """A plain PyTorch training loop, one step at a time, each step timed."""

    def __init__(self, config: RunConfig):
        from vtbench.models import build_model

        self.config = config
        _seed_everything(config.seed)
        self.data = build_dataset(config.dataset, "train", config.seed, **config.data_args)
        self.model = build_model(config.model, config.arch, self.data.num_classes, config.frames, config.size)
        groups = param_groups_weight_decay(self.model, config.weight_decay)
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr)
        self.times: list[float] = []

    def step(self) -> None:
        config, began = self.config, time.perf_counter()
        first = len(self.times) * config.batch_size
        video, labels = self.data.batch(range(first, first + config.batch_size), config.frames, config.size,
                                        config.stride, training=True)
        loss = F.cross_entropy(self.model(video), labels, label_smoothing=config.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.optimizer.step()
        loss.item()
        self.times.append(time.perf_counter() - began)


class Interleaved(Run):
    """The runner unchanged, except that the bare loop takes one step before each of the runner's."""

    def __init__(self, config: RunConfig, run_dir: Path, bare: BareLoop):
        super().__init__(config, run_dir, progress_bar=False)
        self.bare = bare

    def _step(self, progress: float) -> None:
        self.bare.step()
        super()._step(progress)


def interleaved(config: RunConfig) -> tuple[float, float, list[float], float]:
    """(bare seconds, runner's own on-clock seconds, runner/bare per 10-step interval, runner seconds outside
    its steps), with the bare loop's steps taken off the runner's clock."""
    with tempfile.TemporaryDirectory() as out:
        run_dir = Path(out) / config.run_id()
        run = Interleaved(config, run_dir, BareLoop(config))
        run.train()
        rows = pd.read_parquet(run_dir / "steps.parquet")
        summary = read_json(run_dir / SUMMARY)
    assert summary["steps"] == len(run.bare.times), (summary["steps"], len(run.bare.times))
    bare = pd.Series(run.bare.times, index=range(1, len(run.bare.times) + 1)).cumsum()
    bare_at = bare.loc[rows["step"]].to_numpy()  # bare seconds up to each logged step
    own_at = rows["used_s"].to_numpy() - bare_at  # the runner's own on-clock seconds up to it
    ratios = [(own_at[0] / bare_at[0])] + [(own_at[i] - own_at[i - 1]) / (bare_at[i] - bare_at[i - 1])
                                          for i in range(1, len(rows))]
    bare_s, own_s = bare.iloc[-1], summary["train_s"] - bare.iloc[-1]
    inside = (rows["step_s"] * rows["steps"]).sum()  # each step's own time: data to optimizer, FLOPs settled
    return bare_s, own_s, ratios, own_s - inside


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], metavar="key=value",
                        help="a run setting, e.g. --set frames=8 (a shorter step, where the runner's share is larger)")
    args = parser.parse_args()
    config = RunConfig(budget=f"{args.steps}steps", eval_clips=64, eval_subset=64, eval_every=1.0,
                       eval_sweep=[], log_every=10)
    config = apply(config, parse_set(args.set), where="--set").resolve()
    print(f"model {config.model}, batch {config.batch_size} x {config.frames} x {config.size}^2, "
          f"{args.steps} steps per loop, {torch.get_num_threads()} threads")
    interleaved(dataclasses.replace(config, budget="10steps"))  # first-call costs of both, untimed
    total, steady, loop = [], [], []
    for repeat in range(args.repeats):
        bare_s, own_s, ratios, outside_s = interleaved(config)
        total.append(100 * (own_s / bare_s - 1))
        steady.append(100 * (statistics.median(ratios) - 1))
        loop.append(100 * outside_s / own_s)
        print(f"repeat {repeat}: bare {bare_s:.2f}s, runner {own_s:.2f}s, overhead {total[-1]:.1f}%; per 10-step "
              f"interval median {steady[-1]:.1f}% (range {100 * (min(ratios) - 1):.1f} to "
              f"{100 * (max(ratios) - 1):.1f}%); the runner's loop outside its steps {loop[-1]:.2f}%")
    print(f"runner's loop outside its steps: median {statistics.median(loop):.2f}%, worst {max(loop):.2f}%")
    print(f"harness overhead per 10-step interval: median {statistics.median(steady):.1f}%, "
          f"worst {max(steady):.1f}%")
    print(f"harness overhead in total time: median {statistics.median(total):.1f}%, worst {max(total):.1f}% "
          f"({args.repeats} repeats)")


if __name__ == "__main__":
    main()
