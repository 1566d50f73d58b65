"""Tubelet embedding and a space-time position embedding that fits any token grid.

The default position embedding is separable: a learned 2D spatial table (resampled with timm's
`resample_abs_pos_embed`) plus a learned 1D temporal table (linearly interpolated). Both resamplings are
linear in the table, so for each new grid we cache the interpolation matrix (not its result): the
embedding stays trainable and the cache never goes stale.

The other (`pos_embed: sincos`) is VideoMAE's fixed joint sinusoid over the flattened (t, y, x) index of the
nominal grid, a buffer resampled trilinearly for other grids (the result cached while the buffer is unchanged).
"""

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed, trunc_normal_
from torch import nn

from .tokens import Tokens


class TubeletEmbed(nn.Module):
    """Non-overlapping (tt, p, p) tubelets of a (B, C, T, H, W) clip, linearly projected to `dim`."""

    def __init__(self, dim: int, tubelet: tuple[int, int, int], in_chans: int = 3):
        super().__init__()
        self.tubelet = tuple(tubelet)
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=self.tubelet, stride=self.tubelet)

    def grid(self, frames: int, size: int) -> tuple[int, int, int]:
        tt, p, _ = self.tubelet
        if frames % tt or size % p:
            raise ValueError(
                f"clip of {frames} frames x {size}px does not divide into tubelets of {tt}x{p}x{p}"
            )
        return frames // tt, size // p, size // p

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, T', H', W', D)."""
        self.grid(video.shape[2], video.shape[3])
        return self.proj(video).permute(0, 2, 3, 4, 1)


def _spatial_resampler(old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """(new_h*new_w, old_h*old_w) matrix M with resample(table) == M @ table."""
    n_old = old[0] * old[1]
    basis = torch.eye(n_old, dtype=torch.float64).unsqueeze(0)  # one channel per old position
    out = resample_abs_pos_embed(basis, list(new), list(old), num_prefix_tokens=0)
    return out[0].float()


def temporal_resampler(old: int, new: int) -> torch.Tensor:
    """(new, old) matrix of linear interpolation over time."""
    basis = torch.eye(old).unsqueeze(0)  # (1, old channels, old length)
    return F.interpolate(basis, size=new, mode="linear", align_corners=False)[0].T.contiguous()


class TemporalTable(nn.Module):
    """A learned 1D position table over `length` frame indices, linearly resampled for clips of other lengths
    (the resampling matrix cached per length)."""

    def __init__(self, length: int, dim: int):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(length, dim))
        trunc_normal_(self.table, std=0.02)
        self._resamplers: dict[tuple, torch.Tensor] = {}

    @property
    def length(self) -> int:
        return self.table.shape[0]

    def forward(self, frames: int) -> torch.Tensor:
        """(frames, D) table for a clip of `frames` frame indices."""
        if frames == self.length:
            return self.table
        key = (frames, self.table.device)
        if key not in self._resamplers:
            self._resamplers[key] = temporal_resampler(self.length, frames).to(self.table.device)
        return self._resamplers[key].to(self.table) @ self.table


