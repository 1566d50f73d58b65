"""Optimizer parameter groups of a video model: weight decay off for 1-D parameters, position tables and class
tokens, and, for fine-tuning, layer-wise learning-rate decay (BEiT's, as VideoMAE fine-tunes: each block's rate
times `layer_decay` per block above it, the head at the full rate), through timm's own grouping."""

import re
from collections.abc import Callable

from timm.optim import param_groups_layer_decay, param_groups_weight_decay
from torch import nn

_BLOCK = re.compile(r"^(spatial_blocks|temporal_blocks|blocks)\.(\d+)\.")


def no_weight_decay(model: nn.Module) -> set[str]:
    """Parameters kept out of weight decay besides the 1-D ones: position tables and class tokens."""
    return {n for n, _ in model.named_parameters() if "pos" in n or n.endswith("_cls") or n.endswith("cls_token")}


def layer_order(model: nn.Module) -> Callable[[str], int]:
    """name -> depth of the parameter from the input: the stem 0, block i of the first encoder i + 1; in the
    factorised model the spatial norm, the temporal position table and class token and an adapter between the
    encoders next, then the temporal blocks; everything else (the final norm, the head, what methods add to the
    model) at the top, at the full rate. A temporal encoder left at its initialisation trains at its lower rate
    too, as BEiT's rule assumes every layer under the head was pretrained."""
    first = getattr(model, "spatial_blocks", None) or getattr(model, "blocks", None) or []
    temporal = getattr(model, "temporal_blocks", None) or []
    # BEiT's numbering: stem 0, blocks 1..D, everything above them D + 1 (D counts both encoders' blocks and, in
    # the factorised model, the step between them)
    top = len(first) + 1 + (len(temporal) + 1 if len(temporal) else 0)

    def order(name: str) -> int:
        found = _BLOCK.match(name)
        if found:
            index = int(found.group(2))
            return 1 + index if found.group(1) != "temporal_blocks" else len(first) + 2 + index
        if name.startswith(("patch_embed.", "pos_embed.", "cls_token", "spatial_cls")):
            return 0
        if name.startswith("spatial_norm."):
            return len(first) + 1
        if name.startswith(("temporal_pos.", "temporal_cls", "adapter.")):
            return len(first) + 1
        return top

    return order


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
    """AdamW's groups; with `layer_decay` < 1 each group carries its `lr_scale` (the runner multiplies by it)."""
    skip = no_weight_decay(model)
    if layer_decay >= 1:
        return param_groups_weight_decay(model, weight_decay, no_weight_decay_list=skip)
    order = layer_order(model)
    groups = param_groups_layer_decay(_Ordered(model, order), weight_decay, no_weight_decay_list=sorted(skip),
                                      layer_decay=layer_decay)
    return groups


class _Ordered:
    """`model` seen through timm's interface for layer decay (`named_parameters`, `group_matcher`)."""

    def __init__(self, model: nn.Module, order: Callable[[str], int]):
        self.model, self.order = model, order

    def named_parameters(self):
        return self.model.named_parameters()

    def group_matcher(self, coarse: bool = False):
        return self.order
