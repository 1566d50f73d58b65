"""Frozen spatial encoder: step time and peak training memory of stage 2 (spatial side frozen, run without
autograd) against full ViViT-FE training, at the same clip shape, side by side in one process.

Memory on CUDA is the allocator's peak per step (torch.cuda.max_memory_allocated, reset before each step).
On a CPU, where no allocator peak can be read per step, it is the training state a step holds at its peak:
the bytes autograd saves for backward, plus gradients and AdamW's two moments of the trainable parameters.

    python benchmarks/frozen_spatial.py [--model vit_tiny] [--frames F --size S] [--batch B] [--steps 10]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from vtbench.engine.config import RunConfig
from vtbench.methods.frozen_spatial import AttentionPool, StagedAdapter, freeze_spatial
from vtbench.models import build_model


def build(config, batch, frozen: bool, device):
    torch.manual_seed(0)
    model = build_model(config.model, "factorised", 10, config.frames, config.size).to(device)
    model.adapter = StagedAdapter(AttentionPool(model.dim, model.spatial_blocks[0].attn.num_heads)).to(device)
    if frozen:
        freeze_spatial(model)
        model.adapter.active = True
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return model, optimizer


def saved_bytes(model, video, labels) -> int:
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.cross_entropy(model(video), labels).backward()
    model.zero_grad(set_to_none=True)
    return total


def measure(model, optimizer, video, labels, steps: int, device) -> tuple[float, int]:
    def step():
        loss = F.cross_entropy(model(video), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        began = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    if device.type == "cuda":
        memory = torch.cuda.max_memory_allocated(device)
    else:
        trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        memory = saved_bytes(model, video, labels) + 3 * trainable  # saved activations, grads, two moments
    return statistics.median(times), memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_tiny")
    parser.add_argument("--frames", type=int)
    parser.add_argument("--size", type=int)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    config = RunConfig(model=args.model, frames=args.frames, size=args.size, arch="factorised").resolve()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    video = torch.randn(args.batch, 3, config.frames, config.size, config.size, device=device)
    labels = torch.randint(0, 10, (args.batch,), device=device)
    results = {}
    for name, frozen in (("full", False), ("stage2", True)):
        model, optimizer = build(config, args.batch, frozen, device)
        results[name] = measure(model, optimizer, video, labels, args.steps, device)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        t, m = results[name]
        print(f"{name}: {t * 1000:.1f} ms/step, {m / 2**20:.1f} MiB, {trainable} trainable parameters")
    unit = "allocator peak" if device.type == "cuda" else "saved activations + grads + optimizer state"
    print(f"model {config.model} (factorised), batch {args.batch} x {config.frames} x {config.size}^2, "
          f"{device}, memory = {unit}")
    (tf, mf), (ts, ms) = results["full"], results["stage2"]
    print(f"stage2/full: time {ts / tf:.2f}, memory {ms / mf:.2f}")


if __name__ == "__main__":
    main()
