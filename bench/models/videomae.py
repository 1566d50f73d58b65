"""VideoMAE checkpoints into vtbench's joint model: `from_videomae(state, model) -> Converted`, then `load_into`.

Layouts read (after read_state has unwrapped "model"/"state_dict" and DDP's "module."):

- Hugging Face transformers (VideoMAEForVideoClassification, VideoMAEForPreTraining, under `videomae.`, and a
  bare VideoMAEModel, without):
  `videomae.embeddings.patch_embeddings.projection`, `videomae.encoder.layer.N.attention.attention.{query,key,
  value}.weight` with the q and v biases as `q_bias`/`v_bias` (the files on the hub and what `save_pretrained`
  writes) or `query.bias`/`value.bias` (the module's own state dict), `attention.output.dense`,
  `layernorm_before`/`layernorm_after`, `intermediate.dense`, `output.dense`, `fc_norm` or `videomae.layernorm`,
  `classifier`.
- The original VideoMAE code's: `patch_embed.proj`, `pos_embed` (only the learnable-position variant stores one),
  `blocks.N.attn.qkv.weight` with `q_bias`/`v_bias`, `attn.proj`, `norm1`/`norm2`, `mlp.fc1`/`mlp.fc2`,
  `gamma_1`/`gamma_2` (layer scale), `fc_norm` or `norm`, `head`; bare, under `encoder.` (pretraining
  checkpoints) or under `backbone.` (mmaction2, whose `patch_embed.projection`, `mlp.layers.0.0`/`mlp.layers.1`,
  `cls_head.fc_cls` and stored sinusoid `pos_embed` buffer are read too).

A pretraining checkpoint's decoder (`decoder.*`, `encoder_to_decoder`, `mask_token`) goes to `Converted.dropped`
with the reason. So does an encoder's final `norm` when the model pools with `fc_norm` and the checkpoint has
neither classifier nor fc_norm (a pretraining encoder, a bare VideoMAEModel): VideoMAE fine-tuning leaves that norm
unused and starts `fc_norm` fresh, which `made` records.

To hold a VideoMAE encoder exactly, the model needs `pos_embed: sincos` (the fixed sinusoid over the flattened
(t, y, x) index); `fc_norm: true` with `pool: mean` (VideoMAE's fine-tuning head: with `fc_norm` false, a
checkpoint's `fc_norm` is reported unexpected); `qkv_bias: qv` (`none` for checkpoints without q and v biases); no
`cls_token`; and the checkpoint's dim, depth, heads, mlp_ratio and tubelet. VideoMAE's other head (the final norm,
then the first token, without CLS) has no equivalent here: such checkpoints load into `fc_norm: false`, which pools
the mean instead. LayerNorms: vtbench's eps is 1e-6, the original code's; Hugging Face configs default to
layer_norm_eps 1e-12 and build their fc_norm with 1e-5, which the model keeps at 1e-6. tests/test_init_videomae.py
measures what that changes: on a small random model the logits agree within rtol 1e-4 / atol 2e-5 with Hugging
Face's epsilons, and within float32 rounding with 1e-6 everywhere.

Position tables: the sinusoid is computed, not stored, by Hugging Face and by the original code, so the model's
own table (what VideoMAE computes for that grid) is kept and nothing is recorded. A stored `pos_embed` (1, N, D)
that is the sinusoid for N positions is likewise replaced by the model's own table. Any other stored table is
copied, or resampled to the model's nominal grid (bicubic in space as VideoMAE's fine-tuning does, linear in
time) and recorded in `made`; its grid is inferred from N (a square spatial grid, the model's spatial grid, its
frame count or VideoMAE's 16 frames) and an N that fits no grid, or several, is refused.

What cannot be mapped (layer scale, a CLS token the model lacks, another depth or width) is passed on under the
model's name for it, or its own, so that `load_into` names it as missing, unexpected or of the wrong shape.
"""

import math
import re

import torch
import torch.nn.functional as F

from vtbench.errors import ConfigError

from .embed import SinCosPosEmbed, sinusoid_table
from .video_vit import VideoViT
from .weights import Converted

VIDEOMAE_FRAMES = 16  # the clip length every VideoMAE checkpoint was trained on
DECODER = ("decoder.", "encoder_to_decoder.", "mask_token")
PREFIXES = ("encoder.", "backbone.")  # a pretraining checkpoint's encoder; mmaction2's backbone

