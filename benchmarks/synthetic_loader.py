"""Should a CPU run render its synthetic clips in a worker process, as a DataLoader would? Side by side.

The default run renders each batch in the training process, between steps, and on a CPU it waits for it (about
15% of its time here: docs/data.md). A loader that keeps up would render the next batch in a worker process
while the step trains. This script trains the default model on the default batch, interleaved in one process so
that the machine's drift hits all alike, (a) rendering in line, (b) with one spawned worker (one torch thread)
rendering the next batch ahead, training on 2 threads, and (c) the same with training on 1 thread, so that the
worker has a core of its own. It prints the median time per step over repeats, with its range, and the share of
it spent waiting for the batch.

    python benchmarks/synthetic_loader.py [--repeats 6] [--steps 10]
"""

import argparse
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import torch
import torch.nn.functional as F

from vtbench.datasets.synthetic import SyntheticVideos
from vtbench.models import build_model

FRAMES, SIZE, STRIDE, BATCH = 16, 32, 2, 16
_worker_data: SyntheticVideos | None = None


def _start_worker() -> None:
    global _worker_data
    torch.set_num_threads(1)
    _worker_data = SyntheticVideos("train", seed=0)


def _render(first: int) -> tuple[torch.Tensor, torch.Tensor]:
    return _worker_data.batch(range(first, first + BATCH), FRAMES, SIZE, STRIDE, True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--steps", type=int, default=10, help="training steps per measurement")
    args = parser.parse_args()
    model = build_model("vit_tiny", "joint", 10, FRAMES, SIZE, pos_embed="sincos")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = SyntheticVideos("train", seed=0)
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker)
    pool.submit(_render, 0).result()  # started and warm
    modes = {"in line, 2 threads": (2, False), "worker ahead, 2 threads": (2, True),
             "worker ahead, 1 thread": (1, True)}
    per_step = {mode: [] for mode in modes}
    waiting = {mode: [] for mode in modes}
    first = 0
    for _ in range(args.repeats):
        for mode, (threads, worker) in modes.items():
            torch.set_num_threads(threads)
            began, waited = time.perf_counter(), 0.0
            ahead = pool.submit(_render, first) if worker else None
            for _ in range(args.steps):
                asked = time.perf_counter()
                if worker:
                    clips, labels = ahead.result()
                    ahead = pool.submit(_render, first + BATCH)
                else:
                    clips, labels = data.batch(range(first, first + BATCH), FRAMES, SIZE, STRIDE, True)
                waited += time.perf_counter() - asked
                first += BATCH
                loss = F.cross_entropy(model(clips), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            elapsed = time.perf_counter() - began
            if ahead is not None:
                ahead.result()
            per_step[mode].append(elapsed / args.steps)
            waiting[mode].append(waited / elapsed)
    pool.shutdown()
    print(f"default model, batch of {BATCH} clips of {FRAMES} frames x {SIZE} px; medians over {args.repeats} "
          f"repeats of {args.steps} steps [range]")
    for mode in modes:
        times, shares = per_step[mode], waiting[mode]
        print(f"  {mode:26s} {1e3 * statistics.median(times):6.1f} ms a step [{1e3 * min(times):.1f}, "
              f"{1e3 * max(times):.1f}], waiting {100 * statistics.median(shares):4.1f}% [{100 * min(shares):.1f}, "
              f"{100 * max(shares):.1f}]")
    inline = statistics.median(per_step["in line, 2 threads"])
    print("time a step against rendering in line: " + ", ".join(
        f"{mode} {statistics.median(per_step[mode]) / inline:.2f}x" for mode in modes if mode != "in line, 2 threads"))


if __name__ == "__main__":
    main()
