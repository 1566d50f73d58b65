"""Flux: flexible sampling plus token selection (Wang et al., "Make Your Training Flexible: Towards
Deployment-Efficient Video Models", ICCV 2025, arXiv 2503.14237; reference code OpenGVLab/FluxViT,
single_modality/models/fluxvit.py and single_modality/run_flexible_finetune.py).

Training samples each batch at a random (frames, size), redrawn until the clip's token count lies in a
window, with frames spread TSN-style over the whole video (one per equal segment), and then keeps a fixed
budget of K tokens per clip with the group-dynamic selector:

- split the token grid's time axis into G groups of consecutive tubelet frames (G = 4 when they divide by 4,
  else 2, else 1);
- score each token by the L2 distance between its patch embedding and the one at the same (y, x) in the
  previous frame; the first frame of a group takes the second frame's score (where a group holds a single
  tubelet frame, as short clips with G = 4 do, it keeps its difference to the previous group's frame and only
  the clip's first frame takes the second's: our decision, the original's tubelets are one frame long);
- keep the top K / G tokens of each group. Scores use patch embeddings before the position embedding,
  without autograd; the kept tokens carry their position embedding. Deterministic.

The same selection runs at evaluation, at budgets of 1, 1/2 and 1/4 of the base token count (settings
`tokens=N`). Flux-Multi (`budgets: [1, 0.5, 0.25]`, fractions of K) runs one pass per budget on the same
embedded clip, each with its own linear head on the pooled feature; the loss is the sum of the cross-entropies
plus a SmoothL1 alignment of each smaller budget's normalised feature to the detached largest-budget one.

Departures from the original: the sampling sets scale with the base shape (frames in [0.75T, 3T] in steps of
the tubelet's length, sizes in [0.5S, 1.5S] in steps of the patch, window [K, 3K]; the original draws 6-24
frames and 112-336 pixels with a [2048, 8192] window); frames and sizes are drawn uniformly among the pairs
that fit the window (the original redraws until one fits, which has the same distribution). K is rounded down
to a multiple of G. Evaluation uses the base input shape for every budget (no search over input shapes, the
paper's Token Optimization), and the default head for every budget. Not ported: RandAugment and mixup
recipes, dual patch norm, global-local position embedding (the original's ablations credit them with 1 to 1.5
points).
"""

import random

import torch
import torch.nn.functional as F
from torch import nn

from vtbench.engine.shape import BatchShape
from vtbench.errors import ConfigError
from vtbench.models.tokens import Tokens

from . import register
from .base import EvalSetting, Method

SEGMENTS = 0  # BatchShape.stride 0: one frame per equal segment of the whole video (TSN style)


def group_count(frames: int) -> int:
    return 4 if frames % 4 == 0 else 2 if frames % 2 == 0 else 1


def motion_scores(tokens: Tokens) -> torch.Tensor:
    """(B, N) L2 distance of each token's patch embedding to the same place one tubelet frame earlier."""
    t, h, w = tokens.grid
    if tokens.count != tokens.full_count:
        raise ValueError("flux scores a full token grid; put flux before other token-selecting methods")
    raw = tokens.raw.detach().reshape(-1, t, h * w, tokens.raw.shape[-1])
    change = (raw[:, 1:] - raw[:, :-1]).norm(dim=-1)  # (B, T-1, HW): frame k+1 against frame k
    scores = torch.zeros(raw.shape[:3], device=raw.device, dtype=change.dtype)
    scores[:, 1:] = change
    size = t // group_count(t)
    if size > 1:  # the first frame of each group takes its second frame's score
        firsts = torch.arange(0, t, size, device=raw.device)
        scores[:, firsts] = scores[:, firsts + 1]
    elif t > 1:  # one frame per group: each is scored against the frame before it, the clip's first as its second
        scores[:, 0] = scores[:, 1]
    return scores.reshape(-1, t * h * w)


def group_dynamic_select(tokens: Tokens, budget: int) -> Tokens:
    """Keep budget // G tokens in each of the G groups of consecutive frames, those that change most."""
    t, h, w = tokens.grid
    groups = group_count(t)
    quota = budget // groups
    per_group = tokens.full_count // groups
    if quota < 1 or quota > per_group:
        raise ValueError(f"token budget {budget} must give each of {groups} frame groups between 1 and "
                         f"{per_group} tokens (clip grid {t}x{h}x{w})")
    if quota == per_group:
        return tokens
    with torch.no_grad():
        scores = motion_scores(tokens).reshape(-1, groups, per_group)
        top = scores.topk(quota, dim=2).indices.sort(dim=2).values
        index = (top + torch.arange(groups, device=top.device)[None, :, None] * per_group).flatten(1)
    return tokens.gather(index)


