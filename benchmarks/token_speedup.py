"""Token dropout speed-up: training step time at keep 1, 0.75, 0.5, 0.25 against the baseline, side by side.

One process, one model, one pre-rendered batch; settings are interleaved round after round so that drift
(thermal, other load) hits them alike, and each setting's median step time is compared with the baseline's.
FLOPs per step (forward + backward) are counted with torch.utils.flop_counter; MFU is against the float32 matmul
peak measured once per machine (vtbench.engine.mfu). The step is the runner's (AdamW, foreach).

    python benchmarks/token_speedup.py [--model vit_tiny] [--frames F --size S] [--batch B] [--steps 20] [--rounds 9]
                                       [--set model_args.dim=192 ...]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from vtbench.datasets import build_dataset
from vtbench.engine.config import RunConfig, apply, parse_set
from vtbench.engine.mfu import cpu_peak
from vtbench.methods.token_dropout import drop_tokens
from vtbench.models import build_model

KEEPS = (1.0, 0.75, 0.5, 0.25)


def make_step(model, optimizer, video, labels, keep):
    select = None if keep is None else (lambda tokens: drop_tokens(tokens, keep, "random"))

    def step():
        loss = F.cross_entropy(model(video, select=select), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def step_flops(step) -> float:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_tiny")
    parser.add_argument("--frames", type=int)
    parser.add_argument("--size", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--set", action="append", default=[], metavar="model_args.KEY=VALUE",
                        help="a model argument, e.g. model_args.dim=192 (as vtbench run --set)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    config = apply(RunConfig(model=args.model, frames=args.frames, size=args.size), parse_set(args.set)).resolve()
    batch = args.batch or config.batch_size
    torch.manual_seed(0)
    data = build_dataset("synthetic", "train", 0)
    video, labels = data.batch(range(batch), config.frames, config.size, config.stride, training=True)
    model = build_model(config.model, "joint", data.num_classes, config.frames, config.size, **config.model_args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)  # as the runner's
    settings = {"baseline": None, **{f"keep={k:g}": k for k in KEEPS}}
    steps = {name: make_step(model, optimizer, video, labels, keep) for name, keep in settings.items()}
    flops = {name: step_flops(step) for name, step in steps.items()}
    tokens = model.embed(video[:1]).count
    print(f"model {config.model}, batch {batch} x {config.frames} x {config.size}^2, {tokens} tokens per clip, "
          f"{torch.get_num_threads()} threads, {args.rounds} rounds of {args.steps} steps")
    for step in steps.values():  # warm-up
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            began = time.perf_counter()
            for _ in range(args.steps):
                loss = step()
            loss.item()
            times[name].append((time.perf_counter() - began) / args.steps)
    base_time, base_flops = statistics.median(times["baseline"]), flops["baseline"]
    peak = cpu_peak()  # the float32 matmul peak measured once per machine (vtbench.engine.mfu)
    print(f"baseline: {base_time * 1000:.1f} ms/step, {base_flops / 1e9:.2f} GFLOPs/step, "
          f"{base_flops / base_time / 1e9:.1f} GFLOP/s, MFU {base_flops / base_time / peak:.1%} of {peak / 1e9:.0f}")
    for name in list(steps)[1:]:
        t = statistics.median(times[name])
        print(f"{name}: {t * 1000:.1f} ms/step, speedup {base_time / t:.2f}, flop ratio {base_flops / flops[name]:.2f}")
    half = statistics.median(times["keep=0.5"])
    print(f"keep=0.5 speedup: {base_time / half:.2f} (flop ratio: {base_flops / flops['keep=0.5']:.2f})")


if __name__ == "__main__":
    main()
