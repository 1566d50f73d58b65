import pytest
import torch

from vtbench.engine.config import MethodSpec
from vtbench.errors import ConfigError
from vtbench.methods import build_method
from vtbench.methods.pss import PatchSamplingSchedule, keep_ratio, scheduled_drop, select_by
from vtbench.models import build_model


def test_linear_schedule_values_and_quantum():
    # drop goes 0.8 -> -0.1; rounded to 0.2 and clipped at 0
    assert scheduled_drop(0.0, "linear", 0.8, -0.1, 0.1) == pytest.approx(0.8)
    assert scheduled_drop(0.5, "linear", 0.8, -0.1, 0.1) == pytest.approx(0.35)
    assert keep_ratio(0.0, "linear") == pytest.approx(0.2)
    assert keep_ratio(0.5, "linear") == pytest.approx(0.6)  # drop 0.35 rounds to 0.4
    assert keep_ratio(0.7, "linear") == pytest.approx(0.8)  # drop 0.17 rounds to 0.2
    assert keep_ratio(0.95, "linear") == pytest.approx(1.0)  # drop -0.055 clips to 0
    assert keep_ratio(0.5, "linear", quantum=0.05) == pytest.approx(0.65)


def test_cosine_schedule_values():
    assert scheduled_drop(0.5, "cosine", 0.8, -0.1, 0.1) == pytest.approx(0.35)
    assert scheduled_drop(0.25, "cosine", 0.8, 0.0, 0.1) == pytest.approx(0.4 * (1 + 2**-0.5))
    assert keep_ratio(0.25, "cosine", end=0.0) == pytest.approx(0.4)  # drop 0.683 rounds to 0.6


def test_cyclic_schedule_is_a_triangle_per_period():
    period = 0.2
    drops = [scheduled_drop(q, "cyclic", 0.8, -0.1, period) for q in (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.45)]
    assert drops == pytest.approx([0.8, 0.35, -0.1, 0.35, 0.8, -0.1, 0.35])
    keeps = [keep_ratio(q, "cyclic", period=period) for q in (0.0, 0.05, 0.1, 0.3)]
    assert keeps == pytest.approx([0.2, 0.6, 1.0, 1.0])


def test_cooldown_trains_at_full_tokens():
    assert keep_ratio(0.85, "linear", cooldown=0.2) == 1.0
    assert keep_ratio(0.0, "linear", cooldown=0.2) == pytest.approx(0.2)
    # the schedule is compressed into the part before the cooldown: q = p / 0.8
    assert keep_ratio(0.4, "linear", cooldown=0.2) == pytest.approx(1 - round(0.35 / 0.2) * 0.2)
    # the cyclic period stays a fraction of the whole budget: the cooldown does not stretch it
    for p in (0.0, 0.025, 0.05, 0.075, 0.33, 0.55):
        assert keep_ratio(p, "cyclic", cooldown=0.2) == keep_ratio(p, "cyclic")


def test_only_a_few_token_counts_occur():
    keeps = {keep_ratio(p / 1000, "cyclic") for p in range(1000)}
    assert keeps <= {0.2, 0.4, 0.6, 0.8, 1.0} and len(keeps) == 5


def test_magnitude_keeps_exactly_the_largest_l1_tokens():
    torch.manual_seed(0)
    model = build_model("vit_tiny", "joint", 5, 4, 16, dim=32, depth=1, heads=2, tubelet=(2, 4, 4))
    tokens = model.embed(torch.randn(3, 3, 4, 16, 16))
    kept = select_by(tokens, 0.4, "magnitude")
    k = round(0.4 * 32)
    assert kept.count == k
    norms = tokens.x.abs().sum(-1)
    for b in range(3):
        expected = set(norms[b].topk(k).indices.tolist())
        t, y, x = kept.pos[b].unbind(-1)
        assert set((t * 16 + y * 4 + x).tolist()) == expected
    assert torch.equal(select_by(tokens, 0.4, "magnitude").pos, kept.pos)  # deterministic


def test_training_selects_by_schedule_and_evaluation_uses_all_tokens():
    torch.manual_seed(0)
    model = build_model("vit_tiny", "joint", 5, 4, 16, dim=32, depth=1, heads=2, tubelet=(2, 4, 4))
    tokens = model.embed(torch.randn(2, 3, 4, 16, 16))
    method = PatchSamplingSchedule(schedule="cyclic")
    assert method.select_tokens(tokens, 0.0, training=True).count == round(0.2 * 32)
    assert method.select_tokens(tokens, 0.025, training=True).count == round(0.6 * 32)  # a quarter period in
    assert method.select_tokens(tokens, 0.05, training=True).count == 32  # mid-period: drop -0.1, all kept
    assert method.select_tokens(tokens, 0.0, training=False) is tokens
    assert method.eval_settings() == []  # its robustness sweep is the shared protocol's, as every run has it


@pytest.mark.parametrize("params, message", [
    ({"schedule": "step"}, "schedule='step' is not allowed; choose one of linear, cosine, cyclic"),
    ({"quantum": 0}, r"quantum=0 is outside the allowed range \(0, 1\]"),
    ({"quantum": 1.5}, r"quantum=1.5 is outside the allowed range \(0, 1\]"),
    ({"selection": "entropy"}, "selection='entropy' is not allowed"),
    ({"cooldown": 1}, r"cooldown=1 is outside the allowed range \[0, 1\)"),
    ({"period": 0}, r"period=0 is outside"),
])
def test_bad_parameters_are_named(params, message):
    with pytest.raises(ConfigError, match=message):
        build_method(MethodSpec("pss", params))
