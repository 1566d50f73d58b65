"""ViViT factorised encoder (Arnab et al., ICCV 2021, "model 2"), built from timm parts.

Layout follows google-research/scenic (projects/vivit): tubelet embedding; a spatial encoder shared over
frame indices, each index's tokens with a CLS; a temporal encoder over the per-index embeddings with its own
CLS and 1D position embedding; a zero-initialised classifier.

The forward pass is split where methods act: `embed` -> Tokens (spatial position embedding added; time is
the temporal encoder's business), optional `select`, then `spatial` (per frame index, any subset: frames
may keep different numbers of tokens, padded and masked), `adapter` (frame outputs -> one vector per frame;
by default the spatial CLS, replaceable), `temporal` and `head`.
"""

import re
from collections.abc import Callable

import torch
from timm.layers import trunc_normal_
from torch import nn

from .counting import record
from .embed import SpaceTimePosEmbed, TemporalTable, TubeletEmbed, embed_clip
from .heads import classify
from .param_groups import positions_and_class_tokens
from .tokens import Tokens
from .video_vit import Select, layer_norm, make_blocks


class FrameCls(nn.Module):
    """The default adapter: each frame index is represented by its spatial CLS output."""

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return frames[:, :, 0]


class ViViTFactorised(nn.Module):
    def __init__(
        self,
        num_classes: int,
        frames: int,
        size: int,
        tubelet: tuple[int, int, int] = (2, 16, 16),
        dim: int = 768,
        depth: int = 12,
        temporal_depth: int = 4,
        heads: int = 12,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.dim = dim
        self.patch_embed = TubeletEmbed(dim, tubelet)
        grid = self.patch_embed.grid(frames, size)
        self.pos_embed = SpaceTimePosEmbed(dim, (1, grid[1], grid[2]))  # spatial only
        self.spatial_cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.spatial_blocks = make_blocks(dim, depth, heads, mlp_ratio, drop_path)
        self.spatial_norm = layer_norm(dim)
        self.adapter: nn.Module = FrameCls()
        self.temporal_cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.temporal_pos: nn.Module = TemporalTable(grid[0], dim)  # module: frozen_spatial stages it
        self.temporal_blocks = make_blocks(dim, temporal_depth, heads, mlp_ratio, drop_path)
        self.norm = layer_norm(dim)
        self.head = nn.Linear(dim, num_classes)
        for p in (self.spatial_cls, self.temporal_cls):
            trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.head.weight)

    @property
    def tubelet(self) -> tuple[int, int, int]:
        """(frames, height, width) of one token's patch."""
        return self.patch_embed.tubelet

    def no_weight_decay(self) -> set[str]:
        """timm's question: what weight decay leaves out besides the 1-D parameters."""
        return positions_and_class_tokens(self)

    def group_matcher(self, coarse: bool = False) -> Callable[[str], int]:
        """timm's question, for layer-wise learning-rate decay: each parameter's depth from the input, BEiT's
        numbering over both encoders. The stem 0, spatial block i i + 1; the spatial norm, the temporal position
        table and class token and the adapter between the encoders next; then the temporal blocks; everything else
        (the final norm, the head, what methods add) at the top. A temporal encoder left at its initialisation
        trains at its lower rate too, as BEiT's rule assumes every layer under the head was pretrained."""
        spatial, temporal = len(self.spatial_blocks), len(self.temporal_blocks)
        between = spatial + 1
        top = between + temporal + 1 if temporal else between

        def order(name: str) -> int:
            found = re.match(r"(spatial_blocks|temporal_blocks)\.(\d+)\.", name)
            if found:
                index = int(found.group(2))
                return 1 + index if found.group(1) == "spatial_blocks" else between + 1 + index
            if name.startswith(("patch_embed.", "pos_embed.", "spatial_cls")):
                return 0
            if name.startswith(("spatial_norm.", "temporal_pos.", "temporal_cls", "adapter.")):
                return between
            return top

        return order

    def embed(self, video: torch.Tensor) -> Tokens:
        tokens = embed_clip(self.patch_embed, _SpatialOnly(self.pos_embed), video)
        return tokens

    def spatial_parameters(self) -> list[nn.Parameter]:
        """The tubelet embedding and the spatial encoder (what a frozen spatial stage freezes)."""
        parts = (self.patch_embed, self.pos_embed, self.spatial_blocks, self.spatial_norm)
        return [self.spatial_cls, *(p for part in parts for p in part.parameters())]

    def spatial(self, tokens: Tokens) -> tuple[torch.Tensor, torch.Tensor]:
        """Spatial encoder per frame index -> outputs (B, T, 1+L, D) and validity mask (B, T, 1+L).

        When no spatial parameter trains (a frozen spatial encoder), it runs without autograd."""
        if tokens.valid is not None or tokens.blocks is not None:
            raise ValueError("the factorised encoder takes neither padded clips nor per-block reductions; "
                             "use arch joint")
        record(tokens.count, tokens.count)  # tokens per clip entering the spatial encoder: never padded
        trainable = any(p.requires_grad for p in self.spatial_parameters()) or tokens.x.requires_grad
        with torch.set_grad_enabled(torch.is_grad_enabled() and trainable):
            return self._spatial(tokens)

    def _spatial(self, tokens: Tokens) -> tuple[torch.Tensor, torch.Tensor]:
        padded, mask = _group_by_frame(tokens)
        b, t, length, d = padded.shape
        x = torch.cat([self.spatial_cls.to(padded.dtype).expand(b * t, 1, d), padded.reshape(b * t, length, d)], 1)
        mask = torch.cat([mask.new_ones(b, t, 1), mask], dim=2)
        attn_mask = None if mask.is_meta or bool(mask.all()) else mask.reshape(b * t, 1, 1, length + 1)
        for block in self.spatial_blocks:
            x = block(x, attn_mask=attn_mask)
        return self.spatial_norm(x).reshape(b, t, length + 1, d), mask

    def temporal(self, frames: torch.Tensor, frame_valid: torch.Tensor) -> torch.Tensor:
        """Temporal encoder over (B, T, D) frame embeddings -> (B, D) clip feature (temporal CLS)."""
        b, t, d = frames.shape
        x = frames + self.temporal_pos(t).to(frames.dtype)
        x = torch.cat([self.temporal_cls.to(x.dtype).expand(b, 1, d), x], dim=1)
        valid = torch.cat([frame_valid.new_ones(b, 1), frame_valid], dim=1)
        attn_mask = None if valid.is_meta or bool(valid.all()) else valid.reshape(b, 1, 1, t + 1)
        for block in self.temporal_blocks:
            x = block(x, attn_mask=attn_mask)
        return self.norm(x)[:, 0]

    def encode(self, tokens: Tokens) -> torch.Tensor:
        frames, mask = self.spatial(tokens)
        return self.temporal(self.adapter(frames, mask), mask[:, :, 1:].any(dim=2))

    def forward(self, video: torch.Tensor, select: Select | None = None) -> torch.Tensor:
        tokens = self.embed(video)
        if select is not None:
            tokens = select(tokens)
        return classify(self.head, self.encode(tokens), tokens.count)


