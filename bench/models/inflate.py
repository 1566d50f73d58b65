"""An image ViT checkpoint in timm's format, inflated into vtbench's video models (`VideoViT`,
`ViViTFactorised`).

`from_timm(state, model)` returns a `Converted` state dict in the model's own names, for
`vtbench.models.weights.load_into` to check against the model key by key and load: that is where a missing,
unexpected or misshapen key becomes one ConfigError, and where the classifier is replaced when the class count
differs.

What maps where (timm key -> joint model key / factorised model key):

- `patch_embed.proj.weight` (D, C, p, p) -> `patch_embed.proj.weight` (D, C, tt, p, p), inflated over the
  tubelet's tt frames: `central` puts the image kernel at frame index tt // 2 and zeros elsewhere, `average`
  repeats it on each of the tt frames divided by tt. Either way a clip of identical frames embeds as the image
  does. The kernel's spatial size must be the model's patch size: a kernel of another size is refused, not
  resampled (timm's `resample_patch_embed`, FlexiViT's pseudo-inverse, would only approximate the image model;
  set the model's tubelet to the image's patch size instead). `patch_embed.proj.bias` is copied.
- `pos_embed` (1, [1 +] h*w, D) -> `pos_embed.spatial` (H*W, D), resampled to the model's grid with timm's
  `resample_abs_pos_embed` (bicubic, as timm resamples its own checkpoints and as vtbench's embedding does) when
  the grids differ. The joint model's `pos_embed.temporal` is set to zeros, so that every frame index sees the
  image's positions (as is the factorised model's, which its forward pass never uses: its frame positions are
  `temporal_pos`). The image grid is read from the table: square, with a class position first where the image
  has a class token and the table one entry more (timm's default), none with `no_embed_class=True`; pass
  `image_grid=(h, w)` for a grid that is not square.
- `cls_token` -> `cls_token` / `spatial_cls`. vtbench's models add no position to their class token, so it
  gets the image's class token plus the image's class position (the same input to the first block as in the
  image model); with `no_embed_class=True` the image gives its class token no position and it is copied as is.
  Where the model has no class token the image's (and its position) is dropped, the reason in `dropped`; where
  the model has one and the image none, nothing is given and `load_into` names the missing key.
- `blocks.N.*` -> `blocks.N.*` / `spatial_blocks.N.*`; `norm.*` -> `norm.*` / `spatial_norm.*`; `fc_norm.*`
  (timm's pool-then-norm, whose `norm` is then an Identity without keys) -> `fc_norm.*`, its own name: it loads
  where the model has an `fc_norm` (and an Identity `norm`), and otherwise `load_into` names `fc_norm.*`
  unexpected and `norm.*` missing (norm-then-pool and pool-then-norm differ, so neither is loaded into the
  other); `head.*` -> `head.*` (replaced by `load_into` when the class count differs). Into blocks whose qkv
  projection holds the k bias at zero (`qkv_bias: qv`), the image's qkv bias goes with its k third zeroed, which
  changes no attention (a k bias adds the same logit to every key); into blocks without a qkv bias
  (`qkv_bias: none`) an image's qkv bias is named unexpected by `load_into`.
- Register tokens (`reg_token`) are refused: vtbench's models have no place for them. Any other key
  (`norm_pre`, `attn_pool`, `patch_embed.norm`, ...) passes under its own name, so that `load_into` names it.
- Where the model's position embedding holds buffers rather than parameters (`pos_embed: sincos`, VideoMAE's
  fixed sinusoid), the image's learned `pos_embed` is dropped (reason in `dropped`) and the model's own table is
  kept (recorded in `made`): the model keeps the positions it was configured with, as VideoMAE's fine-tuning keeps
  its sinusoid whatever the checkpoint holds. (Its class position still goes into the class token.) Such a model
  no longer computes the image model's function on a still clip; `pos_embed: separable` does.
- Factorised model only, the temporal side (`temporal_blocks.*`, `norm.*`, `temporal_cls`, `temporal_pos.*`,
  and the `adapter.*` a method may put between the encoders), per `temporal`:
  `random` (default): no image weight goes there; the model's own current tensors are put into the state,
  recorded in `made` as left at initialisation, so that strict loading passes because this option asked for it.
  `from_spatial`: `temporal_blocks.i` <- the image's `blocks.i` for i < temporal_depth, `norm` <- the image's
  `norm`; `temporal_cls`, `temporal_pos` and an adapter have no image counterpart and are left at
  initialisation (recorded).

What the reference does (google-research/scenic, scenic/projects/vivit/model_utils.py:
`initialise_from_train_state`, `init_posemb`, `init_embedding`, `init_encoderblock`,
`central_frame_initializer`, `average_frame_initializer`; model.py: `ViViT`, `SpaceTimeViViT`,
`ViViTClassificationModel.init_from_train_state`; configs/kinetics400/*.py), and where vtbench departs:

- Embedding: `init_embedding` inflates the 2D kernel with `central_frame_initializer` (the kernel at t // 2,
  zeros elsewhere: what every published ViViT config uses, hence vtbench's default), `average_frame_initializer`
  (tiled over t, divided by t) or `average_arp_frame_initializer` (not offered here). Same as here.
- Position embedding: `init_posemb` keeps the image's class position in front and, for the joint model, repeats
  the image grid over time (`tile`, the configs' choice); `resize_tile` first resizes it spatially (scipy zoom,
  order 1: bilinear) and then repeats it. vtbench's separable table with a zero temporal part is that repetition;
  its spatial resampling, where the grids differ, is timm's bicubic one (a departure from `resize_tile`).
- Class token: in scenic's ViT and joint ViViT the position embedding is added after the class token is
  prepended, so the class token has a position; the image's `cls` is copied where the target has `cls`, and
  dropped (with its position) where the target pools by average. vtbench folds the position into the class token
  instead: the same sum. For the factorised encoder, scenic's spatial class token is `cls_SpatialTransformer`,
  so the image's `cls` is skipped ("In restored model but not in target") and the spatial class token starts at
  zeros, its input only the image's class position (restored with the spatial position table). vtbench departs
  here: `spatial_cls` gets the image's class token plus its position, so that the spatial encoder computes on
  each frame what the image model computes on it (its class-token output).
- Temporal encoder of the factorised encoder: `initialise_from_train_state` loads the image's `Transformer` into
  `SpatialTransformer` (`vivit_transformer_key`) and fills `TemporalTransformer` only from a checkpoint that has one
  (a ViViT one); from an image checkpoint the temporal encoder (blocks, `encoder_norm`, 1D position table) and its
  class token stay at the model's initialisation. Hence the default `temporal="random"`. scenic never starts model
  2's temporal encoder from image weights; it does copy the image's attention into the temporal attention of
  factorised self-attention blocks (model 3, `init_temporal_transformer`, default true; model 4, factorised
  dot-product attention, copies the blocks as they are), while its `init_temporal_layer_norm` option only logs and
  copies nothing. `from_spatial` is vtbench's extension by that analogy, offered as an option, never the default.
- Classifier: scenic fine-tunes with `restore_output_proj=False`, so the output projection is never restored.
  vtbench loads the image's head when the class count matches; `load_into` replaces it otherwise (`replaced`).
"""

