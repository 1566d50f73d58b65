"""Multigrid throughput: training clips seen per second of device time, multigrid against the baseline over
one long cycle (cycles=1, no final phase), the two runs side by side in one process.

    python benchmarks/multigrid.py [--budget 20s] [--short-cycle]
"""

import argparse
import tempfile

from vtbench.engine.config import MethodSpec, RunConfig
from vtbench.engine.results import SUMMARY, read_json
from vtbench.engine.runner import execute


def clips_per_second(methods: list[MethodSpec], budget: str) -> tuple[float, dict]:
    config = RunConfig(budget=budget, methods=methods, eval_clips=64, eval_every=1.0)
    with tempfile.TemporaryDirectory() as out:
        summary = read_json(execute(config, out, progress_bar=False) / SUMMARY)
    return summary["samples"] / summary["train_s"], summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="20s")
    parser.add_argument("--short-cycle", action="store_true", help="also cycle through short-cycle sizes")
    args = parser.parse_args()
    multigrid = MethodSpec("multigrid", {"cycles": 1, "final": 0.0, "short_cycle": args.short_cycle})
    base_rate, base = clips_per_second([], args.budget)
    grid_rate, grid = clips_per_second([multigrid], args.budget)
    print(f"baseline: {base_rate:.0f} clips/s ({base['samples']} clips, {base['steps']} steps)")
    print(f"multigrid ({multigrid}): {grid_rate:.0f} clips/s ({grid['samples']} clips, {grid['steps']} steps)")
    print(f"multigrid/baseline clips per second: {grid_rate / base_rate:.2f}")


if __name__ == "__main__":
    main()
