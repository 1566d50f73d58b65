"""A clip's tokens with their space-time positions, so that any subset can travel through a model."""

from dataclasses import dataclass, replace
from typing import Any

import torch


@dataclass
class Tokens:
    """Tokens of a batch of clips, all clips with the same count N.

    x:    (B, N, D) patch embeddings with the position embedding added.
    pos:  (B, N, 3) long (t, y, x) index of each token in the clip's token grid.
    grid: (T, H, W) the full token grid of the clip before any selection.
    raw:  (B, N, D) the patch embeddings before the position embedding, for selectors that score content.
    motion: (B, N) optional score of each token computed on the full grid (Flux's change against the previous
          frame), attached before other selections so that it survives them.
    valid: (B, N) bool, None when every token is real: clips that keep different numbers of tokens are padded to
          the largest count, and False marks the padding (the blocks mask it out of attention and pooling).
    pixels: (B, C, T, H, W) the clip the tokens were embedded from (normalised), for methods that read pixels.
    blocks: how the blocks reduce the tokens further (vtbench.models.blocks.BlockPlan), attached by the methods.
    """

    x: torch.Tensor
    pos: torch.Tensor
    grid: tuple[int, int, int]
    raw: torch.Tensor
    motion: torch.Tensor | None = None
    valid: torch.Tensor | None = None
    pixels: torch.Tensor | None = None
    blocks: Any = None

    @property
    def count(self) -> int:
        """Tokens per clip, padding included (the physical sequence length)."""
        return self.x.shape[1]

    def clip_counts(self) -> torch.Tensor:
        """(B,) long: real tokens of each clip."""
        if self.valid is None:
            return torch.full((self.x.shape[0],), self.count, dtype=torch.long, device=self.x.device)
        return self.valid.sum(dim=1)

    @property
    def full_count(self) -> int:
        t, h, w = self.grid
        return t * h * w

    def gather(self, index: torch.Tensor) -> "Tokens":
        """Keep, per clip, the tokens at `index` (B, K): a physically smaller set, positions travelling along."""
        if index.dim() != 2 or index.shape[0] != self.x.shape[0]:
            raise ValueError(f"index must be (batch, K) with batch {self.x.shape[0]}, got {tuple(index.shape)}")

        def take(t: torch.Tensor) -> torch.Tensor:
            return torch.gather(t, 1, index.unsqueeze(-1).expand(-1, -1, t.shape[-1]))

        motion = None if self.motion is None else torch.gather(self.motion, 1, index)
        valid = None if self.valid is None else torch.gather(self.valid, 1, index)
        return replace(self, x=take(self.x), pos=take(self.pos), raw=take(self.raw), motion=motion, valid=valid)