import math

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from vtbench.errors import ConfigError

from .video_vit import VideoViT
from .vivit import ViViTFactorised
from .weights import Converted

INFLATIONS = ("central", "average")
TEMPORAL = ("random", "from_spatial")
# the factorised model's keys that no image weight reaches under temporal=random
TEMPORAL_SIDE = ("temporal_blocks.", "temporal_cls", "temporal_pos.", "norm.", "adapter.")
KERNEL = "patch_embed.proj.weight"


def from_timm(state: dict[str, torch.Tensor], model: nn.Module, inflate: str = "central", temporal: str = "random",
              image_grid: tuple[int, int] | None = None) -> Converted:
    """A timm image ViT state dict -> a `Converted` one in `model`'s names (see the module docstring).

    `inflate`: how the patch kernel spreads over the tubelet's frames, `central` (default, as scenic's configs)
    or `average`. `temporal`: the factorised model's temporal encoder, `random` (default, as scenic: left at the
    model's own initialisation) or `from_spatial` (from the image's first blocks and final norm). `image_grid`:
    the image model's patch grid (h, w), needed only when it is not square."""
    if inflate not in INFLATIONS:
        raise ConfigError(f"init.inflate={inflate!r} is not allowed; choose one of {', '.join(INFLATIONS)}")
    if temporal not in TEMPORAL:
        raise ConfigError(f"init.temporal={temporal!r} is not allowed; choose one of {', '.join(TEMPORAL)}")
    if isinstance(model, ViViTFactorised):
        factorised = True
    elif isinstance(model, VideoViT):
        factorised = False
        if temporal != "random":
            raise ConfigError(f"init.temporal={temporal!r} applies to the factorised encoder (arch factorised); the "
                              f"joint model has no temporal encoder: leave init.temporal at random")
    else:
        raise ConfigError(f"init: a timm image checkpoint inflates into VideoViT or ViViTFactorised, not "
                          f"{type(model).__name__}")
    if "reg_token" in state:
        raise ConfigError(f"init: reg_token: the image model has {state['reg_token'].shape[1]} register tokens, which "
                          f"vtbench's models have no place for; allowed: timm ViTs whose only prefix token is the "
                          f"class token (reg_tokens=0)")

    target = model.state_dict()
    parameters = dict(model.named_parameters())
    out: dict[str, torch.Tensor] = {}
    made: dict[str, str] = {}
    dropped: dict[str, str] = {}
    cls_key = "spatial_cls" if factorised else "cls_token"

    # the position table and the class token (with its position, where the image has one)
    cls_position = None
    if "pos_embed" in state:
        table, cls_position, grid = _split_positions(state["pos_embed"], "cls_token" in state, image_grid)
        if "pos_embed.spatial" in parameters:
            new_grid = _model_grid(model, parameters["pos_embed.spatial"].shape[0])
            how = "the image's pos_embed" + (" without its class position" if cls_position is not None else "")
            if grid != new_grid:
                table = resample_abs_pos_embed(table[None], list(new_grid), list(grid), num_prefix_tokens=0)[0]
                how += (f", resampled from {grid[0]}x{grid[1]} to {new_grid[0]}x{new_grid[1]} "
                        f"(timm's resample_abs_pos_embed, bicubic)")
            out["pos_embed.spatial"], made["pos_embed.spatial"] = table, how
            if "pos_embed.temporal" in parameters:
                out["pos_embed.temporal"] = torch.zeros_like(target["pos_embed.temporal"])
                made["pos_embed.temporal"] = (
                    "zeros: unused by the factorised encoder (its frame positions are temporal_pos)" if factorised else
                    "zeros: every frame index sees the image's positions (scenic tiles the image table over time)")
        else:
            dropped["pos_embed"] = "the model's position table is fixed, not learned (pos_embed: sincos): it keeps " \
                                   "its own"
    for key, value in target.items():  # a fixed (buffer) position table: the model's own
        if key.startswith("pos_embed.") and key not in parameters and key not in out:
            out[key] = value.detach().clone()
            made[key] = "the model's own fixed position table (kept: not learned, and the image's is learned)"
    if "cls_token" in state:
        if cls_key in target:
            cls = state["cls_token"]
            if cls_position is not None:
                out[cls_key] = cls + cls_position.to(cls.dtype)
                made[cls_key] = "the image's class token plus its position (the model adds no position to it)"
            else:
                out[cls_key] = cls
                made[cls_key] = "the image's class token (the image gives it no position: no_embed_class)"
        else:
            dropped["cls_token"] = "the model has no class token (cls_token: false): the image's, and its position, " \
                                   "are not used"

    # the patch kernel, the blocks, the norms, the head; anything else under its own name, for load_into to name
    spatial = "spatial_" if factorised else ""
    for key, value in state.items():
        if key in ("pos_embed", "cls_token"):
            continue
        if key == KERNEL:
            out[key], made[key] = _inflate(value, model.patch_embed.tubelet, inflate)
        elif key.startswith(("blocks.", "norm.")):
            out[spatial + key] = value
            mask = _bias_mask(model, spatial + key)
            if mask is not None and mask.shape == value.shape:
                out[spatial + key] = value * mask.to(value.dtype)
                made[spatial + key] = "the image's qkv bias with its k third zeroed (qkv_bias: qv; a k bias adds " \
                                      "the same logit to every key, so attention is unchanged)"
        else:  # patch_embed.proj.bias, fc_norm.*, head.*, and what the model has no place for
            out[key] = value

    if factorised:
        _temporal_side(state, model, target, temporal, out, made)
    return Converted(out, made, dropped)


