"""Video loading against training: clips per second decoded from the original files, from a re-encoded copy
(`vtbench data reencode`: short side 128, a keyframe every 16 frames), from the decoded cache and with repeated
sampling (`data_args.repeats: 2`), with 0, 1 and 2 decoding workers, beside the default model's training throughput
here and the derived consumption of ViT-B over 16 x 224^2 on an H100 (bf16 peak from bench/engine/mfu.py at 35%
MFU), all measured in one process on videos this script encodes (UCF101-like: 320 x 240, 25 fps, 5 s, H.264).

    python benchmarks/video_loading.py [--videos 24] [--batches 12] [--repeats 3]

The cache should load clips at least 5x faster than the model consumes them. The line before the last gives each
source's clips/s per decoding core and the cores ViT-B on an H100 would need from it; the last line sets the
decoders (PyAV, TorchCodec, and TorchCodec on the GPU where torch sees one; decoding in the training process) side by
side, and records their medians for `data_args.decoder: auto`.
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from vtbench.datasets import build_dataset
from vtbench.datasets.cache import build_cache
from vtbench.datasets.reencode import reencode
from vtbench.engine.config import RunConfig
from vtbench.engine.estimate import estimate
from vtbench.engine.feeding import gpu_peak

# the originals' short side is 240: 256 would leave them as they are; 128 still holds a 112 or 64 px training crop
REENCODED_SHORT_SIDE = 128


def encode(path: Path, frames: int, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        base = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        for k in range(frames):  # a textured scene panning right: real work for the decoder
            image = np.roll(base, 3 * k, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def loading_rate(dataset, config: RunConfig, batches: int) -> float:
    dataset.batch(range(config.batch_size), config.frames, config.size, config.stride, training=True)  # warm up
    began = time.perf_counter()
    first = config.batch_size
    for b in range(batches):
        indices = range(first + b * config.batch_size, first + (b + 1) * config.batch_size)
        dataset.batch(indices, config.frames, config.size, config.stride, training=True)
    return batches * config.batch_size / (time.perf_counter() - began)


def training_rate(config: RunConfig, steps: int = 30) -> float:
    from vtbench.models import build_model

    model = build_model(config.model, config.arch, 10, config.frames, config.size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    video = torch.randn(config.batch_size, 3, config.frames, config.size, config.size)
    labels = torch.randint(0, 10, (config.batch_size,))
    for step in range(steps + 5):
        if step == 5:
            began = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(video), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * config.batch_size / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats of the decoder comparison")
    args = parser.parse_args()
    config = RunConfig().resolve()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for split, count in (("train", args.videos), ("val", 3)):
            for n in range(count):
                encode(root / split / f"class{n % 3}" / f"v{n}.mp4", 125, rng)
        model = training_rate(config)
        print(f"model ({config.model}, batch {config.batch_size} x {config.frames} x {config.size}^2, stride "
              f"{config.stride}): trains {model:.0f} clips/s")
        rates = {}
        for workers in (0, 1, 2):
            data = build_dataset(f"folder:{root}", "train", 0, workers=workers, cache=False)
            rates["decode", workers] = loading_rate(data, config, args.batches)
            data.close()
            print(f"decoded from files, {workers} workers: {rates['decode', workers]:.0f} clips/s")
        copy = Path(folder + "-reencoded")
        began = time.perf_counter()
        reencode("folder", root, copy, short=REENCODED_SHORT_SIDE, gop=16, progress=False, say=lambda line: None)
        print(f"re-encoded copy (short side {REENCODED_SHORT_SIDE}, a keyframe every 16 frames) written in "
              f"{time.perf_counter() - began:.1f} s")
        for workers in (0, 2):
            data = build_dataset(f"folder:{copy}", "train", 0, workers=workers, cache=False)
            rates["reencoded", workers] = loading_rate(data, config, args.batches)
            data.close()
            print(f"decoded from the re-encoded copy, {workers} workers: {rates['reencoded', workers]:.0f} clips/s")
        for workers in (0, 2):
            data = build_dataset(f"folder:{root}", "train", 0, workers=workers, cache=False, repeats=2)
            rates["repeats 2", workers] = loading_rate(data, config, args.batches)
            data.close()
            print(f"decoded from files, repeats 2, {workers} workers: {rates['repeats 2', workers]:.0f} clips/s")
        shutil.rmtree(copy, ignore_errors=True)
        began = time.perf_counter()
        done = build_cache("folder", root, config.size, progress=False)
        print(f"cache: {done['videos']} videos, {done['bytes'] / 2**20:.0f} MiB, built in "
              f"{time.perf_counter() - began:.1f} s")
        for workers in (0, 1, 2):
            data = build_dataset(f"folder:{root}", "train", 0, workers=workers)
            rates["cache", workers] = loading_rate(data, config, args.batches * 10)
            data.close()
            print(f"read from the cache, {workers} workers: {rates['cache', workers]:.0f} clips/s")
        decoders_line = compare_decoders(root, config, args.batches, args.repeats)
    best_decode = max(rates["decode", w] for w in (0, 1, 2))
    best_cache = max(rates["cache", w] for w in (0, 1, 2))
    print(f"cache/decode loading: {best_cache / best_decode:.1f}x (best of each)", file=sys.stderr)
    print(f"decode/training: {best_decode / model:.2f}")
    print(f"cache/training: {best_cache / model:.1f}")
    print(feeding_line(rates, config))
    print(decoders_line)


def feeding_line(rates: dict, config: RunConfig) -> str:
    """Per source, clips/s per decoding core (the best worker count over the cores it used; the process itself is
    one core at 0 workers) against what ViT-B over 16 x 224^2 trains on an H100 at 35% MFU."""
    peak = gpu_peak("NVIDIA H100 80GB HBM3")
    vit_b = RunConfig(model="vit_base", frames=16, size=224, stride=config.stride, eval_sweep=[])
    consumption = peak * 0.35 / (estimate(vit_b, [], 0.5, 400).train_gflops * 1e9)
    parts = []
    for source in ("decode", "reencoded", "repeats 2", "cache"):
        per_core = max(rate / max(1, workers) for (name, workers), rate in rates.items() if name == source)
        parts.append(f"{source} {per_core:.0f} clips/s per core ({consumption / per_core:.2g} cores)")
    return (f"ViT-B 16x224^2 on an H100 at 35% MFU trains {consumption:.0f} clips/s; per decoding core at "
            f"{config.size}px: " + ", ".join(parts))


def compare_decoders(root: Path, config: RunConfig, batches: int, repeats: int) -> str:
    """Clips/s decoded from files in this process by each decoder, in alternating order, median of `repeats`."""
    from vtbench.datasets import decoders

    names = [n for n in decoders.NAMES if not decoders.unavailable(n)]  # torchcodec-cuda where torch sees a GPU
    rates: dict[str, list[float]] = {n: [] for n in names}
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            data = build_dataset(f"folder:{root}", "train", 0, cache=False, decoder=name)
            rates[name].append(loading_rate(data, config, batches))
            data.close()
            print(f"repeat {repeat}: {name} {rates[name][-1]:.1f} clips/s", file=sys.stderr)
    median = {n: float(np.median(r)) for n, r in rates.items()}
    spread = ", ".join(f"{n} {median[n]:.1f} clips/s ({min(r):.1f}-{max(r):.1f})" for n, r in rates.items())
    left_out = "; ".join(f"{n}: {decoders.unavailable(n)}" for n in decoders.NAMES if n not in names)
    if len(names) < 2:
        return f"decoders, no workers, median of {repeats}: {spread}; {left_out}"
    path = decoders.record_measurement(median)  # what data_args.decoder auto takes on this machine
    print(f"recorded for decoder auto: {max(median, key=median.get)} ({path})", file=sys.stderr)
    ratios = ", ".join(f"{n} / pyav = {median[n] / median['pyav']:.2f}" for n in names if n != "pyav")
    return f"decoders, no workers, median of {repeats}: {spread}; {ratios}" + (f"; {left_out}" if left_out else "")


if __name__ == "__main__":
    main()
