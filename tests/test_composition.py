"""Method lists compose: each method does what it says, and two owners of one hook are refused."""

import pandas as pd
import pytest
from conftest import tiny

from vtbench.engine.config import MethodSpec
from vtbench.engine.runner import execute
from vtbench.errors import ConfigError
from vtbench.methods.pss import keep_ratio

MODEL = {"dim": 32, "depth": 1, "heads": 2, "tubelet": [2, 8, 8]}


def _run(tmp_path, methods, budget="30steps"):
    config = tiny(frames=8, size=32, budget=budget, model_args=MODEL, methods=methods)
    return pd.read_parquet(execute(config, tmp_path, progress_bar=False) / "steps.parquet")


def _full_tokens(steps):
    return (steps["frames"] // 2) * (steps["size"] // 8) ** 2


def test_multigrid_then_token_dropout(tmp_path):
    steps = _run(tmp_path, [MethodSpec("multigrid", {"cycles": 1}), MethodSpec("token_dropout", {"keep": 0.5})])
    assert steps["frames"].nunique() > 1 and steps["clips"].nunique() > 1  # multigrid changes the shape
    expected = (_full_tokens(steps) * 0.5).round().clip(lower=1)
    assert (steps["tokens"] == expected).all()  # and token dropout halves whatever shape comes


def test_multigrid_then_pss(tmp_path):
    steps = _run(tmp_path, [MethodSpec("multigrid", {"cycles": 1}), MethodSpec("pss", {"schedule": "linear"})])
    assert steps["size"].nunique() > 1
    progress_before = (steps["step"] - 1) / 30
    keeps = progress_before.map(lambda p: keep_ratio(p, "linear"))
    expected = (_full_tokens(steps) * keeps).round().clip(lower=1)
    assert (steps["tokens"] == expected).all()


def test_flux_and_multigrid_both_own_the_batch_shape(tmp_path):
    with pytest.raises(ConfigError, match="methods flux and multigrid both decide batch_shape"):
        _run(tmp_path, [MethodSpec("flux"), MethodSpec("multigrid")])
    assert not any(tmp_path.iterdir())
