"""Data sets by name. A data set answers requests for clips of any (frames, size, stride):

    dataset.batch(indices, frames, size, stride, training) -> (video (B, 3, T, S, S) float, labels (B,))

`synthetic` (the default, generated on the fly) needs no files; `FORMAT:ROOT` reads real videos in one of the
layouts of datasets/layouts.py (folder, list, kinetics, ssv2, ucf101, hmdb51).
"""

from typing import Any

from vtbench.errors import ConfigError

from .layouts import MIRROR_FREE
from .synthetic import SyntheticVideos
from .video import VideoDataset

DATASETS = ("synthetic", "folder:ROOT", "list:ROOT", "kinetics:ROOT", "ssv2:ROOT", "ucf101:ROOT", "hmdb51:ROOT")


def build_dataset(name: str, part: str, seed: int, length: int | None = None, device: str = "cpu", **args: Any):
    """The `part` ("train" or "val") of data set `name` (`args` are its data_args); `length` caps an endless
    (synthetic) part or a validation set. `device`: the type of device the model trains on. Where it is not the
    CPU, rendered data prepares each next batch in a background thread while the step runs, in page-locked memory
    for CUDA; on a CPU the two would share its cores, and rendering ahead made a run slower (docs/data.md).
    Decoded videos read ahead in their own worker processes (`data_args.workers`) wherever the model trains; on
    CUDA their batches travel as bytes from page-locked memory and are normalised on the GPU."""
    if name == "synthetic":
        elsewhere = {"ahead": device != "cpu", "pin": device == "cuda"}
        try:
            return SyntheticVideos(split=part, seed=seed, length=length, **{**elsewhere, **args})
        except TypeError as err:
            raise ConfigError(f"data_args for synthetic: {err}") from None
    if ":" in name:
        layout, root = name.split(":", 1)
        return VideoDataset(layout, root, part, seed, length=length, device=device, **args)
    raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


def run_defaults(name: str) -> dict[str, Any]:
    """data_args a run states in its resolved config when it does not set them: `flip` for video layouts."""
    if ":" not in name:
        return {}
    return {"flip": name.split(":", 1)[0] in MIRROR_FREE}


def defaults_before_stated(name: str) -> dict[str, Any]:
    """data_args as runs made before `run_defaults` stated them (flip was on for every layout but ssv2): a run that
    sets one to this value is the run it was before (the same id)."""
    if ":" not in name:
        return {}
    return {"flip": name.split(":", 1)[0] != "ssv2"}
