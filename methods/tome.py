"""ToMe: token merging (Bolya, Fu, Dai, Zhang, Feichtenhofer, Hoffman, "Token Merging: Your ViT but Faster",
ICLR 2023, arXiv 2210.09461; reference code facebookresearch/ToMe, `tome/merge.py` and `tome/patch/timm.py`).

Inside every block, between the attention and the MLP, the r most similar pairs of tokens are merged: the tokens
split alternately into two sets A and B, each token of A is matched to its most similar token of B (cosine
similarity of the attention keys averaged over heads), and the r best-matched A tokens are merged into their B
partners by a size-weighted average (a token's size is how many input tokens it stands for). Proportional
attention adds log(size) to the attention logits so that a merged token weighs as the tokens it replaced. The CLS
token is never merged, and pooling is the size-weighted mean (ToMe's `patch/mae.py`). Merging applies in training
and in evaluation alike. The merge rate is an evaluation setting too: `merge=off` scores the same model without
merging, and `keep=<k>,merge` with merging down to another share k after the last block (EVAL_KEEPS other than
the trained one): the model's accuracy against its merge rate, trained at one rate (not the paper's off-the-shelf
curve, which merges in a model trained without merging). The report's settings figure plots them in a "merge"
panel against the `keep` column, the share of tokens the blocks saw on average (0.75 for keep=0.25,merge over
3 blocks), not k.

Parameters: `r`, tokens merged per block (a constant schedule, ToMe's `r`), or `keep`, the share of the tokens left
after the last block (r = the tokens to remove spread evenly over the blocks); `proportional` on or off.

Departures from the reference: runs start from random weights unless the run sets `init` (ToMe's video results
fine-tune MAE-ST models). The model is our joint space-time ViT over tubelets (ToMe's video results use MAE
ViT-L on Kinetics-400 clips). `keep`, our default of 0.5, is ours (ToMe sets r directly): each block merges the
tokens still to remove spread over the blocks left, at most half of them per block (so a keep below 1 / (depth + 1)
is not reached). ToMe's inflected schedules (r, inflection) are not offered. Proportional attention is the
`proportional` parameter, on by default: the paper finds it necessary for supervised models (ours are trained
supervised, with merging) and not for MAE models, whose reference patch turns it off. Padded clips (after `rlt`)
merge too: padding has size 0, goes first where it lies in set A, and never changes a real token; but a padded
clip's merges then depend on its batch (a short clip padded to a long one merges padding instead of its own tokens,
and `keep` counts the padded length). The CLS token never merges, as in the reference. With `compile: true` ToMe is
refused: it runs its blocks in two halves outside the compiled block.
"""

import math
from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F

from vtbench.errors import ConfigError
from vtbench.models import VideoViT
from vtbench.models.blocks import BlockPlan, Stream, attention_half, mlp_half
from vtbench.models.tokens import Tokens

from .base import EvalSetting, Method
from .card import Claim
from .params import Param
from .registry import register

Merge = Callable[[torch.Tensor, str], torch.Tensor]
EVAL_KEEPS = (0.75, 0.5, 0.25)  # shares left after the last block at which a run is also evaluated


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
        metric = F.normalize(metric, dim=-1)
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
        if prefix:
            unmerged = unmerged.sort(dim=1).values  # the prefix stays first (the reference sorts only then too)

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


def merged_in_block(index: int, depth: int, count: int, target: int) -> int:
    """Tokens to merge in block `index` of `depth` when `count` tokens enter it and `target` should be left after
    the last: what is still to remove, spread over the blocks left."""
    return max(0, math.ceil((count - target) / (depth - index)))


def merging_hook(r: int | None, keep: float | None, proportional: bool):
    """A block hook (vtbench.models.blocks) that runs each block with merging between its attention and MLP:
    `r` tokens per block, or down to a `keep` share of the tokens entering the first block."""
    target: list[int] = []

    def hook(index: int, depth: int, block, stream: Stream, run) -> Stream:
        if index == 0:
            target[:] = [max(1, round(keep * stream.count))] if keep is not None else []
            size = None if stream.valid is None else stream.valid.float()  # padding stands for no token
            stream = replace(stream, size=size, proportional=proportional)
        stream.note()
        x, keys = attention_half(block, stream)
        count = r if r is not None else merged_in_block(index, depth, stream.count, target[0])
        padding = None if stream.valid is None else ~stream.valid
        merge, applied = bipartite_soft_matching(keys, count, stream.prefix, padding)
        if applied:
            size = stream.size if stream.size is not None else torch.ones(x.shape[:2], device=x.device)
            x, size = merge_wavg(merge, x, size)
            stream = replace(stream, size=size, valid=None if stream.valid is None else size > 0)
        return replace(stream, x=mlp_half(block, x))

    return hook


@register
class TokenMerging(Method):
    name = "tome"
    claim = Claim("ToMe (Bolya et al., ICLR 2023)", "about 2x throughput at a fraction of a point",
                  "about 2x throughput on video ViTs, training speed-ups of up to 2x on video MAE fine-tuning",
                  "ViT-B, 16 x 224^2, keep 0.5", params=(("keep", 0.5),))
    params = {
        "r": Param(int, None, low=0, rule="a whole number of tokens, 0 or more", unset="keep decides",
                   help="tokens merged in every block (a constant schedule)"),
        "keep": Param(float, None, low=0, high=1, low_open=True, unset="0.5 unless r is given",
                      help="the share of tokens left after the last block"),
        "proportional": Param(bool, True, help="proportional attention: log(size) added to the attention logits"),
    }

    @classmethod
    def check_together(cls, values) -> None:
        """r and keep are two ways to set the merge rate: give one, not both."""
        if values["r"] is not None and values["keep"] is not None:
            raise ValueError(f"give r={values['r']!r} or keep={values['keep']!r}, not both")

    def __init__(self, r: int | None = None, keep: float | None = None, proportional: bool = True):
        if r is None and keep is None:
            keep = 0.5
        self.r, self.keep, self.proportional = r, None if keep is None else float(keep), proportional

    def prepare(self, run) -> None:
        if not isinstance(run.model, VideoViT):
            raise ConfigError("method 'tome' merges tokens inside the blocks of the joint ViT; set arch: joint")
        if run.config is not None and run.config.compile:
            raise ConfigError("method 'tome' runs its blocks in two halves, outside the compiled blocks; "
                              "set compile: false")

    def eval_settings(self) -> list[EvalSetting]:
        def unmerged(tokens: Tokens) -> Tokens:
            return replace(tokens, blocks=None)

        def merged_to(keep: float) -> Callable[[Tokens], Tokens]:
            plan = BlockPlan([merging_hook(None, keep, self.proportional)])  # tome refuses other block hooks
            return lambda tokens: replace(tokens, blocks=plan)

        return [EvalSetting("merge=off", select=unmerged)] + [
            EvalSetting(f"keep={k:g},merge", select=merged_to(k)) for k in EVAL_KEEPS if k != self.keep]

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
