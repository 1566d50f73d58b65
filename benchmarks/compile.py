"""Eager against compiled training steps (`compile: true`: each transformer block compiled on its own), side by
side in one process, on the default model and on ViT-B's width and depth.

Two copies of the same model train on the same batches; the steps alternate (eager, compiled, eager, ...) so that
both see the same moments of this machine, whose speed drifts. Compilation is timed apart: the compiled copy's
first two steps (the forward compiles at the first, inductor's backward at the first backward) less two steady
steps. The last line gives each workload's median step of both, the median and quartiles of the step-by-step
ratio compiled / eager, and the compile time.

    python benchmarks/compile.py [--steps 30] [--backend inductor] [--precision fp32|bf16]
"""

import argparse
import copy
import statistics
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from vtbench.engine.compiled import compile_blocks
from vtbench.models import build_model

# (name, preset, model_args, frames, size, batch): ViT-B's blocks over 4 x 7 x 7 tokens (8 frames x 112^2), which
# a 2-core CPU steps through in about a second; on a GPU pass `--vit-b-full` for 16 x 224^2
WORKLOADS = [("default (vit_tiny)", "vit_tiny", {}, 16, 32, 16), ("ViT-B blocks", "vit_base", {}, 8, 112, 2)]


def step(model, optimizer, video, labels, autocast) -> float:
    began = time.perf_counter()
    with autocast():
        loss = F.cross_entropy(model(video).float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    loss.item()
    return time.perf_counter() - began


def measure(name, preset, args, frames, size, batch, steps, backend, autocast):
    torch.manual_seed(0)
    eager = build_model(preset, "joint", 10, frames, size, **args)
    compiled = copy.deepcopy(eager)
    blocks = compile_blocks(compiled, backend)
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-4) for m in (eager, compiled)]
    video, labels = torch.randn(batch, 3, frames, size, size), torch.randint(0, 10, (batch,))
    step(eager, optimizers[0], video, labels, autocast)  # first-call costs of the eager copy
    first = [step(compiled, optimizers[1], video, labels, autocast) for _ in range(2)]
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(steps):
        times["eager"].append(step(eager, optimizers[0], video, labels, autocast))
        times["compiled"].append(step(compiled, optimizers[1], video, labels, autocast))
    e, c = statistics.median(times["eager"]), statistics.median(times["compiled"])
    ratios = sorted(b / a for a, b in zip(times["eager"], times["compiled"], strict=True))  # step by step
    low, high = ratios[len(ratios) // 4], ratios[3 * len(ratios) // 4]
    compile_s = sum(first) - 2 * c
    print(f"{name}: {blocks} blocks, batch {batch} x {frames} x {size}^2; eager {1000 * e:.1f} ms/step "
          f"(range {1000 * min(times['eager']):.1f}-{1000 * max(times['eager']):.1f}), compiled {1000 * c:.1f} "
          f"(range {1000 * min(times['compiled']):.1f}-{1000 * max(times['compiled']):.1f}), "
          f"compile {compile_s:.1f} s; compiled / eager step by step: median {statistics.median(ratios):.2f}, "
          f"quartiles {low:.2f}-{high:.2f}", flush=True)
    return name, e, c, compile_s, statistics.median(ratios), low, high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--vit-b-full", action="store_true", help="ViT-B at 16 x 224^2, batch 8 (a GPU's load)")
    args = parser.parse_args()
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_default_device(device_type)
    autocast = (lambda: torch.autocast(device_type, dtype=torch.bfloat16)) if args.precision == "bf16" else nullcontext
    workloads = list(WORKLOADS)
    if args.vit_b_full:
        workloads[1] = ("ViT-B 16 x 224^2", "vit_base", {}, 16, 224, 8)
    print(f"{device_type}, {torch.get_num_threads()} threads, {args.precision}, backend {args.backend}, "
          f"{args.steps} steps each, alternating")
    rows = [measure(*w, args.steps, args.backend, autocast) for w in workloads]
    print("; ".join(f"{name}: eager {1000 * e:.1f} ms, compiled {1000 * c:.1f} ms, compiled / eager {r:.2f} "
                    f"(quartiles {lo:.2f}-{hi:.2f}), compile {s:.1f} s" for name, e, c, s, r, lo, hi in rows))


if __name__ == "__main__":
    main()
