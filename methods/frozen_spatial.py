"""Frozen spatial encoder for the ViViT factorised encoder (Gowda, Arnab, Huang, "Optimizing ViViT Training:
Time and Memory Reduction for Action Recognition", arXiv 2306.04822). No public code; ViViT-FE details
follow google-research/scenic (projects/vivit), as in vtbench.models.vivit.

Two stages inside one budget:

1. the first `stage1` fraction of progress (default 0.3) trains the whole ViViT-FE end to end on shorter
   clips of `stage1_frames` frames (default half the base frames, and never fewer than two tubelets: the
   temporal encoder must see at least two frame indices to learn their order), with a temporal position table
   of stage 1's own length;
2. the rest: the tubelet embedding and the spatial encoder are frozen and run without autograd (their
   activations are not kept, and their optimizer state is dropped), the temporal encoder carries on from stage
   1, an adapter sits between the two, and only adapter, temporal encoder and head train, on full-length
   clips. At the switch stage 2's temporal position table is stage 1's, linearly interpolated up to the full
   length, so every entry the temporal encoder starts stage 2 with derives from trained stage-1 entries (the
   paper's "well-initialised temporal encoder").

Adapters (the paper calls its adapter compact and focused on image regions; its form is not public, so these
are ours): `attn_pool` (default: a learned query attends over each frame index's spatial outputs, added to the
frame's CLS output) or `mlp` (a residual bottleneck MLP on each frame's CLS output). Both start close to the
identity on the CLS output, so the temporal encoder sees at the switch what it saw in stage 1.

The spatial encoder may instead start from an image checkpoint (`checkpoint: FILE`, a timm ViT state dict
with the same width and depth; the 2D patch kernel is inflated over the tubelet's frames), with `stage1: 0`:
then it is frozen from the first step.

Departures and decisions: the split of the budget and the shorter stage-1 clips are ours (the paper's split is
not public). METHODS.md's first default for `stage1_frames` was a quarter of the frames: on the default model that
is one temporal token, from which stage 1 learns no order, hence half (rounded up to whole tubelets) and at least
two tokens. Cost accounting: stage 1 is on the clock; summary.json also reports the stage-2 on-clock seconds
(`stage2_train_s`) and the peaks of the training windows after the switch (`stage2_mem_allocated`,
`stage2_mem_reserved` on CUDA, `stage2_mem_rss` everywhere), without the optimizer state of what it froze.
"""

from pathlib import Path

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from vtbench.engine.shape import BatchShape
from vtbench.errors import ConfigError
from vtbench.models.embed import TemporalTable, temporal_resampler
from vtbench.models.vivit import ViViTFactorised

from . import register
from .base import Method
from .card import Claim

ADAPTERS = ("attn_pool", "mlp")


