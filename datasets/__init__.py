"""Data sets by name. A data set answers requests for clips of any (frames, size, stride):

    dataset.batch(indices, frames, size, stride, training) -> (video (B, 3, T, S, S) float, labels (B,))

`synthetic` (the default, generated on the fly) needs no files.
"""

from typing import Any

from vtbench.errors import ConfigError

DATASETS = ("synthetic",)


def build_dataset(name: str, split: str, seed: int, length: int | None = None, **args: Any):
    """The `split` ("train" or "val") of data set `name`; `length` caps an endless (synthetic) split."""
    if name == "synthetic":
        from .synthetic import SyntheticVideos

        try:
            return SyntheticVideos(split=split, seed=seed, length=length, **args)
        except TypeError as err:
            raise ConfigError(f"data_args for synthetic: {err}") from None
    raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
