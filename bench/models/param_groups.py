"""Optimizer parameter groups of a video model, from the model's own answers to timm's two questions:
`no_weight_decay()` (parameters kept out of weight decay besides the 1-D ones) and `group_matcher()` (each
parameter's depth from the input, for layer-wise learning-rate decay: BEiT's, as VideoMAE fine-tunes, each block's
rate times `layer_decay` per block above it, the head at the full rate). timm's own grouping does the rest."""

from timm.optim import param_groups_layer_decay, param_groups_weight_decay
from torch import nn

from vtbench.errors import ConfigError


def positions_and_class_tokens(model: nn.Module) -> set[str]:
    """The names of a model's position tables and class tokens, which video transformers keep out of weight decay."""
    return {n for n, _ in model.named_parameters() if "pos" in n or n.endswith("_cls") or n.endswith("cls_token")}


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
    """AdamW's groups; with `layer_decay` < 1 each group carries its `lr_scale` (the runner multiplies by it)."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else positions_and_class_tokens(model)
    if layer_decay >= 1:
        return param_groups_weight_decay(model, weight_decay, no_weight_decay_list=skip)
    if not hasattr(model, "group_matcher"):
        raise ConfigError(f"layer_decay needs a model that orders its layers (group_matcher); "
                          f"{type(model).__name__} does not")
    return param_groups_layer_decay(model, weight_decay, no_weight_decay_list=sorted(skip), layer_decay=layer_decay)
