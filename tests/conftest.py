import contextlib

import pytest

from vtbench import methods
from vtbench.engine import runner
from vtbench.engine.config import MethodSpec, RunConfig
from vtbench.engine.runner import execute
from vtbench.methods import Method


def tiny(**overrides) -> RunConfig:
    """A configuration that trains in well under a second per step on a CPU."""
    values = dict(
        model="vit_tiny", model_args={"dim": 32, "depth": 1, "heads": 2, "tubelet": [2, 4, 4]}, frames=4, size=16,
        batch_size=4,
        eval_clips=16, eval_batch_size=16, budget="10steps", log_every=1,
    )
    values.update(overrides)
    return RunConfig(**values)


class StopOnce(Method):
    """Asks the run to stop (as the grid's SLURM worker does on SIGTERM) while step `at` + 1 is chosen, once."""

    name = "stop_once"
    at = 0
    stopped = False

    def batch_shape(self, progress, step, base):
        if step == StopOnce.at and not StopOnce.stopped:
            StopOnce.stopped = True
            runner.request_stop()
        return base


def stopped_run(out, monkeypatch, budget: str, at: int, match: str = "") -> tuple[RunConfig, object]:
    """A tiny run asked to stop at step `at` (it saves its place and leaves, not ended): its config and folder."""
    monkeypatch.setitem(methods.REGISTRY, "stop_once", StopOnce)
    monkeypatch.setattr(StopOnce, "at", at - 1)
    monkeypatch.setattr(StopOnce, "stopped", False)
    config = tiny(budget=budget, methods=[MethodSpec("stop_once")])
    try:
        with pytest.raises(runner.Stopped, match=match):
            execute(config, out, progress_bar=False)
    finally:
        runner._stop_requested.clear()
    return config, out / config.resolve().run_id()


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
