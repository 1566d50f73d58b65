"""The shape of a training batch, the currency between methods, the runner and the data."""

from collections.abc import Callable
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


class BatchRequest(NamedTuple):
    """The clips one process asks its data for in one training step: their indices in the split, frames and
    size, and the stride resolved (one int for every clip, one per clip, or 0 for segments)."""

    indices: tuple[int, ...]
    frames: int
    size: int
    stride: int | tuple[int, ...]


def consecutive(request: BatchRequest) -> Callable[[int], BatchRequest]:
    """`following(k)`: the k-th batch after `request` of its shape, each starting where the one before it ended."""
    count = len(request.indices)
    return lambda k: request._replace(indices=tuple(i + k * count for i in request.indices))
