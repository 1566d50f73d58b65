"""The shape of a training batch, the currency between methods, the runner and the data."""

from typing import NamedTuple


class BatchShape(NamedTuple):
    """clips per batch, frames per clip, square frame size in pixels, temporal stride in native frames.

    `stride` is one int for every clip, or a (low, high) pair from which each clip draws its own
    stride uniformly (inclusive), as multigrid's fewer-frame stages ask; 0 asks for segment (TSN-style)
    sampling, one frame per equal segment of the whole video, as Flux does.
    """

    clips: int
    frames: int
    size: int
    stride: int | tuple[int, int]
