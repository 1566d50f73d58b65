"""How much of a paired spread is evaluation sampling? Re-score a study's runs on a larger synthetic evaluation set.

A comparison is paired by seed: method seed s minus baseline seed s, both scored on the same fixed evaluation clips.
Their difference still depends on which clips the set holds. This script loads the final weights of the baseline and
of one method at one budget, for every seed that has both, scores them on `--clips` validation clips (the first
`eval_clips` of which are the run's own evaluation set), and prints per seed the paired difference on each of
`--subsets` disjoint parts, the spread over seeds on each part and on all clips, and the evaluation-sampling sd of
one part's paired difference (within a seed, over parts, pooled).

    python benchmarks/evaluation_noise.py results/calibration --budget 6e11flops --method placebo [--clips 8192]
"""

import argparse
from pathlib import Path

import numpy as np
import torch
import yaml

from vtbench.datasets import build_dataset
from vtbench.engine import results
from vtbench.engine.config import RunConfig, apply
from vtbench.models import build_model


def finished_runs(study: Path, budget: str, method: str) -> dict[tuple[str, int], tuple[Path, RunConfig]]:
    """(kind, seed) -> (folder, resolved config) for the baseline and `method` at `budget`."""
    wanted = str(RunConfig(budget=budget).resolve().budget)
    out = {}
    for folder in sorted(p for p in study.iterdir() if (p / results.SUMMARY).is_file()):
        config = apply(RunConfig(), yaml.safe_load((folder / results.CONFIG).read_text())).resolve()
        label = " + ".join(str(m) for m in config.methods) or "baseline"
        if config.budget == wanted and label in ("baseline", method):
            out[("baseline" if label == "baseline" else "method", config.seed)] = (folder, config)
    return out


def correct(folder: Path, config: RunConfig, clips: list[tuple[torch.Tensor, torch.Tensor]], classes: int):
    model = build_model(config.model, config.arch, classes, config.frames, config.size, **config.model_args)
    model.load_state_dict(results.load_checkpoint(folder / results.CHECKPOINT)["model"])
    model.eval()
    with torch.no_grad():
        return np.concatenate([(model(x).argmax(1) == y).numpy() for x, y in clips])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("--budget", required=True)
    parser.add_argument("--method", required=True, help="the method's label, as the report writes it (placebo)")
    parser.add_argument("--clips", type=int, default=8192)
    parser.add_argument("--subsets", type=int, default=4)
    args = parser.parse_args()
    runs = finished_runs(args.study, args.budget, args.method)
    seeds = sorted(s for kind, s in runs if kind == "baseline" and ("method", s) in runs)
    if not seeds:
        raise SystemExit(f"{args.study}: no seed has both the baseline and {args.method} at {args.budget}")
    config = runs[("baseline", seeds[0])][1]
    if config.dataset != "synthetic":
        raise SystemExit("the synthetic evaluation set can be made any size; a real one is the size it is")
    val = build_dataset(config.dataset, "val", config.seed, length=args.clips, **config.data_args)
    clips = [val.batch(list(range(i, min(i + 64, args.clips))), config.frames, config.size, config.stride, False)
             for i in range(0, args.clips, 64)]
    scores = {key: correct(folder, c, clips, val.num_classes) for key, (folder, c) in runs.items()
              if key[1] in seeds}
    part = args.clips // args.subsets
    diff = np.array([[100 * (scores[("method", s)][k * part:(k + 1) * part].mean()
                             - scores[("baseline", s)][k * part:(k + 1) * part].mean()) for k in range(args.subsets)]
                     for s in seeds])
    print(f"{args.method} minus baseline at {args.budget}, seeds {seeds}, on {args.subsets} disjoint parts of "
          f"{part} clips (the first is the runs' own evaluation set where eval_clips = {part}):")
    for seed, row in zip(seeds, diff, strict=True):
        print(f"  seed {seed}: " + ", ".join(f"{d:+.2f}" for d in row))
    print("paired sd over seeds, each part: " + ", ".join(f"{v:.2f}" for v in diff.std(axis=0, ddof=1)))
    print(f"evaluation-sampling sd of one part's paired difference (within a seed, over parts, pooled): "
          f"{np.sqrt(diff.var(axis=1, ddof=1).mean()):.2f}")
    whole = diff.mean(axis=1)
    print(f"paired sd over seeds on all {args.clips} clips: {whole.std(ddof=1):.2f} "
          f"({', '.join(f'{d:+.2f}' for d in whole)})")


if __name__ == "__main__":
    main()
