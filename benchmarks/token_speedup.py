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
import math
import statistics
import time
import warnings

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from vtbench.datasets import build_dataset
from vtbench.engine.config import MethodSpec, RunConfig, apply, parse_set
from vtbench.engine.mfu import cpu_peak
from vtbench.methods import RunContext, build_methods
from vtbench.methods.rlt import DEFAULT_THRESHOLD, changed_tubelets
from vtbench.models import build_model
from vtbench.models.counting import counting_tokens

SETTINGS = {
    "baseline": [],
    **{f"token_dropout keep={k:g}": [MethodSpec("token_dropout", {"keep": k})] for k in (0.75, 0.5, 0.25)},
    "token_dropout keep=0.5 layers=middle": [MethodSpec("token_dropout", {"keep": 0.5, "layers": "middle"})],
    "tome keep=0.5": [MethodSpec("tome", {"keep": 0.5})],
    "tome keep=0.25": [MethodSpec("tome", {"keep": 0.25})],
    # plain rlt is timed in the packing rows below ("rlt on moving, padded": the same synthetic clips)
    "rlt threshold=10": [MethodSpec("rlt", {"threshold": 10.0})],
}


def tokens_seen(step) -> float:
    """Tokens per clip the model sees in one run of a training `step` (a warm-up run, say)."""
    with counting_tokens() as seen:
        step()
    return float(seen.counts[0])


def make_step(model, optimizer, stack, video, labels):
    def step():
        loss = stack.loss(model, (video, labels), 0.5)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def packed_attention(attn, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """timm's Attention over clips packed one after another in `x` (sum of counts, D), each attending only within
    itself: scaled_dot_product_attention on nested (jagged) tensors. q, k and v are made contiguous per head, which
    the nested math kernel needs (without it, a CUDA build probes cuDNN and fails on a machine without a GPU)."""
    def heads(t: torch.Tensor) -> torch.Tensor:
        t = t.unflatten(-1, (attn.num_heads, attn.head_dim)).contiguous()
        return torch.nested.nested_tensor_from_jagged(t, offsets).transpose(1, 2)

    q, k, v = (heads(t) for t in attn.qkv(x).chunk(3, dim=-1))
    out = F.scaled_dot_product_attention(attn.q_norm(q), attn.k_norm(k), v)
    return attn.proj(attn.norm(out.transpose(1, 2).values().flatten(-2)))


def packed_step(model, optimizer, stack, video, labels):
    """The same step with the clips RLT keeps packed into one sequence without padding (the reference packs them
    for xformers' BlockDiagonalMask; here nested-tensor attention), pooled per clip. Stochastic depth is left out
    (it drops whole clips, which a packed sequence cannot)."""
    if model.cls_token is not None:
        raise SystemExit("the packed step pools the mean; use a model without a CLS token")

    def step(backward: bool = True):
        tokens = stack.select_tokens(model.embed(video), 0.5, training=True)
        valid = tokens.valid if tokens.valid is not None else torch.ones(tokens.x.shape[:2], dtype=torch.bool)
        counts = valid.sum(dim=1)
        offsets = F.pad(counts.cumsum(0), (1, 0))
        x = tokens.x[valid]  # (sum of counts, D)
        for block in model.blocks:
            x = x + block.ls1(packed_attention(block.attn, block.norm1(x), offsets))
            x = x + block.ls2(block.mlp(block.norm2(x)))
        clip = torch.repeat_interleave(torch.arange(len(counts)), counts)
        pooled = torch.zeros(len(counts), x.shape[1]).index_add(0, clip, model.norm(x)) / counts[:, None]
        loss = F.cross_entropy(model.head(pooled), labels)
        if backward:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return loss

    return step


def held_still(video: torch.Tensor, noise: float, std: torch.Tensor) -> torch.Tensor:
    """Each clip's first frame held for the whole clip, with fresh pixel noise of `noise` (in [0, 1] units) added."""
    held = video[:, :, :1].expand_as(video).clone()
    if noise:
        held += noise / std.view(1, 3, 1, 1, 1) * torch.randn(held.shape, generator=torch.Generator().manual_seed(1))
    return held


def rlt_batches(data, config, batch: int) -> dict[str, torch.Tensor]:
    """Clips for RLT: the synthetic scenes as they move (with and without their pixel noise), the same held still,
    and a batch half held still (no noise) and half moving, where padding costs most."""
    std = torch.tensor(data.pixel_std)
    batches = {}
    for name, noise in (("moving", 0.02), ("moving, no noise", 0.0)):
        source = build_dataset("synthetic", "train", 0, noise=noise)
        video, _ = source.batch(range(batch), config.frames, config.size, config.stride, training=True)
        batches[name] = video
        batches["static" + name.removeprefix("moving")] = held_still(video, noise, std)
    half = batch // 2
    batches["half static"] = torch.cat([batches["static, no noise"][:half], batches["moving"][half:]])
    return batches


def main() -> None:
    warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors is in prototype stage")
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
    rlt = build_methods([MethodSpec("rlt")])
    rlt.prepare(RunContext(config, model, None, data.num_classes, torch.device("cpu"), data))
    batches = rlt_batches(data, config, batch)
    for content, clips in batches.items():
        steps[f"rlt on {content}, padded"] = make_step(model, optimizer, rlt, clips, labels)
        steps[f"rlt on {content}, packed"] = packed_step(model, optimizer, rlt, clips, labels)
    for name, step in steps.items():
        if name.endswith("packed"):  # the FLOP counter cannot follow nested tensors; same clips, same tokens
            step()
            flops[name], tokens[name] = math.nan, tokens[name.replace(", packed", ", padded")]
            continue
        with FlopCounterMode(display=False) as counter, counting_tokens() as seen:
            step()
        flops[name], tokens[name] = counter.get_total_flops(), seen.counts[0]
    differences = []
    for clips in batches.values():  # same parameters, same clips: the two forms give the same loss
        model.eval()
        with torch.no_grad():
            padded_loss = F.cross_entropy(model(clips, select=rlt.selector(0.5, training=True)), labels)
            packed_loss = packed_step(model, None, rlt, clips, labels)(backward=False)
        model.train()
        differences.append(abs(padded_loss.item() - packed_loss.item()))
    if max(differences) > 1e-4:
        raise SystemExit(f"packed and padded clips disagree (loss differs by {max(differences):.1e}): not comparable")
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
              f"{base_flops / flops[name]:.2f} |".replace("nan", "not counted"))
    grid = (config.frames // model.patch_embed.tubelet[0], config.size // model.patch_embed.tubelet[1],
            config.size // model.patch_embed.tubelet[2])
    std = torch.tensor(data.pixel_std)
    print(f"RLT at threshold {DEFAULT_THRESHOLD} keeps:", ", ".join(
        f"{content} {changed_tubelets(clips, grid, DEFAULT_THRESHOLD, std).float().mean().item():.0%}"
        for content, clips in batches.items()))
    print(f"RLT packed against padded (same loss to {max(differences):.1e}):")
    for content in batches:
        padded = statistics.median(times[f"rlt on {content}, padded"])
        packed = statistics.median(times[f"rlt on {content}, packed"])
        print(f"  {content}: padded {padded * 1000:.1f} ms/step, packed {packed * 1000:.1f} ms/step "
              f"(packed / padded {packed / padded:.2f})")
    half = statistics.median(times["token_dropout keep=0.5"])
    print(f"keep=0.5 speedup: {base_time / half:.2f} (flop ratio: {base_flops / flops['token_dropout keep=0.5']:.2f})")


if __name__ == "__main__":
    main()
