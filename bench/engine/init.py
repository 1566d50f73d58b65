"""Where a run's weights start: at random (`init: {}`), or from a checkpoint file.

    init: {file: vit_small.safetensors, format: timm, inflate: central}   # an image ViT, inflated to video
    init: {file: videomae_b.pth, format: videomae}                         # a VideoMAE checkpoint (HF or original)
    init: {file: results/runs/0a1b2c3d4e5f, format: vtbench}               # a finished vtbench run's weights

Every key of the model must come from the file (or be made from it: an inflated kernel, a resampled position
table), every key of the file must find its place, except the classifier, which is replaced when the class count
differs; anything else is one error naming the keys, unless `strict: false`. What was loaded, made, replaced or
left at random goes into summary.json (`init`). The file enters the run id by its content (`fingerprint`), so a
moved file is the same start and a changed one another.

An image or VideoMAE checkpoint loads into the model as built, before the methods adapt it; a vtbench run's
weights load after them, into the model its own methods made (a frozen_spatial run's adapter, Flux's heads).
"""

import hashlib
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from vtbench.engine import results
from vtbench.errors import ConfigError, VtbenchError
from vtbench.models import DEFAULTS_BEFORE_STATED, build_model
from vtbench.models.inflate import INFLATIONS, TEMPORAL, from_timm
from vtbench.models.videomae import from_videomae
from vtbench.models.weights import Converted, load_into, read_state

# each format's own options, with the values each allows (the first is the default)
FORMATS: dict[str, dict[str, tuple]] = {
    "timm": {"inflate": INFLATIONS, "temporal": TEMPORAL},
    "videomae": {},
    "vtbench": {},
}
COMMON = ("file", "format", "strict")
AFTER_METHODS = ("vtbench",)  # formats whose weights fit the model as the methods made it
_hashes: dict[tuple, str] = {}  # (path, size, mtime) -> sha256: a checkpoint is hashed once per process


