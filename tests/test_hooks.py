"""A test-only method plugged into the runner shows every hook being called at its place."""

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny

from vtbench import methods
from vtbench.core.budget import lr_factor
from vtbench.engine.config import MethodSpec
from vtbench.engine.runner import execute
from vtbench.errors import ConfigError
from vtbench.methods import EvalSetting, Method, MethodStack

KEEP = 5


class Probe(Method):
    name = "probe"

    def __init__(self, odd_clips: int = 3):
        self.odd_clips = odd_clips
        self.prepared_with = None
        self.steps_seen = 0

    def prepare(self, run):
        self.prepared_with = type(run.model).__name__
        run.model.head.bias.data.fill_(0.0)

    def batch_shape(self, progress, step, base):
        return base._replace(clips=self.odd_clips) if step % 2 else base

    def lr_scale(self, progress, shape):
        return 0.5

    def select_tokens(self, tokens, progress, training):
        if not training:
            return tokens
        return tokens.gather(torch.arange(KEEP).expand(tokens.x.shape[0], -1))

    def training_loss(self, model, batch, progress, select, label_smoothing):
        video, labels = batch
        self.steps_seen += 1
        logits = model(video, select=select)  # the list's training selection, this method's own
        return F.cross_entropy(logits, labels) + 100.0

    def eval_settings(self):
        def half(tokens):
            return tokens.gather(torch.arange(tokens.count // 2).expand(tokens.x.shape[0], -1))

        return [EvalSetting("probe=half", select=half)]

    def log_columns(self, progress):
        return {"probe_steps": self.steps_seen}

    def state_dict(self):
        return {"steps_seen": self.steps_seen}

    def load_state_dict(self, state):
        self.steps_seen = state["steps_seen"]


@pytest.fixture
def probe(monkeypatch):
    monkeypatch.setitem(methods.REGISTRY, "probe", Probe)


def test_every_hook_is_called_at_its_place(probe, tmp_path):
    config = tiny(methods=[MethodSpec("probe")], budget="8steps", eval_sweep=[], eval_sweep_at="every")
    run_dir = execute(config, tmp_path, progress_bar=False)
    steps = pd.read_parquet(run_dir / "steps.parquet")
    evals = pd.read_parquet(run_dir / "evals.parquet")
    # batch_shape reached the data: odd steps (step index 1, 3, ...) have 3 clips
    assert steps["clips"].tolist() == [4, 3] * 4
    assert steps["used_samples"].iloc[-1] == 4 * 4 + 3 * 4
    # lr_scale reached the optimizer
    expected = [config.lr * lr_factor(p, 0.1) * 0.5 for p in [i / 8 for i in range(8)]]
    assert steps["lr"].tolist() == pytest.approx(expected)
    # select_tokens: a physically smaller token set reached the blocks
    assert (steps["tokens"] == KEEP).all() and steps["keep"].iloc[0] == pytest.approx(KEEP / 32)
    # training_loss replaced the default loss
    assert (steps["loss"] > 100).all()
    assert steps["probe_steps"].tolist() == list(range(1, 9))
    # eval_settings: an extra setting appears at every evaluation point (eval_sweep_at: every), after the
    # method's own evaluation selection (which keeps all 32 tokens)
    assert sorted(evals["setting"].unique()) == ["default", "probe=half"]
    assert len(evals) == 2 * 10
    assert set(evals.query("setting == 'probe=half'")["tokens"]) == {16}
    assert set(evals.query("setting == 'default'")["tokens"]) == {32}


def test_owned_hooks_refuse_two_owners():
    class Other(Probe):
        name = "other"

    with pytest.raises(ConfigError, match="methods probe and other both decide batch_shape"):
        MethodStack([Probe(), Other()])


def test_unknown_method_and_parameter_are_named():
    with pytest.raises(ConfigError, match="unknown method 'turbo'; known: baseline"):
        methods.build_method(MethodSpec("turbo"))
    with pytest.raises(ConfigError, match="method 'baseline' has no parameter keep; its parameters: none"):
        methods.build_method(MethodSpec("baseline", {"keep": 0.5}))


def test_selections_chain_in_list_order():
    class First(Method):
        name = "first"

        def select_tokens(self, tokens, progress, training):
            return tokens.gather(torch.arange(6).expand(tokens.x.shape[0], -1))

    class Halve(Method):
        name = "halve"

        def select_tokens(self, tokens, progress, training):
            return tokens.gather(torch.arange(tokens.count // 2).expand(tokens.x.shape[0], -1))

        def lr_scale(self, progress, shape):
            return 0.25

    stack = MethodStack([First(), Halve()])
    from vtbench.models import build_model

    model = build_model("vit_tiny", "joint", 3, 4, 16, dim=32, depth=1, heads=2, tubelet=(2, 4, 4))
    tokens = stack.select_tokens(model.embed(torch.randn(2, 3, 4, 16, 16)), 0.5, True)
    assert tokens.count == 3 and tokens.pos[0, :, 2].tolist() == [0, 1, 2]
    assert stack.lr_scale(0.5, None) == 0.25
