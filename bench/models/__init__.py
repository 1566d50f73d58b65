"""Model presets and the builder: `build_model("vit_tiny", arch="joint", num_classes=10, frames=8, size=32)`."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import ConfigError
from .tokens import Tokens
from .video_vit import POS_EMBEDS, QKV_BIASES, VideoViT
from .vivit import ViViTFactorised

__all__ = ["PRESETS", "ARCHITECTURES", "Preset", "Tokens", "VideoViT", "ViViTFactorised", "build_model"]


@dataclass(frozen=True)
class Preset:
    dim: int
    depth: int
    heads: int
    tubelet: tuple[int, int, int]
    frames: int  # the default clip shape this preset is meant for
    size: int
    stride: int
    temporal_depth: int  # used by the factorised architecture only
    mlp_ratio: float = 4.0


PRESETS: dict[str, Preset] = {
    # vit_tiny is sized for a 2-core CPU (not timm's vit_tiny): 16 frames x 32 px in 2x8x8 tubelets, 128 tokens,
    # enough token work that the step is bound by it (README, docs/calibration.md).
    "vit_tiny": Preset(dim=128, depth=3, heads=4, tubelet=(2, 8, 8), frames=16, size=32, stride=2,
                       temporal_depth=1),
    "vit_small": Preset(dim=384, depth=12, heads=6, tubelet=(2, 16, 16), frames=16, size=224, stride=4,
                        temporal_depth=4),
    "vit_base": Preset(dim=768, depth=12, heads=12, tubelet=(2, 16, 16), frames=16, size=224, stride=4,
                       temporal_depth=4),
    # the sizes at which VideoMAE, RLT and the papers report, which need several GPUs (597 and 1192 GMACs a clip)
    "vit_large": Preset(dim=1024, depth=24, heads=16, tubelet=(2, 16, 16), frames=16, size=224, stride=4,
                        temporal_depth=4),
    "vit_huge": Preset(dim=1280, depth=32, heads=16, tubelet=(2, 16, 16), frames=16, size=224, stride=4,
                       temporal_depth=4),
}

ARCHITECTURES = {"joint": VideoViT, "factorised": ViViTFactorised}
JOINT_ONLY = ("cls_token", "pool", "pos_embed", "fc_norm", "qkv_bias")
FACTORISED_ONLY = ("temporal_depth",)


POOLS = ("mean", "cls")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 2**20


def _number_in(low: float, high: float) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int | float) and not isinstance(v, bool) and low <= v < high


# what each model argument accepts, and how to say so
MODEL_ARGS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "dim": (_positive_int, "a whole number >= 1"),
    "depth": (_positive_int, "a whole number >= 1"),
    "heads": (_positive_int, "a whole number >= 1"),
    "temporal_depth": (_positive_int, "a whole number >= 1"),
    "tubelet": (lambda v: isinstance(v, list | tuple) and len(v) == 3 and all(map(_positive_int, v)),
                "three whole numbers >= 1, [frames, height, width]"),
    "mlp_ratio": (_number_in(1e-3, 1e3), "a number in (0, 1000)"),
    "drop_path": (_number_in(0.0, 1.0), "a number in [0, 1)"),
    "cls_token": (lambda v: isinstance(v, bool), "true or false"),
    "pool": (lambda v: v in POOLS, f"one of {', '.join(POOLS)}"),
    # sincos (a run's default, `run_defaults`): VideoMAE's fixed sinusoid over the (t, y, x) index; separable (the
    # model class's default, and a run's from a timm image checkpoint): learned space + time tables
    "pos_embed": (lambda v: v in POS_EMBEDS, f"one of {', '.join(POS_EMBEDS)}"),
    # true: no norm on the tokens, a LayerNorm (`fc_norm`) on the mean-pooled feature (VideoMAE); default false
    "fc_norm": (lambda v: isinstance(v, bool), "true or false"),
    # all (default): timm's q, k and v biases; qv: VideoMAE's q and v biases, the k bias held at zero; none
    "qkv_bias": (lambda v: v in QKV_BIASES, f"one of {', '.join(QKV_BIASES)}"),
}


def model_args(preset: str, arch: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The preset's model arguments with `overrides` applied, each checked by name, type and range."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown model preset {preset!r}; known: {', '.join(PRESETS)}")
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown arch {arch!r}; known: {', '.join(ARCHITECTURES)}")
    base = PRESETS[preset]
    args = {
        "dim": base.dim, "depth": base.depth, "heads": base.heads, "tubelet": base.tubelet,
        "mlp_ratio": base.mlp_ratio,
    }
    if arch == "factorised":
        args["temporal_depth"] = base.temporal_depth
    allowed = set(args) | {"drop_path"} | set(JOINT_ONLY if arch == "joint" else FACTORISED_ONLY)
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ConfigError(f"unknown model_args {unknown} for arch {arch!r}; allowed: {', '.join(sorted(allowed))}")
    for key, value in overrides.items():
        accepts, expected = MODEL_ARGS[key]
        if not accepts(value):
            raise ConfigError(f"model_args.{key} must be {expected}, got {value!r}")
    if overrides.get("fc_norm") and overrides.get("pool") == "cls":
        raise ConfigError("model_args.fc_norm normalises the mean-pooled feature; it does not go with pool: cls")
    args.update(overrides)
    args["tubelet"] = tuple(args["tubelet"])
    if args["dim"] % args["heads"]:
        raise ConfigError(f"model_args.dim ({args['dim']}) must be a multiple of model_args.heads ({args['heads']})")
    return args


def run_defaults(arch: str, init_format: str | None) -> dict[str, Any]:
    """Model arguments a run states in its resolved config when it does not set them.

    `pos_embed`: `sincos` from scratch or from a VideoMAE or vtbench checkpoint: the fixed table gives every token
    its place in time from the first step, where the learned one starts near zero (timm's 0.02) and must be learnt
    before frames can be ordered. From scratch on camera-motion clips, unflipped, at 3e12 FLOPs, it read 36.7% against
    17.5% (seeds 0-2, 28.3 to 43.8 against 17.1 to 18.3; docs/calibration.md, "Real clips"). `separable` from a
    timm image checkpoint, whose learned table it inflates."""
    if arch != "joint":
        return {}
    return {"pos_embed": "separable" if init_format == "timm" else "sincos"}


# model arguments as runs made before each was stated in the resolved config: a run that sets one to this value is
# the run it was before (the same id), so its results stay found
DEFAULTS_BEFORE_STATED: dict[str, dict[str, Any]] = {"joint": {"pos_embed": "separable"}}


def build_model(preset: str, arch: str, num_classes: int, frames: int, size: int, **overrides) -> nn.Module:
    args = model_args(preset, arch, overrides)
    try:
        return ARCHITECTURES[arch](num_classes=num_classes, frames=frames, size=size, **args)
    except ValueError as err:
        raise ConfigError(f"model {preset!r} ({arch}): {err}") from err
