"""Harness overhead: the runner's training loop against a bare PyTorch loop, side by side in one process.

Both train the same model on the same data, batch and seed for the same number of steps. The runner's time
is its on-clock time (train_s: data, forward, backward, optimizer, plus its clock, logging rows, FLOP
counting, learning-rate schedule and CPU-share readings); the bare loop has none of those. Evaluation and
checkpoints are off the runner's clock, so they are not part of the comparison.

This machine's speed drifts by several percent from one minute to the next, more than the overhead being
measured, so the two loops are interleaved finely: after one untimed warm-up of each (first-call costs), each
repeat runs bare, runner, runner, bare (ABBA, `--steps` each) and compares the sums, which cancels a linear
drift within the repeat. Each repeat gives two overheads: of the total time, and of the median step over
intervals of 10 steps (every on-clock cost the runner adds to a step, without the machine's transient slowdowns
and the one-off first step that counts the FLOPs). A third figure needs no comparison and no quiet machine: the
share of the runner's on-clock time spent outside its steps (clock, progress, schedule, log rows, CPU-share
readings), from its own steps.parquet. The last lines give the median and the worst of each.

    python benchmarks/harness_overhead.py [--steps 150] [--repeats 5]
"""

import argparse
import dataclasses
import itertools
import statistics
import tempfile
import time

import pandas as pd
import torch
import torch.nn.functional as F
from timm.optim import param_groups_weight_decay

from vtbench.datasets import build_dataset
from vtbench.engine.config import RunConfig
from vtbench.engine.results import SUMMARY, read_json
from vtbench.engine.runner import _seed_everything, execute
from vtbench.models import build_model

INTERVAL = 10  # steps; the runner's steps.parquet rows cover log_every = 10 steps


def bare_loop(config: RunConfig, steps: int) -> tuple[float, list[float]]:
    """(seconds, seconds per step of each interval of INTERVAL steps)."""
    _seed_everything(config.seed)
    data = build_dataset(config.dataset, "train", config.seed, **config.data_args)
    model = build_model(config.model, config.arch, data.num_classes, config.frames, config.size)
    groups = param_groups_weight_decay(model, config.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=config.lr)
    began = time.perf_counter()
    marks = [began]
    for step in range(steps):
        first = step * config.batch_size
        video, labels = data.batch(range(first, first + config.batch_size), config.frames, config.size,
                                   config.stride, training=True)
        loss = F.cross_entropy(model(video), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        if (step + 1) % INTERVAL == 0:
            loss.item()
            marks.append(time.perf_counter())
    loss.item()
    return time.perf_counter() - began, [(b - a) / INTERVAL for a, b in itertools.pairwise(marks)]


def runner_loop(config: RunConfig, steps: int) -> tuple[float, list[float], float]:
    """(on-clock seconds, seconds per step of each logged interval, on-clock seconds outside the steps)."""
    with tempfile.TemporaryDirectory() as out:
        run_dir = execute(config, out, progress_bar=False)
        rows = pd.read_parquet(run_dir / "steps.parquet")
        per_step = (rows["used_s"].diff() / rows["step"].diff()).dropna()
        first = rows["used_s"].iloc[0] / rows["step"].iloc[0]
        train_s = read_json(run_dir / SUMMARY)["train_s"]
        inside = (rows["step_s"] * rows["steps"]).sum()  # each step's own time: data to optimizer, FLOPs settled
        return train_s, [first, *per_step.tolist()], train_s - inside


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    config = RunConfig(budget=f"{args.steps}steps", eval_clips=64, eval_subset=64, eval_every=1.0,
                       eval_sweep=[]).resolve()
    print(f"model {config.model}, batch {config.batch_size} x {config.frames} x {config.size}^2, "
          f"{args.steps} steps per loop, {torch.get_num_threads()} threads")
    warm = dataclasses.replace(config, budget="10steps")
    bare_loop(warm, 10), runner_loop(warm, 10)
    total, steady, loop = [], [], []
    for repeat in range(args.repeats):
        first, second, third, fourth = (bare_loop(config, args.steps), runner_loop(config, args.steps),
                                        runner_loop(config, args.steps), bare_loop(config, args.steps))
        bare_s, runner_s = first[0] + fourth[0], second[0] + third[0]
        bare_step = statistics.median(first[1] + fourth[1])
        runner_step = statistics.median(second[1] + third[1])
        total.append(100 * (runner_s / bare_s - 1))
        steady.append(100 * (runner_step / bare_step - 1))
        loop.append(100 * (second[2] + third[2]) / runner_s)
        print(f"repeat {repeat}: bare {bare_s:.2f}s, runner {runner_s:.2f}s, overhead {total[-1]:.1f}%; median step "
              f"{1000 * bare_step:.1f} against {1000 * runner_step:.1f} ms, overhead {steady[-1]:.1f}%; "
              f"the runner's loop outside its steps {loop[-1]:.2f}%")
    print(f"runner's loop outside its steps (same run, immune to drift): median {statistics.median(loop):.2f}%, "
          f"worst {max(loop):.2f}%")
    print(f"harness overhead in total time: median {statistics.median(total):.1f}%, worst {max(total):.1f}%")
    print(f"harness overhead per step (median of {INTERVAL}-step intervals): median {statistics.median(steady):.1f}%, "
          f"worst {max(steady):.1f}% ({args.repeats} repeats)")


if __name__ == "__main__":
    main()
