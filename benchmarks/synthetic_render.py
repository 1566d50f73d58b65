"""What share of a default CPU run goes to rendering its clips? Rendering a batch against training on it, side by side.

On the CPU the synthetic clips are rendered in the training process, between steps (`data_wait_s` in summary.json,
`data_ahead: false`; made in line, a run is data-bound only above half of the clock, docs/data.md). This script
times, interleaved in one process so that the machine's drift hits all alike: rendering a training batch of the
default shape (16 clips of 16 frames at 32 px, stride 2), the same with the renderer of an earlier git revision
(`--before REV`, which must render bitwise the same clips, checked), and one training step of the default model on
it (forward, backward, AdamW). It prints the medians over repeats with their range, and the share of a step's time
each renderer would make the run wait.

    python benchmarks/synthetic_render.py [--before 3745802] [--repeats 15] [--batches 5] [--threads N]
"""

import argparse
import importlib.util
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from scipy.stats import binomtest

from vtbench.datasets.synthetic import SyntheticVideos
from vtbench.models import build_model


def renderer_at(revision: str):
    """The synthetic data module as it was at a git revision, imported from its text."""
    source = subprocess.run(["git", "show", f"{revision}:datasets/synthetic.py"], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).resolve().parent.parent).stdout
    folder = Path(tempfile.mkdtemp())
    (folder / "synthetic_before.py").write_text(source)
    spec = importlib.util.spec_from_file_location("synthetic_before", folder / "synthetic_before.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="also time the renderer of this git revision")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batches", type=int, default=5, help="batches timed in a row per measurement")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frames, size, stride, batch = 16, 32, 2, 16
    renderers = {"render": SyntheticVideos("train", seed=0)}
    if args.before:
        renderers[f"render at {args.before}"] = renderer_at(args.before).SyntheticVideos("train", seed=0)
    model = build_model("vit_tiny", "joint", 10, frames, size, pos_embed="sincos")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    next_index = 0

    def render(videos) -> tuple[float, torch.Tensor, torch.Tensor]:
        nonlocal next_index
        start = time.perf_counter()
        for _ in range(args.batches):
            clips, labels = videos.batch(range(next_index, next_index + batch), frames, size, stride, True)
            next_index += batch
        return (time.perf_counter() - start) / args.batches, clips, labels

    def step(clips, labels) -> float:
        start = time.perf_counter()
        for _ in range(args.batches):
            loss = F.cross_entropy(model(clips), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return (time.perf_counter() - start) / args.batches

    same = [videos.batch(range(batch), frames, size, stride, True)[0] for videos in renderers.values()]
    if not all(torch.equal(same[0], other) for other in same[1:]):
        raise SystemExit(f"the renderer at {args.before} draws other clips: no like-for-like comparison")
    times: dict[str, list[float]] = {name: [] for name in renderers}
    times["training step"] = []
    for _ in range(args.repeats):
        for name, videos in renderers.items():
            seconds, clips, labels = render(videos)
            times[name].append(seconds)
        times["training step"].append(step(clips, labels))
    print(f"batch of {batch} clips, {frames} frames x {size} px, stride {stride}; {args.threads} threads; "
          f"medians over {args.repeats} repeats of {args.batches} batches [range]")
    for name, values in times.items():
        print(f"  {name:22s} {1e3 * statistics.median(values):7.1f} ms  [{1e3 * min(values):.1f}, "
              f"{1e3 * max(values):.1f}]")
    for name in renderers:
        shares = [r / (r + s) for r, s in zip(times[name], times["training step"], strict=True)]
        print(f"  wait share, {name:22s} {100 * statistics.median(shares):5.1f}%  [{100 * min(shares):.1f}, "
              f"{100 * max(shares):.1f}]")
    if args.before:
        ratios = [b / a for a, b in zip(*(times[name] for name in renderers), strict=True)]
        faster = sum(r > 1 for r in ratios)
        print(f"the renderer now is {statistics.median(ratios):.2f}x [{min(ratios):.2f}, {max(ratios):.2f}] the speed "
              f"of the one at {args.before}, faster in {faster} of {len(ratios)} interleaved repeats "
              f"(sign test p = {binomtest(faster, len(ratios)).pvalue:.2g})")


if __name__ == "__main__":
    main()