def check_init(init: dict[str, Any], arch: str, model: str, model_args: dict[str, Any]) -> None:
    """Refuse, in one line naming the key, an init setting that cannot work, before anything is written."""
    if not init:
        return
    fmt = init.get("format")
    if fmt not in FORMATS:
        raise ConfigError(f"init.format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    allowed = (*COMMON, *FORMATS[fmt])
    unknown = sorted(set(init) - set(allowed))
    if unknown:
        raise ConfigError(f"init.{unknown[0]} is not an option of format {fmt}; allowed: {', '.join(allowed)}")
    for key, values in FORMATS[fmt].items():
        if key in init and init[key] not in values:
            raise ConfigError(f"init.{key} must be one of {', '.join(values)}; got {init[key]!r}")
    if not isinstance(init.get("strict", True), bool):
        raise ConfigError(f"init.strict must be true or false; got {init['strict']!r}")
    if fmt == "videomae" and arch != "joint":
        raise ConfigError("init.format videomae loads into the joint model: set arch=joint")
    if "temporal" in init and arch != "factorised":
        raise ConfigError(f"init.temporal starts the factorised model's temporal encoder; arch is {arch}")
    if "file" not in init:
        raise ConfigError(f"init needs a file (init.file=PATH) for format {fmt}")
    checkpoint_path(init)
    if fmt == "vtbench":
        _same_model(init, arch, model, model_args)


def _same_model(init: dict[str, Any], arch: str, model: str, model_args: dict[str, Any]) -> None:
    """A finished run's weights fit only the model it trained: the same preset, architecture and options."""
    folder = checkpoint_path(init).parent
    parent = yaml.safe_load((folder / results.CONFIG).read_text()) if (folder / results.CONFIG).is_file() else {}
    arch_then = parent.get("arch", "joint")
    # a config.yaml written before a default was stated ran with the default of its time
    theirs = {"model": parent.get("model", "vit_tiny"), "arch": arch_then,
              "model_args": {**DEFAULTS_BEFORE_STATED.get(arch_then, {}), **(parent.get("model_args") or {})}}
    ours = {"model": model, "arch": arch, "model_args": model_args}
    differs = [f"{k} {theirs[k]!r} (this run: {ours[k]!r})" for k in ours if theirs[k] != ours[k]]
    if differs:
        raise ConfigError(f"init.file {init['file']}: the run trained another model: {'; '.join(differs)}")


def checkpoint_path(init: dict[str, Any]) -> Path:
    """The file `init` names; for a vtbench run, its folder's checkpoint, and only once the run has ended."""
    path = Path(str(init["file"]))
    if not path.exists():
        raise ConfigError(f"init.file {path} does not exist")
    if init["format"] != "vtbench":
        if not path.is_file():
            raise ConfigError(f"init.file {path} is not a file")
        return path
    folder = path if path.is_dir() else path.parent
    summary = folder / results.SUMMARY
    status = results.read_json(summary).get("status") if summary.is_file() else None
    if status != "completed":
        said = f"its {results.SUMMARY} says {status}" if status else f"it has no {results.SUMMARY}"
        raise ConfigError(f"init.file {path} is not a completed vtbench run ({said}); give the folder of a run "
                          "that completed")
    checkpoint = folder / results.CHECKPOINT
    if not checkpoint.is_file():
        raise ConfigError(f"init.file {path}: the run's {results.CHECKPOINT} is missing")
    return checkpoint


def _sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _hashes:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _hashes[key] = digest.hexdigest()
    return _hashes[key]


def options(init: dict[str, Any]) -> dict[str, Any]:
    """`init` with every option of its format at its value or default (`strict` too): one start, one spelling."""
    fmt = init["format"]
    return {"file": init["file"], "format": fmt, "strict": init.get("strict", True),
            **{key: init.get(key, values[0]) for key, values in FORMATS[fmt].items()}}


def fingerprint(init: dict[str, Any]) -> dict[str, Any]:
    """`init` with its defaults filled in and the file replaced by the sha256 of its content (what the run id
    hashes)."""
    return {**options(init), "file": _sha256(checkpoint_path(init))}


def init_label(init: dict[str, Any]) -> str:
    """A short name for a start: `scratch`, or the format and the file's name (`timm:image_vit.safetensors`)."""
    if not init:
        return "scratch"
    return f"{init['format']}:{Path(str(init['file'])).name}"


def _run_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix: one line naming it
        raise ConfigError(f"init.file {path} cannot be read as a vtbench checkpoint: "
                          f"{str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ConfigError(f"init.file {path} holds no model weights")
    return dict(state["model"])


def apply_init(model: nn.Module, init: dict[str, Any], after_methods: bool) -> dict[str, Any] | None:
    """Load `init` into `model` if its format loads at this point (before the methods adapt the model, or after);
    what happened, for summary.json, or None."""
    if not init or (init["format"] in AFTER_METHODS) != after_methods:
        return None
    path = checkpoint_path(init)
    chosen = options(init)
    fmt = chosen["format"]
    if fmt == "vtbench":
        converted = Converted(_run_weights(path))
    else:
        state = read_state(path)
        converted = from_timm(state, model, chosen["inflate"], chosen["temporal"]) if fmt == "timm" else \
            from_videomae(state, model)
    report = load_into(model, converted, f"{fmt} checkpoint {path}", strict=chosen["strict"])
    return {**chosen, "file": str(path), "sha256": _sha256(path), **report.summary()}


def check_fits(config) -> None:
    """Load `config.init` into a throw-away copy of its model, so that a checkpoint that does not fit is refused
    before any process starts or any folder is written. A vtbench run's weights are checked by the run itself
    (after its methods made the model); `check_init` has already refused one of another model."""
    if not config.init or config.init["format"] in AFTER_METHODS:
        return
    try:
        model = build_model(config.model, config.arch, 2, config.frames, config.size, **config.model_args)
    except VtbenchError:
        return  # the run names this itself
    apply_init(model, config.init, after_methods=False)