_HF_LAYER = re.compile(r"^videomae\.encoder\.layer\.(\d+)\.(.+)$")
_HF_RENAMES = {  # within a layer
    "attention.output.dense.": "attn.proj.",
    "layernorm_before.": "norm1.",
    "layernorm_after.": "norm2.",
    "intermediate.dense.": "mlp.fc1.",
    "output.dense.": "mlp.fc2.",
}
_HF_TOP = {
    "videomae.embeddings.patch_embeddings.projection.": "patch_embed.proj.",
    "videomae.layernorm.": "norm.",
    "fc_norm.": "fc_norm.",
    "classifier.": "head.",
}
_ORIGINAL_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_ORIGINAL_RENAMES = {  # within a block: the original code's names, and mmaction2's where they differ
    "gamma_1": "ls1.gamma",
    "gamma_2": "ls2.gamma",
    "mlp.layers.0.0.": "mlp.fc1.",
    "mlp.layers.1.": "mlp.fc2.",
}
_ORIGINAL_TOP = {"patch_embed.projection.": "patch_embed.proj.", "cls_head.fc_cls.": "head."}


def from_videomae(state: dict[str, torch.Tensor], model: VideoViT) -> Converted:
    """`state` (a VideoMAE checkpoint in any layout above) in `model`'s names."""
    if not isinstance(model, VideoViT):
        raise ConfigError(f"VideoMAE checkpoints load into the joint model (arch: joint), not {type(model).__name__}")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    dropped = {k: "the pretraining decoder's, not part of the encoder" for k in state if k.startswith(DECODER)}
    state = {k: v for k, v in state.items() if k not in dropped}
    names: dict[str, str] = {}  # model key -> checkpoint key, for the keys outside the blocks
    bare = any(k.startswith(("embeddings.patch_embeddings.", "encoder.layer.")) for k in state)  # VideoMAEModel
    if bare:
        state = {f"videomae.{k}": v for k, v in state.items()}
    if any(k.startswith("videomae.") for k in state):
        ours = _from_hf(state, names)
        if bare:
            names = {k: v.removeprefix("videomae.") for k, v in names.items()}
    else:
        ours = _from_original(state, names)
    converted = Converted(ours, dropped=dropped)
    _position_table(converted, model)
    _backbone_only(converted, model, names)
    return converted


