"""VideoViT: a joint space-time ViT over tubelets (VideoMAE style), built from timm parts.

The forward pass is split where token methods act: `embed` (tubelets + position embedding -> Tokens),
an optional `select` on those Tokens, then `encode` (CLS, blocks, norm, pooling) and `head`. A CLS token,
when the model has one, is prepended after selection, so no selection can drop it.
"""

from collections.abc import Callable
from functools import partial

import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from .embed import SpaceTimePosEmbed, TubeletEmbed, embed_clip
from .heads import classify
from .tokens import Tokens

Select = Callable[[Tokens], Tokens]


class VideoViT(nn.Module):
    def __init__(
        self,
        num_classes: int,
        frames: int,
        size: int,
        tubelet: tuple[int, int, int] = (2, 16, 16),
        dim: int = 768,
        depth: int = 12,
        heads: int = 12,
        mlp_ratio: float = 4.0,
        cls_token: bool = False,
        pool: str = "mean",
        drop_path: float = 0.0,
    ):
        super().__init__()
        if pool not in ("mean", "cls"):
            raise ValueError(f"pool must be 'mean' or 'cls', got {pool!r}")
        if pool == "cls" and not cls_token:
            raise ValueError("pool 'cls' needs cls_token=True")
        self.dim, self.pool = dim, pool
        self.patch_embed = TubeletEmbed(dim, tubelet)
        self.pos_embed = SpaceTimePosEmbed(dim, self.patch_embed.grid(frames, size))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cls_token else None
        self.blocks = make_blocks(dim, depth, heads, mlp_ratio, drop_path)
        self.norm = layer_norm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.token_counts: list[int] = []  # tokens per clip (CLS excluded) entering the blocks, per pass
        self._init_weights()

    def _init_weights(self) -> None:
        if self.cls_token is not None:
            trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    @property
    def num_prefix_tokens(self) -> int:
        return 0 if self.cls_token is None else 1

    def embed(self, video: torch.Tensor) -> Tokens:
        return embed_clip(self.patch_embed, self.pos_embed, video)

    def encode(self, tokens: Tokens) -> torch.Tensor:
        """Blocks over any token subset -> (B, D) clip feature."""
        self.token_counts.append(tokens.count)
        x = tokens.x
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x[:, 0] if self.pool == "cls" else x[:, self.num_prefix_tokens :].mean(dim=1)

    def forward(self, video: torch.Tensor, select: Select | None = None) -> torch.Tensor:
        tokens = self.embed(video)
        if select is not None:
            tokens = select(tokens)
        return classify(self.head, self.encode(tokens), tokens.count)


layer_norm = partial(nn.LayerNorm, eps=1e-6)


def make_blocks(dim: int, depth: int, heads: int, mlp_ratio: float, drop_path: float) -> nn.ModuleList:
    """timm ViT blocks with stochastic depth rising linearly to `drop_path`."""
    rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
    return nn.ModuleList(
        Block(dim, heads, mlp_ratio, qkv_bias=True, drop_path=r, norm_layer=layer_norm) for r in rates
    )
