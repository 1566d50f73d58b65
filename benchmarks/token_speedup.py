"""Token methods' speed-up: training step time against the tokens kept, side by side with the baseline; RLT's token
reduction on static and on moving content; and padded against packed clips of different token counts.

One process, one model, one pre-rendered batch; settings are interleaved round after round so that drift
(thermal, other load) hits them alike, and each setting's median step time is compared with the baseline's.
FLOPs per step (forward + backward) are counted with torch.utils.flop_counter; MFU is against the float32 matmul
peak measured once per machine (vtbench.engine.mfu). The step is the runner's (AdamW, foreach) through the
methods' own `MethodStack.loss`.

    python benchmarks/token_speedup.py [--model vit_tiny] [--frames F --size S] [--batch B] [--steps 10] [--rounds 5]
                                       [--set model_args.dim=192 ...]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from vtbench.datasets import build_dataset
from vtbench.engine.config import MethodSpec, RunConfig, apply, parse_set
from vtbench.engine.mfu import cpu_peak
from vtbench.methods import RunContext, build_methods
from vtbench.methods.rlt import DEFAULT_THRESHOLD, changed_tubelets
from vtbench.models import build_model

SETTINGS = {
    "baseline": [],
    **{f"token_dropout keep={k:g}": [MethodSpec("token_dropout", {"keep": k})] for k in (0.75, 0.5, 0.25)},
    "token_dropout keep=0.5 layers=middle": [MethodSpec("token_dropout", {"keep": 0.5, "layers": "middle"})],
    "tome keep=0.5": [MethodSpec("tome", {"keep": 0.5})],
    "tome keep=0.25": [MethodSpec("tome", {"keep": 0.25})],
    "rlt": [MethodSpec("rlt")],
    "rlt threshold=10": [MethodSpec("rlt", {"threshold": 10.0})],
}


def make_step(model, optimizer, stack, video, labels):
    def step():
        model.token_counts, model.token_lengths = [], []
        loss = stack.loss(model, (video, labels), 0.5)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def packed_step(model, optimizer, stack, video, labels):
    """The same step with the clips RLT keeps packed into one sequence under a block-diagonal mask (the reference's
    xformers BlockDiagonalMask, here a dense boolean mask for scaled_dot_product_attention), pooled per clip."""
    def step():
        tokens = stack.select_tokens(model.embed(video), 0.5, training=True)
        valid = tokens.valid if tokens.valid is not None else torch.ones(tokens.x.shape[:2], dtype=torch.bool)
        counts = valid.sum(dim=1)
        x = tokens.x[valid].unsqueeze(0)  # (1, sum of counts, D)
        clip = torch.repeat_interleave(torch.arange(len(counts)), counts)
        mask = (clip[:, None] == clip[None, :])[None, None]
        for block in model.blocks:
            x = block(x, attn_mask=mask)
        x = model.norm(x)[0]
        pooled = torch.zeros(len(counts), x.shape[1]).index_add_(0, clip, x) / counts[:, None]
        loss = F.cross_entropy(model.head(pooled), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def rlt_keep(data, config, batch: int, tubelet: tuple[int, int, int]) -> dict[str, float]:
    """Share of tubelets RLT keeps at its default threshold on moving content (the synthetic scenes, with and
    without their pixel noise) and on static content (each clip's first frame held still, with and without noise)."""
    std = torch.tensor(data.pixel_std)
    grid = (config.frames // tubelet[0], config.size // tubelet[1], config.size // tubelet[2])
    shares = {}
    for name, noise in (("moving", 0.02), ("moving, no noise", 0.0)):
        source = build_dataset("synthetic", "train", 0, noise=noise)
        video, _ = source.batch(range(batch), config.frames, config.size, config.stride, training=True)
        shares[name] = changed_tubelets(video, grid, DEFAULT_THRESHOLD, std).float().mean().item()
        held = video[:, :, :1].expand_as(video).clone()
        if noise:
            fresh = torch.randn(held.shape, generator=torch.Generator().manual_seed(1))
            held += noise / std.view(1, 3, 1, 1, 1) * fresh
        shares["static" + name.removeprefix("moving")] = changed_tubelets(held, grid, DEFAULT_THRESHOLD,
                                                                          std).float().mean().item()
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_tiny")
    parser.add_argument("--frames", type=int)
    parser.add_argument("--size", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--set", action="append", default=[], metavar="model_args.KEY=VALUE",
                        help="a model argument, e.g. model_args.dim=192 (as vtbench run --set)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    config = apply(RunConfig(model=args.model, frames=args.frames, size=args.size), parse_set(args.set)).resolve()
    batch = args.batch or config.batch_size
    torch.manual_seed(0)
    data = build_dataset("synthetic", "train", 0)
    video, labels = data.batch(range(batch), config.frames, config.size, config.stride, training=True)
    model = build_model(config.model, "joint", data.num_classes, config.frames, config.size, **config.model_args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)  # as the runner's
    steps, tokens, flops = {}, {}, {}
    for name, specs in SETTINGS.items():
        stack = build_methods(specs)
        stack.prepare(RunContext(config, model, None, data.num_classes, torch.device("cpu"), data))
        steps[name] = make_step(model, optimizer, stack, video, labels)
        if name == "rlt threshold=10":
            steps["rlt threshold=10, packed"] = packed_step(model, optimizer, stack, video, labels)
    for name, step in steps.items():
        with FlopCounterMode(display=False) as counter:
            step()
        flops[name] = counter.get_total_flops()
        # the packed step runs the same clips and tokens as the padded one before it, without model.encode
        tokens[name] = tokens[name.removesuffix(", packed")] if name.endswith("packed") else model.token_counts[0]
    full = model.embed(video[:1]).count
    print(f"model {config.model}, batch {batch} x {config.frames} x {config.size}^2, {full} tokens per clip, "
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
    peak = cpu_peak()
    print(f"baseline: {base_time * 1000:.1f} ms/step, {base_flops / 1e9:.2f} GFLOPs/step, "
          f"{base_flops / base_time / 1e9:.1f} GFLOP/s, MFU {base_flops / base_time / peak:.1%} of {peak / 1e9:.0f}")
    print("| setting | tokens per clip (mean over blocks) | kept | ms/step (median) | range | speed-up | flop ratio |")
    print("|---|---|---|---|---|---|---|")
    for name in steps:
        t = statistics.median(times[name])
        print(f"| {name} | {tokens[name]:.1f} | {tokens[name] / full:.2f} | {t * 1000:.1f} | "
              f"{min(times[name]) * 1000:.1f} to {max(times[name]) * 1000:.1f} | {base_time / t:.2f} | "
              f"{base_flops / flops[name]:.2f} |")
    shares = rlt_keep(data, config, batch, model.patch_embed.tubelet)
    print("RLT at threshold", DEFAULT_THRESHOLD, "keeps:", ", ".join(f"{k} {v:.0%}" for k, v in shares.items()))
    padded, packed = statistics.median(times["rlt threshold=10"]), statistics.median(times["rlt threshold=10, packed"])
    print(f"rlt threshold=10: padded {padded * 1000:.1f} ms/step, packed {packed * 1000:.1f} ms/step "
          f"(packed / padded {packed / padded:.2f})")
    half = statistics.median(times["token_dropout keep=0.5"])
    print(f"keep=0.5 speedup: {base_time / half:.2f} (flop ratio: {base_flops / flops['token_dropout keep=0.5']:.2f})")


if __name__ == "__main__":
    main()
