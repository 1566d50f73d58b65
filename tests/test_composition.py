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


def test_rlt_then_token_dropout_halves_what_rlt_keeps(tmp_path):
    def run(folder, methods):  # without pixel noise the synthetic background is static; one evaluation, at the end
        config = tiny(frames=8, size=32, budget="4steps", model_args=MODEL, methods=methods, data_args={"noise": 0.0},
                      eval_every=1.0, eval_clips=4)
        return pd.read_parquet(execute(config, tmp_path / folder, progress_bar=False) / "steps.parquet")

    alone = run("rlt", [MethodSpec("rlt")])
    both = run("both", [MethodSpec("rlt"), MethodSpec("token_dropout", {"keep": 0.5})])
    assert len(both) == len(alone) == 4
    full = _full_tokens(alone)
    assert (alone["tokens"] < 0.96 * full).all()  # RLT drops static tubelets (50 to 61 of 64 kept here)
    # the same clips (the data does not depend on the methods): each clip keeps round(0.5 x its RLT count)
    assert (both["tokens"] - alone["tokens"] / 2).abs().max() <= 0.5
    assert (both["tokens"] < alone["tokens"]).all()
    assert (both["keep"] == both["tokens"] / full).all()


def test_tome_with_multigrid_merges_in_every_shape(tmp_path):
    model = {**MODEL, "depth": 2}
    config = tiny(frames=8, size=32, budget="12steps", model_args=model, eval_every=1.0, eval_clips=4,
                  methods=[MethodSpec("tome", {"r": 4}), MethodSpec("multigrid", {"cycles": 1})])
    steps = pd.read_parquet(execute(config, tmp_path, progress_bar=False) / "steps.parquet")
    assert len(steps) == 12 and steps["frames"].nunique() > 1  # multigrid changes the shape
    full = _full_tokens(steps)
    # two blocks: the first sees every token, the second r = 4 fewer (at most half of them)
    expected = full - full.floordiv(2).clip(upper=4) / 2
    assert (steps["tokens"] == expected).all()
    assert (steps["tokens"] < full).all()