class SpaceTimePosEmbed(nn.Module):
    """Learned position embedding for a nominal (T, H, W) grid, resampled for any other grid."""

    def __init__(self, dim: int, grid: tuple[int, int, int]):
        super().__init__()
        self.grid = tuple(grid)
        self.spatial = nn.Parameter(torch.zeros(grid[1] * grid[2], dim))
        self.temporal = nn.Parameter(torch.zeros(grid[0], dim))
        trunc_normal_(self.spatial, std=0.02)
        trunc_normal_(self.temporal, std=0.02)
        self._resamplers: dict[tuple, torch.Tensor] = {}

    def _resampler(self, kind: str, old, new, device) -> torch.Tensor:
        key = (kind, old, new, device)
        if key not in self._resamplers:
            make = _spatial_resampler if kind == "spatial" else temporal_resampler
            self._resamplers[key] = make(old, new).to(device)
        return self._resamplers[key]

    def tables(self, grid: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Temporal (T, D) and spatial (H*W, D) tables for `grid`."""
        t, h, w = grid
        temporal, spatial = self.temporal, self.spatial
        if t != self.grid[0]:
            temporal = self._resampler("temporal", self.grid[0], t, temporal.device).to(temporal) @ temporal
        if (h, w) != self.grid[1:]:
            resample = self._resampler("spatial", self.grid[1:], (h, w), spatial.device).to(spatial)
            spatial = resample @ spatial
        return temporal, spatial

    def forward(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """(T*H*W, D) embedding of every token of `grid`, in (t, y, x) raster order."""
        temporal, spatial = self.tables(grid)
        return (temporal[:, None, :] + spatial[None, :, :]).flatten(0, 1)


def sinusoid_table(positions: int, dim: int) -> torch.Tensor:
    """(positions, dim) VideoMAE sinusoid: angle = pos / 10000^(2 * (j // 2) / dim), sin on even channels j and
    cos on odd ones; computed in float64 and rounded to float32, as VideoMAE does."""
    pos = torch.arange(positions, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.empty_like(angle)
    table[:, 0::2] = angle[:, 0::2].sin()
    table[:, 1::2] = angle[:, 1::2].cos()
    return table.float()


class SinCosPosEmbed(nn.Module):
    """VideoMAE's fixed position embedding: one sinusoid over the flattened (t, y, x) index of the nominal grid.

    The (T*H*W, D) table is a persistent buffer, not a parameter: never trained, but saved with the model, so that
    a checkpoint's own table (a learned one, resampled to this grid by the converter) can be loaded into it. A clip
    of another grid gets the (T, H, W, D) table resampled trilinearly in float32, cached per grid and device for as
    long as the buffer is the same tensor, unmodified."""

    def __init__(self, dim: int, grid: tuple[int, int, int]):
        super().__init__()
        self.grid = tuple(grid)
        self.register_buffer("table", sinusoid_table(grid[0] * grid[1] * grid[2], dim))
        self._resampled: dict[tuple, tuple[torch.Tensor, int, torch.Tensor]] = {}

    def forward(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """(T*H*W, D) embedding of every token of `grid`, in (t, y, x) raster order."""
        grid = tuple(grid)
        table = self.table
        if grid == self.grid:
            return table
        key = (grid, table.device)
        cached = self._resampled.get(key)
        if cached is not None and cached[0] is table and cached[1] == table._version:
            return cached[2]
        volume = table.reshape(*self.grid, -1).permute(3, 0, 1, 2).unsqueeze(0).float()  # (1, D, T, H, W)
        # cached: never at an autocast precision (meta tensors, `vtbench estimate`'s, have no autocast to leave)
        with nullcontext() if table.device.type == "meta" else torch.autocast(table.device.type, enabled=False):
            out = F.interpolate(volume, size=grid, mode="trilinear", align_corners=False)
        out = out[0].permute(1, 2, 3, 0).reshape(-1, table.shape[-1]).to(table.dtype)
        self._resampled[key] = (table, table._version, out)
        return out


def grid_positions(grid: tuple[int, int, int], device=None) -> torch.Tensor:
    """(T*H*W, 3) long (t, y, x) of every token in raster order."""
    axes = [torch.arange(n, device=device) for n in grid]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def embed_clip(patches: nn.Module, pos_embed: nn.Module, video: torch.Tensor) -> Tokens:
    """Tubelet-embed a clip and add the position embedding of its own grid."""
    raw = patches(video)  # (B, T, H, W, D)
    b, t, h, w, d = raw.shape
    grid = (t, h, w)
    raw = raw.reshape(b, t * h * w, d)
    x = raw + pos_embed(grid).to(raw.dtype)
    pos = grid_positions(grid, raw.device).unsqueeze(0).expand(b, -1, -1)
    return Tokens(x=x, pos=pos, grid=grid, raw=raw, pixels=video)
