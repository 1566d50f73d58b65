import contextlib

import pytest

from vtbench.engine.config import RunConfig


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


@contextlib.contextmanager
def throwaway(make_cluster, unavailable: type[Exception], what: str):
    """A server the tests start (tests/postgres.py, tests/slurm.py): what its `start()` gives, skipping the test
    when it cannot be started here; stopped at the end."""
    try:
        cluster = make_cluster()
        started = cluster.start()
    except unavailable as err:
        pytest.skip(f"{what} cannot be started here: {err}")
    try:
        yield started
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """URL of a PostgreSQL server: VTBENCH_POSTGRES_URL, or a throw-away cluster started here."""
    import os

    from postgres import Cluster, Unavailable

    if os.environ.get("VTBENCH_POSTGRES_URL"):
        yield os.environ["VTBENCH_POSTGRES_URL"]
        return
    with throwaway(Cluster, Unavailable, "PostgreSQL") as url:
        yield url


@pytest.fixture
def postgres_url(postgres_server, request):
    """A fresh database per test."""
    from postgres import create_database

    return create_database(postgres_server, "t_" + request.node.name.lower()[:40].replace("[", "_").replace("]", ""))


@pytest.fixture(scope="session")
def slurm_env():
    """The environment (SLURM_CONF) of a throw-away single-node SLURM without accounting, started here."""
    from slurm import Cluster, Unavailable

    pytest.importorskip("submitit")
    with throwaway(Cluster, Unavailable, "SLURM") as env:
        yield env