def flexible_shapes(base: BatchShape, tubelet: tuple[int, int, int], budget: int) -> list[tuple[int, int]]:
    """Every (frames, size) of the scaled sets whose token count lies in [budget, 3 x budget]."""
    tt, p, _ = tubelet
    frames = range(max(tt, _up(0.75 * base.frames, tt)), int(3 * base.frames) + 1, tt)
    sizes = range(max(p, _up(0.5 * base.size, p)), int(1.5 * base.size) + 1, p)
    fits = [(f, s) for f in frames for s in sizes if budget <= (f // tt) * (s // p) ** 2 <= 3 * budget
            and group_count(f // tt) <= f // tt]
    return fits


def _up(value: float, step: int) -> int:
    return -(-int(round(value)) // step) * step


@register
class Flux(Method):
    name = "flux"

    def __init__(self, tokens: int | None = None, flexible: bool = True, budgets: list[float] | None = None,
                 align_weight: float = 1.0):
        if tokens is not None and (not isinstance(tokens, int) or tokens < 1):
            raise ValueError(f"tokens={tokens!r} must be a positive whole number of tokens (or unset: the base count)")
        if budgets is not None:
            if not isinstance(budgets, list) or len(budgets) < 2 or not all(0 < b <= 1 for b in budgets):
                raise ValueError(f"budgets={budgets!r} must be a list of at least two fractions in (0, 1]")
        if align_weight < 0:
            raise ValueError(f"align_weight={align_weight!r} must be >= 0")
        self.tokens, self.flexible, self.align_weight = tokens, flexible, align_weight
        self.budgets = sorted(budgets, reverse=True) if budgets else None
        self.shapes: list[tuple[int, int]] = []
        self.seed = 0

    def prepare(self, run) -> None:
        model, base = run.model, run.base_shape
        tubelet = model.patch_embed.tubelet
        grid = model.patch_embed.grid(base.frames, base.size)
        base_count = grid[0] * grid[1] * grid[2]
        self.base_count = base_count
        self.tokens = self.tokens or base_count
        self.seed = run.config.seed
        try:
            for budget in self._budget_counts() + self._eval_counts():
                group_dynamic_select(_empty_tokens(grid), budget)
        except ValueError as err:
            raise ConfigError(f"method 'flux': {err}") from None
        if self.flexible:
            self.shapes = flexible_shapes(base, tubelet, self.tokens)
            if not self.shapes:
                raise ConfigError(f"method 'flux': no (frames, size) around {base.frames}x{base.size} gives between "
                                  f"{self.tokens} and {3 * self.tokens} tokens; lower `tokens`")
        if self.budgets:
            classes = model.head.out_features
            model.flux_heads = nn.ModuleList(nn.Linear(model.head.in_features, classes) for _ in self.budgets[1:])

    def _budget_counts(self) -> list[int]:
        return [max(1, round(self.tokens * b)) for b in self.budgets] if self.budgets else [self.tokens]

    def _eval_counts(self) -> list[int]:
        return [self.base_count, self.base_count // 2, self.base_count // 4]

    def owns(self, hook: str) -> bool:
        if hook == "training_loss":
            return self.budgets is not None  # a single budget leaves the loss to the runner
        if hook == "batch_shape":
            return self.flexible
        return super().owns(hook)

    def batch_shape(self, progress: float, step: int, base: BatchShape) -> BatchShape:
        if not self.flexible:
            return base
        frames, size = random.Random(self.seed * 1_000_003 + step).choice(self.shapes)
        return BatchShape(base.clips, frames, size, SEGMENTS)

    def select_tokens(self, tokens: Tokens, progress: float, training: bool) -> Tokens:
        return group_dynamic_select(tokens, min(self.tokens, tokens.full_count))

    def training_loss(self, model: nn.Module, batch, progress: float) -> torch.Tensor:
        video, labels = batch
        tokens = model.embed(video)
        features = [model.encode(group_dynamic_select(tokens, count)) for count in self._budget_counts()]
        heads = [model.head, *model.flux_heads]
        return flux_multi_loss(features, heads, labels, self.align_weight)

    def eval_settings(self) -> list[EvalSetting]:
        return [EvalSetting(f"tokens={count}", select=lambda t, c=count: group_dynamic_select(t, c))
                for count in self._eval_counts()]


def flux_multi_loss(features: list[torch.Tensor], heads: list[nn.Module], labels: torch.Tensor,
                    align_weight: float = 1.0) -> torch.Tensor:
    """Sum of each budget's cross-entropy plus SmoothL1 of smaller budgets' normalised features to the largest's."""
    classification = sum(F.cross_entropy(head(f).float(), labels) for f, head in zip(features, heads, strict=True))
    teacher = F.normalize(features[0].detach().float(), dim=-1)
    alignment = sum(F.smooth_l1_loss(F.normalize(f.float(), dim=-1), teacher) for f in features[1:])
    return classification + align_weight * alignment


def _empty_tokens(grid: tuple[int, int, int]) -> Tokens:
    n = grid[0] * grid[1] * grid[2]
    x = torch.zeros(1, n, 1)
    pos = torch.zeros(1, n, 3, dtype=torch.long)
    return Tokens(x=x, pos=pos, grid=grid, raw=x)
