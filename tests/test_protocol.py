"""The evaluation protocol every run shares (vtbench.methods.reductions): names, composition with the methods' own
selections, and the same settings for the baseline and for every method."""

import json

import pandas as pd
import pytest
import torch
from conftest import tiny

from vtbench import methods
from vtbench.engine.config import MethodSpec
from vtbench.engine.runner import execute
from vtbench.errors import ConfigError
from vtbench.methods import Method
from vtbench.methods.reductions import Reduction, resolve_sweep
from vtbench.methods.selection import group_dynamic_select, with_motion
from vtbench.models import build_model

GRID = (2, 4, 4)  # tiny(): 4 frames x 16 px in 2x4x4 tubelets, 32 tokens


def test_names_say_what_a_setting_does_and_fractions_resolve_to_counts():
    assert resolve_sweep(["keep=.5,random", "keep=0.25, magnitude", "tokens=1/4,group", "tokens=0.5,group",
                          "tokens=12,group"], GRID) == [
        "keep=0.5,random", "keep=0.25,magnitude", "tokens=8,group", "tokens=16,group", "tokens=12,group"]
    assert tiny().resolve().eval_sweep == [
        "keep=0.8,random", "keep=0.8,magnitude", "keep=0.6,random", "keep=0.6,magnitude", "keep=0.4,random",
        "keep=0.4,magnitude", "keep=0.2,random", "keep=0.2,magnitude", "tokens=16,group", "tokens=8,group"]
    assert tiny(eval_sweep=[]).resolve().eval_sweep == []


@pytest.mark.parametrize("entry, message", [
    ("keep=1,random", r"keep must lie in \(0, 1\)"),
    ("keep=0.5,group", "is not an evaluation setting"),
    ("tokens=8,random", "is not an evaluation setting"),
    ("keep=0.5,entropy", "is not an evaluation setting"),
    ("tokens=40,group", "between 1 and the base count 32"),
    ("keep=x,random", "is not an evaluation setting"),
])
def test_bad_settings_are_named_before_anything_runs(entry, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        execute(tiny(eval_sweep=["keep=0.5,random", entry]), tmp_path, progress_bar=False)
    assert not any(tmp_path.iterdir())


def test_a_setting_listed_twice_or_below_one_token_per_group_is_refused():
    with pytest.raises(ConfigError, match="listed twice"):
        resolve_sweep(["tokens=16,group", "tokens=1/2,group"], GRID)
    with pytest.raises(ConfigError, match="none at this budget"):  # four frame groups: 3 // 4 = 0 per group
        resolve_sweep(["tokens=3,group"], (4, 4, 4))


def _tokens(frames=8, size=16, seed=0):
    torch.manual_seed(seed)
    model = build_model("vit_tiny", "joint", 5, frames, size, dim=32, depth=1, heads=2, tubelet=(2, 4, 4))
    return model.embed(torch.randn(3, 3, frames, size, size))


def test_each_reduction_keeps_its_count_the_same_subset_every_time():
    tokens = _tokens()  # 64 tokens
    random, magnitude = Reduction("random", keep=0.4), Reduction("magnitude", keep=0.4)
    assert random(tokens).count == magnitude(tokens).count == round(0.4 * 64)
    assert torch.equal(random(tokens).pos, random(tokens).pos)  # a fixed seed: the same draw at every evaluation
    top = tokens.x.abs().sum(-1).topk(26).indices.sort().values
    assert torch.equal(magnitude(tokens).pos, tokens.pos.gather(1, top.unsqueeze(-1).expand(-1, -1, 3)))
    assert Reduction("group", tokens=16)(tokens).count == 16


class FirstHalf(Method):
    """Keeps the first half of the tokens at evaluation, as a method with its own evaluation selection would."""

    name = "first_half"

    def select_tokens(self, tokens, progress, training):
        return tokens.gather(torch.arange(tokens.count // 2).expand(tokens.x.shape[0], -1))


def test_a_reduction_runs_after_the_methods_own_selections():
    tokens = _tokens()
    chain = lambda t: FirstHalf().select_tokens(t, 1.0, training=False)  # noqa: E731
    kept = Reduction("random", keep=0.2).after(chain)(tokens)
    assert kept.count == round(0.2 * 64) and (kept.pos[..., 0] < 2).all()  # drawn from the chain's first half
    assert Reduction("random", keep=0.8).after(chain)(tokens).count == 32  # the chain already kept fewer
    grouped = Reduction("group", tokens=8).after(chain)(tokens)  # motion scored on the full grid, before the chain
    assert grouped.count == 8 and (grouped.pos[..., 0] < 2).all()


def test_group_selection_after_a_group_selection_is_the_smaller_budget_directly():
    tokens = with_motion(_tokens(frames=16, seed=1))  # 8 temporal tokens: 4 groups of 2
    nested = group_dynamic_select(group_dynamic_select(tokens, 64), 32)
    assert torch.equal(nested.pos, group_dynamic_select(tokens, 32).pos)


def _final_settings(run_dir):
    evals = pd.read_parquet(run_dir / "evals.parquet")
    return evals[evals["point"] == 1.0].set_index("setting")


@pytest.fixture
def first_half(monkeypatch):
    monkeypatch.setitem(methods.REGISTRY, "first_half", FirstHalf)


def test_every_run_baseline_included_is_evaluated_under_the_same_settings(tmp_path, first_half):
    lists = {"baseline": [], "token_dropout": [MethodSpec("token_dropout", {"keep": 0.5})],
             "pss": [MethodSpec("pss")], "flux": [MethodSpec("flux")],
             "first_half": [MethodSpec("first_half"), MethodSpec("token_dropout", {"keep": 0.5})]}
    finals = {name: _final_settings(execute(tiny(budget="6steps", methods=specs, eval_every=0.5), tmp_path,
                                            progress_bar=False)) for name, specs in lists.items()}
    sweep = tiny().resolve().eval_sweep
    for name, final in finals.items():
        assert set(sweep) | {"default"} <= set(final.index), name
    base = finals["baseline"]
    assert base.loc["keep=0.4,random", "tokens"] == base.loc["keep=0.4,magnitude", "tokens"] == 13
    assert base.loc["tokens=8,group", "tokens"] == 8 and base.loc["default", "tokens"] == 32
    assert finals["token_dropout"].loc["keep=0.5,random", "tokens"] == 16  # its training ratio, a shared name
    assert finals["flux"].loc["tokens=8,group", "tokens"] == 8
    assert set(finals["flux"]["stride"]) == {0} and set(base["stride"]) == {tiny().resolve().stride}
    composed = finals["first_half"]  # the sweep composes with a method's own evaluation selection
    assert composed.loc["default", "tokens"] == 16 and composed.loc["keep=0.8,random", "tokens"] == 16
    assert composed.loc["keep=0.2,magnitude", "tokens"] == 6
    intermediate = pd.read_parquet(next(tmp_path.glob("*/evals.parquet")))
    assert set(intermediate[intermediate["point"] < 1]["setting"]) == {"default"}


def test_the_sweep_at_every_point_on_request(tmp_path):
    config = tiny(budget="4steps", eval_every=0.5, eval_sweep=["keep=0.5,random"], eval_sweep_at="every")
    evals = pd.read_parquet(execute(config, tmp_path, progress_bar=False) / "evals.parquet")
    assert evals.groupby("point")["setting"].apply(sorted).tolist() == [["default", "keep=0.5,random"]] * 2
    summary = json.loads((tmp_path / config.resolve().run_id() / "summary.json").read_text())
    assert set(summary["final_eval"]) == {"default", "keep=0.5,random"}
