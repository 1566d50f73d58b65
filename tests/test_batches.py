"""Which clips each training step takes and the batches planned after it (vtbench.engine.batches)."""

import numpy as np

from vtbench.core.shape import BatchShape
from vtbench.engine.batches import TrainingBatches
from vtbench.models.counting import counting_tokens, record


class Planner:
    """A method stack whose plan alternates two shapes by step, the second with a stride drawn per clip."""

    def planned_shape(self, progress, step, base):
        return base if step % 2 == 0 else BatchShape(6, 2, 8, (1, 3))


def whole(clips: int) -> slice:
    return slice(0, clips)


def test_a_request_is_the_clips_after_those_trained_on_and_draws_strides_from_the_first_sample():
    batches = TrainingBatches(Planner(), BatchShape(4, 4, 16, 2), data_seed=7, part=whole)
    request = batches.request(BatchShape(6, 2, 8, (1, 3)), first=40)
    assert request.indices == tuple(range(40, 46)) and (request.frames, request.size) == (2, 8)
    expected = np.random.default_rng([7, 40]).integers(1, 4, size=6).tolist()
    assert list(request.stride) == expected and len(set(expected)) > 1
    assert batches.request(BatchShape(4, 4, 16, 2), first=40).stride == 2


def test_each_rank_takes_its_part_of_the_same_draws():
    shape = BatchShape(6, 2, 8, (1, 3))
    whole_batch = TrainingBatches(Planner(), shape, 7, whole).request(shape, 40)
    parts = [TrainingBatches(Planner(), shape, 7, lambda n, r=r: slice(n * r // 2, n * (r + 1) // 2)).request(shape, 40)
             for r in range(2)]
    assert parts[0].indices + parts[1].indices == whole_batch.indices
    assert tuple(parts[0].stride) + tuple(parts[1].stride) == tuple(whole_batch.stride)


def test_the_batches_after_a_step_follow_the_plan_step_by_step():
    base = BatchShape(4, 4, 16, 2)
    batches = TrainingBatches(Planner(), base, 7, whole)
    following = batches.upcoming(0.5, step=10, shape=base, first=100)  # step 10 takes samples 100-103
    second, third = following(1), following(2)  # steps 11 (planned: 6 clips) and 12 (the base again)
    assert second.indices == tuple(range(104, 110)) and (second.frames, second.size) == (2, 8)
    assert third.indices == tuple(range(110, 114)) and third.stride == 2
    assert following(1) == second  # asked again: the same request


def test_a_pass_records_in_the_innermost_count_open_and_in_none_outside():
    record(5, 5)  # no count open: nothing kept, nothing raised
    with counting_tokens() as outer:
        record(4, 4)
        with counting_tokens() as inner:
            record(3, (3, 2))
        record(2, 2)
    assert outer.counts == [4, 2] and inner.counts == [3] and inner.lengths == [(3, 2)]