def _split_positions(pos: torch.Tensor, has_cls: bool, image_grid: tuple[int, int] | None):
    """timm's (1, [1 +] h*w, D) table -> (h*w, D) grid table, (1, 1, D) class position or None, (h, w)."""
    if pos.ndim != 3 or pos.shape[0] != 1:
        raise ConfigError(f"init: pos_embed has shape {tuple(pos.shape)}; a timm ViT's is (1, positions, dim)")
    n = pos.shape[1]
    prefixes = (1, 0) if has_cls else (0,)
    if image_grid is not None:
        h, w = image_grid
        prefix = n - h * w
        if prefix not in prefixes:
            raise ConfigError(f"init: pos_embed has {n} positions, not the {h}x{w} image grid"
                              f"{' with or without a class position' if has_cls else ''}")
    else:
        for prefix in prefixes:
            side = math.isqrt(max(n - prefix, 0))
            if n - prefix > 0 and side * side == n - prefix:
                h = w = side
                break
        else:
            raise ConfigError(f"init: pos_embed has {n} positions, not a square grid"
                              f"{' with or without a class position' if has_cls else ''}; only square image grids "
                              "are read")
    return pos[0, prefix:], (pos[:, :1] if prefix else None), (h, w)


def _bias_mask(model: nn.Module, key: str) -> torch.Tensor | None:
    """The mask of a qkv projection whose k bias is held at zero (VideoMAE's q and v biases), if `key` is its bias."""
    if not key.endswith(".attn.qkv.bias"):
        return None
    try:
        return getattr(model.get_submodule(key[: -len(".bias")]), "bias_mask", None)
    except AttributeError:  # a deeper image than the model: load_into names the key
        return None


