"""One process against two (torch.distributed DDP, gloo on the CPU) on this machine: the same run, the same global
batch, side by side.

Each repeat trains the default workload for `--steps` steps once in one process (all the machine's threads) and
once in two (the launcher gives each rank its share of the threads), in alternating order, and compares the
step losses (they should agree to float reduction error) and the wall time per training step (on-clock time; a
two-process run's clock counts device time, twice its wall time). The last line gives the median time per step
of each and their ratio.

    python benchmarks/ddp.py [--steps 100] [--repeats 3] [--set key=value ...]
"""

import argparse
import statistics
import tempfile
from pathlib import Path

import pandas as pd
import torch

from vtbench.engine.config import RunConfig, apply, parse_set
from vtbench.engine.launch import launch
from vtbench.engine.results import SUMMARY, read_json
from vtbench.engine.runner import execute


def one_run(config: RunConfig, nproc: int, out: Path) -> tuple[float, list[float]]:
    """(wall seconds per step, the loss of each logged interval)."""
    config = apply(config, {"nproc": nproc}).resolve()
    run_dir = launch(config, out, progress_bar=False) if nproc > 1 else execute(config, out, progress_bar=False)
    summary = read_json(run_dir / SUMMARY)
    assert summary["status"] == "completed", summary
    return summary["train_wall_s"] / summary["steps"], pd.read_parquet(run_dir / "steps.parquet")["loss"].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="key=value", help="a run setting")
    args = parser.parse_args()
    config = RunConfig(budget=f"{args.steps}steps", eval_clips=64, eval_subset=64, eval_every=1.0, eval_sweep=[])
    config = apply(config, parse_set(args.set), where="--set")
    resolved = config.resolve()
    print(f"model {resolved.model}, global batch {resolved.batch_size} x {resolved.frames} x {resolved.size}^2, "
          f"{args.steps} steps, {torch.get_num_threads()} threads in all")
    per_step: dict[int, list[float]] = {1: [], 2: []}
    worst_loss = 0.0
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            order = (1, 2) if repeat % 2 == 0 else (2, 1)
            losses = {}
            for nproc in order:
                step_s, losses[nproc] = one_run(config, nproc, Path(folder) / f"r{repeat}-n{nproc}")
                per_step[nproc].append(step_s)
            difference = max(abs(a - b) for a, b in zip(losses[1], losses[2], strict=True))
            worst_loss = max(worst_loss, difference)
            one, two = per_step[1][-1], per_step[2][-1]
            print(f"repeat {repeat}: one process {1000 * one:.1f} ms/step, two {1000 * two:.1f} ms/step; largest "
                  f"difference of a logged loss {difference:.2e}")
    one, two = statistics.median(per_step[1]), statistics.median(per_step[2])
    print(f"largest loss difference over {args.repeats} repeats: {worst_loss:.2e}")
    print(f"time per step, median of {args.repeats}: one process {1000 * one:.1f} ms (range "
          f"{1000 * min(per_step[1]):.1f}-{1000 * max(per_step[1]):.1f}), two processes {1000 * two:.1f} ms (range "
          f"{1000 * min(per_step[2]):.1f}-{1000 * max(per_step[2]):.1f}); two / one = {two / one:.2f}")


if __name__ == "__main__":
    main()
