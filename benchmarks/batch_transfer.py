"""How a decoded training batch reaches a CUDA model: its uint8 pixels copied from page-locked memory and normalised
on the GPU (what the loader does now, datasets/sampling.py `to_tensor(clips, "cuda")`), against normalising to float32
on the CPU and copying that (what it did before), side by side in one process, alternating rounds. Needs a CUDA GPU;
elsewhere it says so and exits.

    python benchmarks/batch_transfer.py [--clips 8] [--frames 16] [--size 224] [--rounds 7]

For each way, two times per batch (medians over rounds, with their range): the loader's, until the call returns
(what the step waits for when the loader runs in the training process), and until the batch is on the GPU
(synchronised). `measure` gives the same figures to a caller (benchmarks/gpu_check.py).
"""

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from vtbench.datasets import sampling


def measure(clips: int = 8, frames: int = 16, size: int = 224, rounds: int = 7, batches: int = 5) -> dict:
    """The two ways' times in ms (loader's and until on the GPU), their ratios, and the check that they agree."""
    device = torch.device("cuda")
    pixels = np.random.default_rng(0).integers(0, 256, (clips, frames, size, size, 3), dtype=np.uint8)
    ways = {"float32 from the CPU": lambda: sampling.to_tensor(pixels).to(device, non_blocking=True),
            "uint8, page-locked, normalised on the GPU": lambda: sampling.to_tensor(pixels, "cuda")}
    first = [way().cpu() for way in ways.values()]
    largest_difference = float((first[0] - first[1]).abs().max())
    times: dict[str, dict[str, list[float]]] = {name: {"loader_ms": [], "on_gpu_ms": []} for name in ways}
    for round_ in range(rounds):
        for name in ways if round_ % 2 == 0 else list(ways)[::-1]:
            torch.cuda.synchronize()
            began = time.perf_counter()
            for _ in range(batches):
                ways[name]()
            returned = time.perf_counter()
            torch.cuda.synchronize()
            done = time.perf_counter()
            times[name]["loader_ms"].append(1e3 * (returned - began) / batches)
            times[name]["on_gpu_ms"].append(1e3 * (done - began) / batches)
    figures = {name: {key: statistics.median(values) for key, values in kinds.items()}
               | {f"{key}_range": [min(values), max(values)] for key, values in kinds.items()}
               for name, kinds in times.items()}
    old, new = (figures[name] for name in ways)
    return {"batch": f"{clips} clips of {frames} x {size}^2", "ways": figures, "largest_difference": largest_difference,
            "loader_speedup": old["loader_ms"] / new["loader_ms"],
            "on_gpu_speedup": old["on_gpu_ms"] / new["on_gpu_ms"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("batch_transfer: no CUDA device here; this benchmark times copies to a GPU")
    figures = measure(args.clips, args.frames, args.size, args.rounds)
    print(f"{figures['batch']}, medians over {args.rounds} rounds [range]; largest difference "
          f"{figures['largest_difference']:.2g}")
    for name, way in figures["ways"].items():
        loader, on_gpu = ("[{:.2f}, {:.2f}]".format(*way[f"{key}_range"]) for key in ("loader_ms", "on_gpu_ms"))
        print(f"  {name:42s} loader {way['loader_ms']:7.2f} ms {loader}, "
              f"on the GPU {way['on_gpu_ms']:7.2f} ms {on_gpu}")
    print(f"uint8 against float32: the loader {figures['loader_speedup']:.2f}x as fast, the batch on the GPU "
          f"{figures['on_gpu_speedup']:.2f}x as soon")


if __name__ == "__main__":
    main()
