import pytest

from vtbench.config import RunConfig


def tiny(**overrides) -> RunConfig:
    """A configuration that trains in well under a second per step on a CPU."""
    values = dict(
        model="vit_tiny", model_args={"dim": 32, "depth": 1, "heads": 2, "tubelet": [2, 4, 4]}, frames=4, size=16,
        batch_size=4,
        eval_clips=16, eval_batch_size=16, budget="10steps", log_every=1,
    )
    values.update(overrides)
    return RunConfig(**values)


@pytest.fixture
def tiny_config():
    return tiny
