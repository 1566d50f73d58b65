"""Which clips each training step takes, and the batches the methods plan after it, for the data to prepare ahead.

Step n's batch is the `shape.clips` samples after those already trained on, each process taking its contiguous
part; a shape with a (low, high) stride gives each clip its own, drawn from the data seed and the batch's first
sample, so that a resumed run draws the same.
"""

from collections.abc import Callable

import numpy as np

from vtbench.core.shape import BatchRequest, BatchShape


class TrainingBatches:
    def __init__(self, methods, base: BatchShape, data_seed: int, part: Callable[[int], slice]):
        """`methods`: the run's method stack (its `planned_shape`); `part(clips)`: this process's share of a batch."""
        self.methods, self.base, self.data_seed, self.part = methods, base, data_seed, part

    def request(self, shape: BatchShape, first: int) -> BatchRequest:
        """This process's part of the batch of `shape` whose first clip is sample `first`."""
        stride = shape.stride
        if isinstance(stride, tuple):
            rng = np.random.default_rng([self.data_seed, first])
            stride = tuple(rng.integers(stride[0], stride[1] + 1, size=shape.clips).tolist())
        part = self.part(shape.clips)
        indices = tuple(range(first, first + shape.clips))[part]
        return BatchRequest(indices, shape.frames, shape.size, stride[part] if isinstance(stride, tuple) else stride)

    def upcoming(self, progress: float, step: int, shape: BatchShape, first: int) -> Callable[[int], BatchRequest]:
        """`following(k)`: the k-th batch (k >= 1) after step `step`'s, of `shape` from sample `first`, as the
        methods plan it at this progress (a method that plans nothing: the same shape again)."""
        plan = [(shape, first)]

        def following(k: int) -> BatchRequest:
            while len(plan) <= k:
                last, start = plan[-1]
                planned = self.methods.planned_shape(progress, step + len(plan), self.base) or last
                plan.append((planned, start + last.clips))
            return self.request(*plan[k])

        return following