class _SpatialOnly(nn.Module):
    """Adapts the spatial table to embed_clip: every frame index gets the same spatial embedding."""

    def __init__(self, pos_embed: SpaceTimePosEmbed):
        super().__init__()
        self.inner = pos_embed

    def forward(self, grid: tuple[int, int, int]) -> torch.Tensor:
        _, spatial = self.inner.tables((1, grid[1], grid[2]))
        return spatial.repeat(grid[0], 1)


def _group_by_frame(tokens: Tokens) -> tuple[torch.Tensor, torch.Tensor]:
    """Scatter (B, N, D) tokens into (B, T, L, D) by frame index, L the largest count; mask marks real ones."""
    x, frame = tokens.x, tokens.pos[..., 0]
    b, n, d = x.shape
    t = tokens.grid[0]
    counts = torch.zeros(b, t, dtype=torch.long, device=x.device).scatter_add_(1, frame, torch.ones_like(frame))
    order = torch.argsort(frame, dim=1, stable=True)
    frame_sorted = torch.gather(frame, 1, order)
    first_of_frame = torch.cumsum(counts, dim=1) - counts
    rank = torch.arange(n, device=x.device).unsqueeze(0) - torch.gather(first_of_frame, 1, frame_sorted)
    # on meta tensors (vtbench estimate) counts are unknown: tokens spread evenly over the frames
    length = -(-n // t) if x.is_meta else int(counts.max())
    padded = x.new_zeros(b, t, length, d)
    batch = torch.arange(b, device=x.device).unsqueeze(1).expand(b, n)
    padded[batch, frame_sorted, rank] = torch.gather(x, 1, order.unsqueeze(-1).expand(b, n, d))
    mask = torch.arange(length, device=x.device) < counts.unsqueeze(-1)
    return padded, mask
