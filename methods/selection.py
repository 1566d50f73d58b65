"""Token selections that several methods and the shared evaluation protocol use: each keeps the same number K of
tokens in every clip of a batch, chosen per clip, and gathers them (positions travel with the tokens).

- `random_subset`: K tokens at random (Turbo training's token dropout; a fixed generator gives a fixed subset);
- `top_magnitude`: the K tokens with the largest L1 norm of their embedding, position embedding included
  (PSS's `magnitude` selection, BradMcDanel/pss `deit/pss.py`);
- `group_dynamic_select`: Flux's group-dynamic selector (OpenGVLab/FluxViT, `sparse_group_token_selection`):
  the frames split into G groups of consecutive frames, K / G tokens kept per group, those whose patch embedding
  changes most against the same place one frame earlier.
"""

from dataclasses import replace

import torch

from vtbench.models.tokens import Tokens


def random_subset(tokens: Tokens, k: int, generator: torch.Generator | None = None) -> Tokens:
    """K tokens per clip, an independent uniform draw per clip."""
    if k >= tokens.count:
        return tokens
    score = torch.rand(tokens.x.shape[:2], device=tokens.x.device, generator=generator)
    return _keep_top(tokens, score, k)


def top_magnitude(tokens: Tokens, k: int) -> Tokens:
    """The K tokens per clip with the largest L1 norm of their embedding (deterministic)."""
    if k >= tokens.count:
        return tokens
    return _keep_top(tokens, tokens.x.detach().abs().sum(dim=-1), k)


def _keep_top(tokens: Tokens, score: torch.Tensor, k: int) -> Tokens:
    """The K best-scored tokens per clip; padding (clips of different counts) is taken last, so a clip with fewer
    than K real tokens keeps them all and stays padded."""
    if tokens.valid is not None:
        score = score.masked_fill(~tokens.valid, float("-inf"))
    index = score.topk(k, dim=1, sorted=False).indices.sort(dim=1).values
    return tokens.gather(index)


# padded clips pad to a multiple of this many tokens: few distinct lengths, so that each is FLOP-counted once and
# credited at once (vtbench.engine.flops keys a step's FLOPs by the blocks' lengths)
PAD_MULTIPLE = 16


def choose_per_clip(score: torch.Tensor, counts: torch.Tensor, valid: torch.Tensor | None = None,
                    multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Indices (B, K) of the `counts[i]` best-scored real places of clip i (`valid` (B, N) marks real ones), in
    place order, padded to the largest count rounded up to a `multiple` (at most N); and (B, K) bool marking the
    chosen real ones, None when every index is one."""
    if valid is not None:
        score = score.masked_fill(~valid, float("-inf"))
        counts = torch.minimum(counts, valid.sum(dim=1))
    k = min(score.shape[1], -(-int(counts.max()) // multiple) * multiple)
    order = score.argsort(dim=1, descending=True, stable=True)[:, :k]
    index, by_position = order.sort(dim=1)
    chosen = (torch.arange(k, device=score.device) < counts[:, None]).gather(1, by_position)  # by rank of score
    if valid is not None:
        chosen = chosen & valid.gather(1, index)
    return index, None if bool(chosen.all()) else chosen


def keep_per_clip(tokens: Tokens, score: torch.Tensor, counts: torch.Tensor, multiple: int = 1) -> Tokens:
    """The `counts[i]` best-scored real tokens of clip i, in their original order; clips that keep fewer than the
    largest count are padded (`valid` marks the real ones; None when no clip needs padding). The padded length is
    rounded up to a `multiple` (at most the count there is), so that few distinct lengths occur."""
    index, valid = choose_per_clip(score, counts, tokens.valid, multiple)
    return replace(tokens.gather(index), valid=valid)


# ---- Flux's group-dynamic selection ------------------------------------------------------------------------


def group_count(frames: int) -> int:
    """G for a clip of `frames` tubelet frames, as FluxViT: 4 when they divide by 4, 1 for two frames, else 2
    (1 for an odd count, which FluxViT refuses)."""
    if frames % 4 == 0:
        return 4
    if frames == 2 or frames % 2:
        return 1
    return 2


def motion_scores(tokens: Tokens) -> torch.Tensor:
    """(B, N) L2 distance of each token's patch embedding (before the position embedding) to the same place one
    tubelet frame earlier; the first frame of each group takes its second frame's score. Where a group holds a
    single frame (G = 4 with four tubelet frames) each frame keeps its distance to the frame before it, and only
    the clip's first frame takes the second's."""
    t, h, w = tokens.grid
    if tokens.count != tokens.full_count:
        raise ValueError("motion scores need the full token grid; compute them before other selections "
                         "(selection.with_motion)")
    raw = tokens.raw.detach().reshape(-1, t, h * w, tokens.raw.shape[-1])
    change = (raw[:, 1:] - raw[:, :-1]).norm(dim=-1)  # (B, T-1, HW): frame k+1 against frame k
    scores = torch.zeros(raw.shape[:3], device=raw.device, dtype=change.dtype)
    scores[:, 1:] = change
    size = t // group_count(t)
    if size > 1:
        firsts = torch.arange(0, t, size, device=raw.device)
        scores[:, firsts] = scores[:, firsts + 1]
    elif t > 1:
        scores[:, 0] = scores[:, 1]
    return scores.reshape(-1, t * h * w)


def with_motion(tokens: Tokens) -> Tokens:
    """The tokens with their motion scores attached (computed once on the full grid), so that a group-dynamic
    selection still has them after other selections have taken a subset."""
    if tokens.motion is not None:
        return tokens
    with torch.no_grad():
        return replace(tokens, motion=motion_scores(tokens))


def group_dynamic_select(tokens: Tokens, budget: int) -> Tokens:
    """Keep budget // G tokens in each of the G groups of consecutive frames, those that change most (so
    G x (budget // G) in all, as FluxViT truncates each group's count). On a subset left by another selection,
    a group holding fewer tokens than its quota keeps them all and the clip fills up with its best others."""
    t = tokens.grid[0]
    groups = group_count(t)
    quota = budget // groups
    per_group = tokens.full_count // groups
    if quota < 1 or quota > per_group:
        raise ValueError(f"token budget {budget} must give each of {groups} frame groups between 1 and "
                         f"{per_group} tokens (clip grid {'x'.join(map(str, tokens.grid))})")
    k = groups * quota
    if k >= tokens.count:
        return tokens
    with torch.no_grad():
        scores = (tokens.motion if tokens.motion is not None else motion_scores(tokens)).float()
        group = tokens.pos[..., 0] // (t // groups)
        by_score = scores.argsort(dim=1, descending=True, stable=True)
        order = by_score.gather(1, group.gather(1, by_score).argsort(dim=1, stable=True))  # by group, then score
        grouped = group.gather(1, order)
        counts = torch.zeros(len(group), groups, dtype=torch.long, device=group.device)
        counts.scatter_add_(1, group, torch.ones_like(group))
        starts = counts.cumsum(1) - counts
        rank = torch.arange(group.shape[1], device=group.device) - starts.gather(1, grouped)
        ordered = scores.gather(1, order)
        priority = (rank < quota).float() + 0.5 * ordered / (ordered.max(dim=1, keepdim=True).values + 1)
        if tokens.valid is not None:  # padding last
            priority = priority.masked_fill(~tokens.valid.gather(1, order), -1.0)
        index = order.gather(1, priority.topk(k, dim=1).indices).sort(dim=1).values
    return tokens.gather(index)