def _model_grid(model: nn.Module, positions: int) -> tuple[int, int]:
    grid = getattr(model.pos_embed, "grid", None)
    if grid is not None:
        return tuple(grid[1:])
    side = math.isqrt(positions)
    return side, side


def _inflate(kernel: torch.Tensor, tubelet: tuple[int, int, int], how: str) -> tuple[torch.Tensor, str]:
    """(D, C, p, p) image patch kernel -> (D, C, tt, p, p) tubelet kernel, and how it was made."""
    tt, p, q = tubelet
    if kernel.ndim != 4:
        raise ConfigError(f"init: {KERNEL} has shape {tuple(kernel.shape)}; an image model's patch kernel is "
                          f"(dim, channels, height, width)")
    if tuple(kernel.shape[2:]) != (p, q):
        kh, kw = kernel.shape[2:]
        raise ConfigError(f"init: {KERNEL} is a {kh}x{kw} patch kernel; the model's tubelets are {tt}x{p}x{q} and "
                          f"only a {p}x{q} kernel inflates (allowed: model_args.tubelet [{tt}, {kh}, {kw}])")
    if how == "central":
        out = kernel.new_zeros(kernel.shape[0], kernel.shape[1], tt, p, q)
        out[:, :, tt // 2] = kernel
        return out, (f"inflated over {tt} frames: the image kernel at the central frame (index {tt // 2}), "
                     f"zeros elsewhere")
    out = kernel.unsqueeze(2).repeat(1, 1, tt, 1, 1) / tt
    return out, f"inflated over {tt} frames: the image kernel repeated on each, divided by {tt}"


def _temporal_side(state, model, target, temporal, out, made) -> None:
    """The factorised model's temporal encoder (and adapter): from the image's blocks and norm, or its own tensors."""
    if temporal == "from_spatial":
        depth = len(model.temporal_blocks)
        have = {int(k.split(".")[1]) for k in state if k.startswith("blocks.")}
        if not all(i in have for i in range(depth)):
            raise ConfigError(f"init.temporal=from_spatial: temporal_blocks.{depth - 1} needs the image's "
                              f"blocks.{depth - 1}, but the image has {len(have)} blocks; allowed: temporal_depth <= "
                              f"{len(have)}, or init.temporal=random")
        for key, value in state.items():
            if key.startswith("blocks.") and int(key.split(".")[1]) < depth:
                out["temporal_" + key] = value
                made["temporal_" + key] = f"the image's {key} (init.temporal=from_spatial)"
            elif key.startswith("norm."):
                out[key] = value
                made[key] = f"the image's {key} (init.temporal=from_spatial)"
    why = ("left at initialisation (init.temporal=random: as scenic, no image weight reaches the temporal encoder)"
           if temporal == "random" else "left at initialisation (no image counterpart)")
    for key, value in target.items():
        if key.startswith(TEMPORAL_SIDE) and key not in out:
            out[key] = value.detach().clone()
            made[key] = why
