"""ToMe: token merging (Bolya, Fu, Dai, Zhang, Feichtenhofer, Hoffman, "Token Merging: Your ViT but Faster",
ICLR 2023, arXiv 2210.09461; reference code facebookresearch/ToMe, `tome/merge.py` and `tome/patch/timm.py`).

Inside every block, between the attention and the MLP, the r most similar pairs of tokens are merged: the tokens
split alternately into two sets A and B, each token of A is matched to its most similar token of B (cosine
similarity of the attention keys averaged over heads), and the r best-matched A tokens are merged into their B
partners by a size-weighted average (a token's size is how many input tokens it stands for). Proportional
attention adds log(size) to the attention logits so that a merged token weighs as the tokens it replaced. The CLS
token is never merged, and pooling is the size-weighted mean (ToMe's `patch/mae.py`). Merging applies in training
and in evaluation alike; the shared evaluation protocol's `keep=<k>,tome` setting merges any run's model (the
baseline's included) to a kept share k, as ToMe is applied off the shelf.

Parameters: `r`, tokens merged per block (a constant schedule, ToMe's `r`), or `keep`, the share of the tokens left
after the last block (r = the tokens to remove spread evenly over the blocks); `proportional` on or off.

Departures from the reference: the model is our joint space-time ViT over tubelets (ToMe's video results use
MAE ViT-L on Kinetics-400 clips); `keep`, our default of 0.5, is ours (ToMe sets r directly); ToMe's inflected
schedules (r, inflection) are not offered. Padded clips (after `rlt`) merge too: padding has size 0, is merged
away first and never changes a real token (the reference has no padding). The reference disables proportional
attention for MAE training; here it is the `proportional` parameter, on by default as in the paper.
"""

import math
from collections.abc import Callable
from dataclasses import replace

import torch

from vtbench.models.blocks import Stream, attention_half, mlp_half

from . import register
from .base import Method
from .card import Claim

Merge = Callable[[torch.Tensor, str], torch.Tensor]


