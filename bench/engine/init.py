"""Where a run's weights start: at random (`init: {}`), or from a checkpoint file.

    init: {file: vit_small.safetensors, format: timm, inflate: central}   # an image ViT, inflated to video
    init: {file: videomae_b.pth, format: videomae}                         # a VideoMAE checkpoint (HF or original)
    init: {file: results/runs/0a1b2c3d4e5f, format: vtbench}               # a finished vtbench run's weights

Every key of the model must come from the file (or be made from it: an inflated kernel, a resampled position
table), every key of the file must find its place, except the classifier, which is replaced when the class count
differs; anything else is one error naming the keys, unless `strict: false`. What was loaded, made, replaced or
left at random goes into summary.json (`init`). The file enters the run id by its content (`fingerprint`), so a
moved file is the same start and a changed one another.
"""

import hashlib
from pathlib import Path
from typing import Any

from torch import nn

from vtbench.engine import results
from vtbench.errors import ConfigError
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
_hashes: dict[tuple, str] = {}  # (path, size, mtime) -> sha256: a checkpoint is hashed once per process


def check_init(init: dict[str, Any], arch: str) -> None:
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
    if "file" not in init:
        raise ConfigError(f"init needs a file (init.file=PATH) for format {fmt}")
    checkpoint_path(init)


def checkpoint_path(init: dict[str, Any]) -> Path:
    """The file `init` names; for a vtbench run, its folder's checkpoint, and only once the run has ended."""
    path = Path(str(init["file"]))
    if init["format"] != "vtbench":
        if not path.is_file():
            raise ConfigError(f"init.file {path} does not exist" if not path.exists() else
                              f"init.file {path} is not a file")
        return path
    folder = path if path.is_dir() else path.parent
    summary = folder / results.SUMMARY
    status = results.read_json(summary).get("status") if summary.is_file() else None
    if status != "completed":
        raise ConfigError(f"init.file {path} is not a completed vtbench run (its {results.SUMMARY} says "
                          f"{status or 'nothing'}); give the folder of a run that completed")
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


def fingerprint(init: dict[str, Any]) -> dict[str, Any]:
    """`init` with the file replaced by the sha256 of its content (what the run id hashes)."""
    return {**init, "file": _sha256(checkpoint_path(init))}


def init_label(init: dict[str, Any]) -> str:
    """A short name for a start: `scratch`, or the format and the file's name (`timm:image_vit.safetensors`)."""
    if not init:
        return "scratch"
    return f"{init['format']}:{Path(str(init['file'])).name}"


def apply_init(model: nn.Module, init: dict[str, Any]) -> dict[str, Any] | None:
    """Load `init` into `model` (before any method adapts it); what happened, for summary.json."""
    if not init:
        return None
    path = checkpoint_path(init)
    fmt = init["format"]
    options = {key: init.get(key, values[0]) for key, values in FORMATS[fmt].items()}
    if fmt == "vtbench":
        converted = Converted(dict(results.load_checkpoint(path)["model"]))
    else:
        state = read_state(path)
        converted = from_timm(state, model, **options) if fmt == "timm" else from_videomae(state, model)
    report = load_into(model, converted, f"{fmt} checkpoint {path}", strict=init.get("strict", True))
    return {"format": fmt, "file": str(path), "sha256": _sha256(path), **options, **report.summary()}