def _rename(key: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key


def _from_hf(state: dict[str, torch.Tensor], names: dict[str, str]) -> dict[str, torch.Tensor]:
    ours: dict[str, torch.Tensor] = {}
    attention: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        layer = _HF_LAYER.match(key)
        if layer is None:
            names[_rename(key, _HF_TOP)] = key
            ours[_rename(key, _HF_TOP)] = value
            continue
        index, rest = int(layer.group(1)), layer.group(2)
        if rest.startswith("attention.attention."):
            attention.setdefault(index, {})[rest.removeprefix("attention.attention.")] = value
        else:
            ours[f"blocks.{index}.{_rename(rest, _HF_RENAMES)}"] = value
    for index, parts in attention.items():
        aliases = {"q_bias": "query.bias", "v_bias": "value.bias"}
        parts = {aliases.get(k, k): v for k, v in parts.items()}
        weights = ("query.weight", "key.weight", "value.weight")
        if all(n in parts for n in weights):
            ours[f"blocks.{index}.attn.qkv.weight"] = torch.cat([parts.pop(n) for n in weights])
        if "query.bias" in parts and "value.bias" in parts:
            q, v = parts.pop("query.bias"), parts.pop("value.bias")
            k = parts.pop("key.bias", torch.zeros_like(q))
            ours[f"blocks.{index}.attn.qkv.bias"] = torch.cat([q, k, v])
        for name, value in parts.items():  # what did not fit: passed on under its own name, for load_into to name
            ours[f"videomae.encoder.layer.{index}.attention.attention.{name}"] = value
    return ours


def _from_original(state: dict[str, torch.Tensor], names: dict[str, str]) -> dict[str, torch.Tensor]:
    ours: dict[str, torch.Tensor] = {}
    biases: dict[int, dict[str, torch.Tensor]] = {}
    for original, value in state.items():
        key = original
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        block = _ORIGINAL_BLOCK.match(key)
        if block is None:
            names[_rename(key, _ORIGINAL_TOP)] = original
            ours[_rename(key, _ORIGINAL_TOP)] = value
            continue
        index, rest = int(block.group(1)), block.group(2)
        if rest in ("attn.q_bias", "attn.v_bias"):
            biases.setdefault(index, {})[rest] = value
        else:
            ours[f"blocks.{index}.{_rename(rest, _ORIGINAL_RENAMES)}"] = value
    for index, parts in biases.items():
        if len(parts) == 2:
            q, v = parts["attn.q_bias"], parts["attn.v_bias"]
            ours[f"blocks.{index}.attn.qkv.bias"] = torch.cat([q, torch.zeros_like(q), v])
        else:
            ours.update({f"blocks.{index}.{k}": v for k, v in parts.items()})
    return ours


def _position_table(converted: Converted, model: VideoViT) -> None:
    """Fill `pos_embed.table` for a sincos model: the model's own sinusoid, or the checkpoint's learned table,
    resampled to the model's nominal grid where the grids differ."""
    state = converted.state
    if not isinstance(model.pos_embed, SinCosPosEmbed):
        return  # a stored `pos_embed` stays under its own name: unexpected for the separable table
    own = model.pos_embed.table
    grid = model.pos_embed.grid
    if "pos_embed" not in state:
        state["pos_embed.table"] = own.detach().clone()
        return
    table = state.pop("pos_embed")
    table = table.reshape(table.shape[-2], table.shape[-1]) if table.dim() == 3 and table.shape[0] == 1 else table
    if table.dim() != 2 or table.shape[1] != own.shape[1]:
        state["pos_embed.table"] = table  # another width: load_into reports the shape
        return
    n = table.shape[0]
    if torch.allclose(table.float(), sinusoid_table(n, table.shape[1]), atol=1e-5):
        state["pos_embed.table"] = own.detach().clone()
        if n != own.shape[0]:
            converted.made["pos_embed.table"] = (f"the checkpoint's is VideoMAE's fixed sinusoid for {n} positions; "
                                                 f"the model's own for its grid {grid} is used")
        return
    patches = state.get("patch_embed.proj.weight")
    source = _table_grid(n, grid, patches.shape[2] if patches is not None and patches.dim() == 5 else None)
    if source == grid:
        state["pos_embed.table"] = table
        return
    state["pos_embed.table"] = resample_table(table, source, grid)
    converted.made["pos_embed.table"] = (f"the checkpoint's pos_embed resampled from grid {source} to {grid}: "
                                         "bicubic in space, linear in time")


def _table_grid(n: int, grid: tuple[int, int, int], tubelet_frames: int | None) -> tuple[int, int, int]:
    """The (T, H, W) grid of a checkpoint's table of `n` positions: square in space, and sharing the model's
    spatial grid, or its frame count, or coming from VideoMAE's 16-frame clips (in the checkpoint's tubelets)."""
    t, h, w = grid
    if n == t * h * w:
        return grid  # as VideoMAE's fine-tuning assumes: the same number of positions, the same grid
    candidates = []
    if h == w and n % (h * w) == 0:
        candidates.append((n // (h * w), h, w))
    lengths = [t] + ([VIDEOMAE_FRAMES // tubelet_frames] if tubelet_frames else [])
    for frames in lengths:
        side = math.isqrt(n // frames) if n % frames == 0 else 0
        if side and side * side * frames == n:
            candidates.append((frames, side, side))
    candidates = list(dict.fromkeys(candidates))
    if len(candidates) != 1:
        found = "fits none" if not candidates else "fits " + " and ".join(map(str, candidates))
        raise ConfigError(f"init: the checkpoint's pos_embed has {n} positions, which {found} of the grids "
                          f"that can be inferred for the model's {grid} (square in space, the model's spatial grid, "
                          f"its frame count or VideoMAE's {VIDEOMAE_FRAMES} frames)")
    return candidates[0]


def resample_table(table: torch.Tensor, old: tuple[int, int, int], new: tuple[int, int, int]) -> torch.Tensor:
    """(T*H*W, D) table over grid `old` -> (T'*H'*W', D) over `new`: bicubic in space, then linear in time
    (align_corners=False)."""
    dim = table.shape[-1]
    x = table.float().reshape(*old, dim).permute(0, 3, 1, 2)  # (T, D, H, W)
    if old[1:] != new[1:]:
        x = F.interpolate(x, size=new[1:], mode="bicubic", align_corners=False)
    x = x.permute(2, 3, 1, 0).reshape(-1, dim, old[0])  # (H'*W', D, T)
    if old[0] != new[0]:
        x = F.interpolate(x, size=new[0], mode="linear", align_corners=False)
    return x.permute(2, 0, 1).reshape(-1, dim).to(table.dtype)  # (T', H'*W', D) flattened


def _backbone_only(converted: Converted, model: VideoViT, names: dict[str, str]) -> None:
    """A checkpoint without classifier nor fc_norm (a pretraining encoder, a bare VideoMAEModel) into a model that
    pools with `fc_norm`: as VideoMAE fine-tuning does, start fc_norm fresh and leave the encoder's final norm, if
    it has one, unused; and say so."""
    state = converted.state
    if model.fc_norm is None or any(k.startswith(("fc_norm.", "head.")) for k in state):
        return
    for key in [k for k in state if k.startswith("norm.")]:
        state.pop(key)
        converted.dropped[names.get(key, key)] = ("the encoder's final norm: VideoMAE fine-tuning with mean "
                                                  "pooling and fc_norm does not use it")
    for name, value in model.fc_norm.state_dict().items():
        state[f"fc_norm.{name}"] = torch.ones_like(value) if name == "weight" else torch.zeros_like(value)
        converted.made[f"fc_norm.{name}"] = ("fresh (weight ones, bias zeros): the checkpoint has no fc_norm nor "
                                             "classifier; VideoMAE fine-tuning starts it so")
