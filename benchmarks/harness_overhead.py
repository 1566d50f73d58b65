"""Harness overhead: the runner's training loop against a bare PyTorch loop, side by side in one process.

Both train the same model on the same data, batch and seed for the same number of steps. The runner's time
is its on-clock time (train_s: data, forward, backward, optimizer, plus its clock, logging rows, FLOP
counting and learning-rate schedule); the bare loop has none of those. Evaluation and checkpoints are off the
runner's clock, so they are not part of the comparison. Runs alternate; each repeat's overhead is its runner time
over its bare time, and the last line gives their median and worst.

    python benchmarks/harness_overhead.py [--steps 400] [--repeats 5]
"""

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from timm.optim import param_groups_weight_decay

from vtbench.datasets import build_dataset
from vtbench.engine.config import RunConfig
from vtbench.engine.results import SUMMARY, read_json
from vtbench.engine.runner import _seed_everything, execute
from vtbench.models import build_model


def bare_loop(config: RunConfig, steps: int) -> float:
    _seed_everything(config.seed)
    data = build_dataset(config.dataset, "train", config.seed, **config.data_args)
    model = build_model(config.model, config.arch, data.num_classes, config.frames, config.size)
    groups = param_groups_weight_decay(model, config.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=config.lr)
    began = time.perf_counter()
    for step in range(steps):
        first = step * config.batch_size
        video, labels = data.batch(range(first, first + config.batch_size), config.frames, config.size,
                                   config.stride, training=True)
        loss = F.cross_entropy(model(video), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
    loss.item()
    return time.perf_counter() - began


def runner_loop(config: RunConfig, steps: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        run_dir = execute(config, out, progress_bar=False)
        return read_json(run_dir / SUMMARY)["train_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    config = RunConfig(budget=f"{args.steps}steps", eval_clips=64).resolve()
    print(f"model {config.model}, batch {config.batch_size} x {config.frames} x {config.size}^2, "
          f"{args.steps} steps, {torch.get_num_threads()} threads")
    bare, runner, overheads = [], [], []
    for repeat in range(args.repeats):
        bare.append(bare_loop(config, args.steps))
        runner.append(runner_loop(config, args.steps))
        overheads.append(100 * (runner[-1] / bare[-1] - 1))
        print(f"repeat {repeat}: bare {bare[-1]:.2f}s, runner {runner[-1]:.2f}s, overhead {overheads[-1]:.1f}%")
    b, r = statistics.median(bare), statistics.median(runner)
    print(f"bare loop: {b / args.steps * 1000:.1f} ms/step; runner: {r / args.steps * 1000:.1f} ms/step")
    print(f"harness overhead: median {statistics.median(overheads):.1f}%, worst {max(overheads):.1f}% "
          f"({args.repeats} repeats)")


if __name__ == "__main__":
    main()