class AttentionPool(nn.Module):
    """A learned query attends over one frame index's spatial outputs (CLS and patches)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        nn.init.zeros_(self.attn.out_proj.weight)
        nn.init.zeros_(self.attn.out_proj.bias)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, length, d = frames.shape
        x = self.norm(frames.reshape(b * t, length, d))
        pooled, _ = self.attn(self.query.expand(b * t, -1, -1).to(x.dtype), x, x,
                              key_padding_mask=~mask.reshape(b * t, length), need_weights=False)
        return frames[:, :, 0] + pooled.reshape(b, t, d)


class BottleneckMLP(nn.Module):
    """A residual bottleneck MLP on each frame index's CLS output."""

    def __init__(self, dim: int, ratio: float = 0.25):
        super().__init__()
        hidden = max(1, int(dim * ratio))
        self.mlp = nn.Sequential(nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        cls = frames[:, :, 0]
        return cls + self.mlp(cls)


class StagedAdapter(nn.Module):
    """The frame CLS output in stage 1, the adapter in stage 2 (its parameters exist, and are optimised,
    from the start, so the optimizer never has to learn of new ones)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.active = False

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.inner(frames, mask) if self.active else frames[:, :, 0]


class StagedTemporalTable(nn.Module):
    """Stage 1's temporal position table at stage 1's length; at the switch, stage 2's table becomes its linear
    interpolation up to the full length and stage 1's is frozen. Both exist (and are optimised when used) from
    the start, so the optimizer never has to learn of new parameters; an unused one gets no gradient, and AdamW
    leaves a parameter without gradient alone."""

    def __init__(self, stage1_length: int, full_length: int, dim: int):
        super().__init__()
        self.stage1 = TemporalTable(stage1_length, dim)
        self.stage2 = TemporalTable(full_length, dim)
        self.active = 1

    def switch(self, initialise: bool = True) -> None:
        if initialise:
            with torch.no_grad():
                weights = temporal_resampler(self.stage1.length, self.stage2.length).to(self.stage1.table)
                self.stage2.table.copy_(weights @ self.stage1.table)
        self.stage1.table.requires_grad_(False)
        self.stage1.table.grad = None
        self.active = 2

    def forward(self, frames: int) -> torch.Tensor:
        return (self.stage1 if self.active == 1 else self.stage2)(frames)


def freeze_spatial(model: ViViTFactorised) -> None:
    for p in model.spatial_parameters():
        p.requires_grad_(False)
        p.grad = None


def load_image_checkpoint(model: ViViTFactorised, path: str | Path) -> None:
    """Load a timm ViT state dict into the tubelet embedding and spatial encoder; name the first mismatch."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"method 'frozen_spatial': checkpoint file {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state.get("state_dict", state)) if isinstance(state, dict) else state
    grid = model.pos_embed.grid[1:]
    ours: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "patch_embed.proj.weight":
            frames = model.patch_embed.tubelet[0]
            ours[key] = value.unsqueeze(2).repeat(1, 1, frames, 1, 1) / frames  # inflate over the tubelet
        elif key == "pos_embed":
            table = resample_abs_pos_embed(value, list(grid), num_prefix_tokens=1)
            ours["pos_embed.spatial"] = table[0, 1:]
            cls_position = table[0, :1]
        elif key == "cls_token":
            ours["spatial_cls"] = value
        elif key.startswith("blocks."):
            ours["spatial_" + key] = value
        elif key.startswith("norm."):
            ours["spatial_" + key] = value
        elif key.startswith("patch_embed."):
            ours[key] = value
    if "spatial_cls" in ours and "pos_embed.spatial" in ours:
        ours["spatial_cls"] = ours["spatial_cls"] + cls_position
    targets = dict(model.named_parameters())
    needed = ["patch_embed.proj.weight", "patch_embed.proj.bias", "pos_embed.spatial", "spatial_cls"] + [
        n for n in targets if n.startswith(("spatial_blocks.", "spatial_norm."))]
    for name in needed:
        if name not in ours:
            raise ConfigError(f"method 'frozen_spatial': checkpoint {path} lacks {name!r} "
                              f"(first mismatching key; expected a timm ViT state dict)")
        if ours[name].shape != targets[name].shape:
            raise ConfigError(f"method 'frozen_spatial': checkpoint {path} key {name!r} has shape "
                              f"{tuple(ours[name].shape)}, the spatial encoder needs {tuple(targets[name].shape)}")
    extra = sorted(k for k in ours if k.startswith("spatial_blocks.") and k not in targets)
    if extra:
        raise ConfigError(f"method 'frozen_spatial': checkpoint {path} has {extra[0]!r}, which the spatial encoder "
                          f"lacks (first mismatching key: more blocks than depth {len(model.spatial_blocks)}?)")
    with torch.no_grad():
        for name in needed:
            targets[name].copy_(ours[name])


@register
class FrozenSpatial(Method):
    name = "frozen_spatial"
    claim = Claim("Frozen spatial ViViT-FE (Gowda et al., 2023)", "about half the training cost and memory",
                  "about 50% less cost and memory, up to +1.79 top-1", "ViViT-FE B, 32 x 224^2, stage 1 counted",
                  arch="factorised", frames=32)
    leaves_parameters_unused = True  # the adapter and stage 2's position table wait, untouched, for stage 2

    def __init__(self, stage1: float = 0.3, stage1_frames: int | None = None, adapter: str = "attn_pool",
                 checkpoint: str | None = None):
        if not 0 <= stage1 < 1:
            raise ValueError(f"stage1={stage1!r} is outside the allowed range [0, 1)")
        if adapter not in ADAPTERS:
            raise ValueError(f"adapter={adapter!r} is not allowed; choose one of {', '.join(ADAPTERS)}")
        if stage1_frames is not None and (not isinstance(stage1_frames, int) or stage1_frames < 1):
            raise ValueError(f"stage1_frames={stage1_frames!r} must be a whole number of frames >= 1")
        if checkpoint is not None and stage1 != 0:
            raise ValueError(f"checkpoint={checkpoint!r} starts the spatial encoder from an image model: "
                             f"set stage1=0 (got stage1={stage1})")
        self.stage1, self.stage1_frames, self.adapter_kind, self.checkpoint = stage1, stage1_frames, adapter, checkpoint
        self.stage = 1
        self.switch_used_s: float | None = None
        self.model: ViViTFactorised | None = None
        self.clock = None
        self.begin_phase = lambda name: None

    def prepare(self, run) -> None:
        model = run.model
        if not isinstance(model, ViViTFactorised):
            raise ConfigError("method 'frozen_spatial' needs the factorised encoder: set arch=factorised")
        tt = model.patch_embed.tubelet[0]
        base_frames = run.base_shape.frames
        least = min(2 * tt, base_frames)  # two temporal tokens, unless the clip itself has one
        frames = self.stage1_frames or min(base_frames, max(least, -(-base_frames // 2 // tt) * tt))  # half, up
        if frames % tt or not least <= frames <= base_frames:
            raise ConfigError(f"method 'frozen_spatial': stage1_frames={frames} must be a multiple of the tubelet's "
                              f"{tt} frames, at least {least} (two temporal tokens, so that stage 1 learns their "
                              f"order) and at most the base {base_frames}")
        self.stage1_frames = frames
        model.temporal_pos = StagedTemporalTable(frames // tt, base_frames // tt, model.dim)
        inner = AttentionPool(model.dim, model.spatial_blocks[0].attn.num_heads) if self.adapter_kind == "attn_pool" \
            else BottleneckMLP(model.dim)
        model.adapter = StagedAdapter(inner)
        if self.checkpoint:
            load_image_checkpoint(model, self.checkpoint)
        self.model, self.clock, self.begin_phase = model, run.clock, run.begin_phase
        if self.stage1 == 0:
            self._switch()

    def _switch(self, restoring: bool = False) -> None:
        """Stage 2 from now on: freeze the spatial side, carry the temporal table over, turn the adapter on."""
        self.stage = 2
        freeze_spatial(self.model)
        self.model.temporal_pos.switch(initialise=not restoring)
        self.model.adapter.active = True
        if not restoring:
            self.switch_used_s = self.clock.used.s if self.clock else 0.0
            self.begin_phase("stage2")

    def batch_shape(self, progress: float, step: int, base: BatchShape) -> BatchShape:
        if self.stage == 1 and progress >= self.stage1:
            self._switch()
        return base._replace(frames=self.stage1_frames) if self.stage == 1 else base

    def log_columns(self, progress: float) -> dict:
        return {"stage": self.stage}

    def summary(self) -> dict:
        figures = {"stage1_frames": self.stage1_frames, "stage2_train_s": None}
        if self.switch_used_s is not None and self.clock is not None:
            figures["stage2_train_s"] = self.clock.used.s - self.switch_used_s
        return figures

    def state_dict(self) -> dict:
        return {"stage": self.stage, "switch_used_s": self.switch_used_s}

    def load_state_dict(self, state: dict) -> None:
        if state["stage"] == 2:
            self.switch_used_s = state["switch_used_s"]
            self._switch(restoring=True)