def bipartite_soft_matching(metric: torch.Tensor, r: int, prefix: int = 0,
                            padding: torch.Tensor | None = None) -> tuple[Merge, int]:
    """ToMe's balanced bipartite matching on `metric` (B, N, C): tokens at even places form A, odd places B; the r
    A tokens with the best match merge into their B partners. The first `prefix` tokens are never merged, padding
    ((B, N) bool) merges first and never receives a real token unless a clip has nothing else. Returns the merge
    function (x (B, N, C), mode 'sum' | 'mean' | 'amax') and the r it applies (at most half the mergeable)."""
    r = min(r, (metric.shape[1] - prefix) // 2)
    if r <= 0:
        return (lambda x, mode="mean": x), 0
    with torch.no_grad():
        metric = metric / metric.norm(dim=-1, keepdim=True)
        a, b = metric[:, ::2], metric[:, 1::2]
        scores = a @ b.transpose(-1, -2)
        scores[:, : (prefix + 1) // 2, :] = -math.inf  # prefix tokens in A are never merged
        scores[:, :, : prefix // 2] = -math.inf  # nor do prefix tokens in B receive a merge
        if padding is not None:
            scores = scores.masked_fill(padding[:, None, 1::2], -math.inf)  # no real token into padding
            best, partner = scores.max(dim=-1)
            best = best.masked_fill(padding[:, ::2], math.inf)  # padding goes first
        else:
            best, partner = scores.max(dim=-1)
        order = best.argsort(dim=-1, descending=True)[..., None]
        unmerged, merged = order[:, r:], order[:, :r]
        destination = partner[..., None].gather(1, merged)
        unmerged = unmerged.sort(dim=1).values  # the prefix stays first

    def merge(x: torch.Tensor, mode: str = "mean") -> torch.Tensor:
        src, dst = x[:, ::2], x[:, 1::2]
        n, t1, c = src.shape
        kept = src.gather(1, unmerged.expand(n, t1 - r, c))
        moved = src.gather(1, merged.expand(n, r, c))
        dst = dst.scatter_reduce(1, destination.expand(n, r, c), moved, reduce=mode)
        return torch.cat([kept, dst], dim=1)

    return merge, r


def merge_wavg(merge: Merge, x: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge `x` (B, N, C) by size-weighted averages; `size` (B, N) -> (merged x, merged sizes). A token of size 0
    (padding) changes nothing it merges into."""
    x = merge(x * size[..., None].to(x.dtype), "sum")
    size = merge(size[..., None], "sum")[..., 0]
    return x / size[..., None].clamp(min=1e-6).to(x.dtype), size


def schedule(depth: int, count: int, r: int | None, keep: float | None) -> list[int]:
    """Tokens merged in each of `depth` blocks for a clip of `count` tokens."""
    if r is None:
        r = math.ceil((count - max(1, round(keep * count))) / depth)
    return [r] * depth


def merging_hook(r: int | None, keep: float | None, proportional: bool):
    """A block hook (vtbench.models.blocks) that runs each block with merging between its attention and MLP."""
    plan: list[int] = []

    def hook(index: int, depth: int, block, stream: Stream, run) -> Stream:
        if index == 0:
            plan[:] = schedule(depth, stream.count, r, keep)
            size = (torch.ones(stream.x.shape[:2], device=stream.x.device) if stream.valid is None
                    else stream.valid.float())
            stream = replace(stream, size=size, proportional=proportional)
        stream.note()
        x, keys = attention_half(block, stream)
        padding = None if stream.valid is None else ~stream.valid
        merge, applied = bipartite_soft_matching(keys, plan[index], stream.prefix, padding)
        if applied:
            x, size = merge_wavg(merge, x, stream.size)
            valid = None if stream.valid is None else size > 0
            stream = replace(stream, size=size, valid=valid)
        return replace(stream, x=mlp_half(block, x))

    return hook


@register
class TokenMerging(Method):
    name = "tome"
    claim = Claim("ToMe (Bolya et al., ICLR 2023)", "about 2x throughput at a fraction of a point",
                  "2x training speed-up on video MAE fine-tuning, -0.2 to -0.5 top-1", "ViT-B, 16 x 224^2, r=8",
                  params=(("r", 8),))

    def __init__(self, r: int | None = None, keep: float | None = None, proportional: bool = True):
        if r is not None and keep is not None:
            raise ValueError(f"give r={r!r} or keep={keep!r}, not both")
        if r is not None and (not isinstance(r, int) or isinstance(r, bool) or r < 0):
            raise ValueError(f"r={r!r} is outside the allowed range: a whole number of tokens, 0 or more")
        if r is None and keep is None:
            keep = 0.5
        if keep is not None and (not isinstance(keep, int | float) or isinstance(keep, bool) or not 0 < keep <= 1):
            raise ValueError(f"keep={keep!r} is outside the allowed range (0, 1]")
        if not isinstance(proportional, bool):
            raise ValueError(f"proportional={proportional!r} must be true or false")
        self.r, self.keep, self.proportional = r, None if keep is None else float(keep), proportional

    def prepare(self, run) -> None:
        from vtbench.errors import ConfigError
        from vtbench.models import VideoViT

        if not isinstance(run.model, VideoViT):
            raise ConfigError("method 'tome' merges tokens inside the blocks of the joint ViT; set arch: joint")

    def block_hook(self, progress: float, training: bool):
        return merging_hook(self.r, self.keep, self.proportional)

    def conflict(self, other: Method) -> str | None:
        if other.name == "flux":
            return "Flux trains several token budgets with heads chosen by the count entering the blocks"
        if other.block_hook(0.0, True) is not None:
            return "both change the tokens inside the blocks"
        return None

    def __repr__(self) -> str:
        rate = f"r={self.r}" if self.r is not None else f"keep={self.keep}"
        return f"TokenMerging({rate}, proportional={self.proportional})"
