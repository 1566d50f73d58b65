"""Frozen spatial encoder for the ViViT factorised encoder (Gowda, Arnab, Huang, "Optimizing ViViT Training:
Time and Memory Reduction for Action Recognition", arXiv 2306.04822; ECCV 2024 as "Optimizing Factorized Encoder
Models"). No public code; ViViT-FE details follow google-research/scenic (projects/vivit), as in
vtbench.models.vivit.

What the paper says, as far as it could be read here: its abstract (the body text could not be had) freezes the
spatial transformer, and says this works only with (1) an appropriately initialised temporal transformer and (2)
a compact adapter between the frozen spatial outputs and the temporal transformer. A reader's summary of the
body (github.com/bobochow/Study-notes, SFA-ViViT.md; second-hand) describes two stages: first the model, its
spatial side from an image-pretrained ViT, trains on few frames (8); then the spatial transformer is frozen, an
adapter is added, the clip grows, and the temporal transformer trained in the first stage carries on.

How the suite runs it, inside one budget:

1. the first `stage1` fraction of progress (default 0.3) trains the whole ViViT-FE end to end on shorter
   clips of `stage1_frames` frames (default half the base frames, and never fewer than two tubelets: the
   temporal encoder must see at least two frame indices to learn their order), with a temporal position table
   of stage 1's own length;
2. the rest: the tubelet embedding and the spatial encoder are frozen and run without autograd (their
   activations are not kept, and their optimizer state is dropped), the temporal encoder carries on from stage
   1, an adapter sits between the two, and only adapter, temporal encoder and head train, on full-length
   clips. At the switch stage 2's temporal position table is stage 1's, linearly interpolated up to the full
   length, so every entry the temporal encoder starts stage 2 with derives from trained stage-1 entries.

Where the weights start is the run's `init` setting, not the method's:

- as published (per the summary above): `init: {file: IMAGE.safetensors, format: timm}` (the spatial side from
  an image ViT, inflated; the temporal side at its initialisation) with the default two stages;
- frozen from the first step: the same init with `stage1: 0`; the temporal encoder then starts as
  `init.temporal` says: `random` (scenic's choice for an image checkpoint) or `from_spatial` (the image's first
  blocks); or every weight, the temporal encoder's included, from a finished frozen_spatial run
  (`init.format: vtbench`: its weights load into the model frozen_spatial makes, adapter and tables included);
- from scratch (`init` empty): the suite's own approximation of the method, both stages on random weights.

Adapters (the paper calls its adapter compact and focused on image regions; its form is not public, so these
are ours): `attn_pool` (default: a learned query attends over each frame index's spatial outputs, added to the
frame's CLS output) or `mlp` (a residual bottleneck MLP on each frame's CLS output). Both start close to the
identity on the CLS output, so the temporal encoder sees at the switch what it saw in stage 1.

Departures and decisions: trained from scratch by default (the paper starts from an image model: set `init`);
the split of the budget and the length of stage-1 clips are ours (the paper's are not public here). The method
document's first default for `stage1_frames` was a quarter of the frames: on the default model that is one
temporal token, from which stage 1 learns no order, hence half (rounded up to whole tubelets) and at least two
tokens. Cost accounting: stage 1 is on the clock; summary.json also reports the stage-2 on-clock seconds
(`stage2_train_s`) and the peaks of the training windows after the switch (`stage2_mem_allocated`,
`stage2_mem_reserved` on CUDA, `stage2_mem_rss` everywhere), without the optimizer state of what it froze.
"""


import torch
from torch import nn

from vtbench.core.shape import BatchShape
from vtbench.errors import ConfigError
from vtbench.models.embed import TemporalTable, temporal_resampler
from vtbench.models.vivit import ViViTFactorised

from .base import Method
from .card import Claim
from .params import Param
from .registry import register

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


@register
class FrozenSpatial(Method):
    name = "frozen_spatial"
    claim = Claim("Frozen spatial ViViT-FE (Gowda et al., 2023)", "about half the training cost and memory",
                  "about 50% less cost and memory, up to +1.79 top-1", "ViViT-FE B, 32 x 224^2, stage 1 counted",
                  arch="factorised", frames=32)
    leaves_parameters_unused = True  # the adapter and stage 2's position table wait, untouched, for stage 2
    params = {
        "stage1": Param(float, 0.3, low=0, high=1, high_open=True, help="the first fraction of progress, trained "
                                                                          "end to end on shorter clips"),
        "stage1_frames": Param(int, None, low=1, rule="a whole number of frames >= 1",
                               unset="half the base frames, at least two tubelets", help="stage 1's clip length"),
        "adapter": Param(str, "attn_pool", choices=ADAPTERS, help="between the frozen spatial encoder and the "
                                                                   "temporal one"),
        "checkpoint": Param(str, None, removed="the spatial encoder's start is now the run's init setting "
                                              "(init.file: that file, init.format: timm; with stage1=0 to freeze it "
                                              "from the first step)"),
    }

    def __init__(self, stage1: float = 0.3, stage1_frames: int | None = None, adapter: str = "attn_pool",
                 checkpoint: str | None = None):
        self.stage1, self.stage1_frames, self.adapter_kind = stage1, stage1_frames, adapter
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

    def planned_shape(self, progress: float, step: int, base: BatchShape) -> BatchShape:
        stage1 = self.stage == 1 and progress < self.stage1
        return base._replace(frames=self.stage1_frames) if stage1 else base

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
