import json

import pandas as pd
import pytest
import torch
from conftest import tiny

from vtbench.core.shape import BatchShape
from vtbench.engine.config import MethodSpec
from vtbench.engine.runner import execute
from vtbench.errors import ConfigError
from vtbench.methods import RunContext, build_method
from vtbench.methods.flux import Flux, flexible_shapes, flux_multi_loss
from vtbench.methods.selection import group_dynamic_select, motion_scores, with_motion
from vtbench.models import build_model
from vtbench.models.counting import counting_tokens
from vtbench.models.heads import TokenBudgetHeads


def _moving_square(frames=16, size=32, square=8, step=1):
    """A static textured background with a bright textured square moving right by `step` pixels per frame."""
    g = torch.Generator().manual_seed(0)
    background = torch.rand(3, 1, size, size, generator=g).expand(3, frames, size, size).clone()
    texture = 2 + torch.rand(3, square, square, generator=g)
    for f in range(frames):
        x = 4 + f * step
        background[:, f, 12:12 + square, x:x + square] = texture
    return background.unsqueeze(0)


def _model(frames=16, size=32):
    torch.manual_seed(0)
    return build_model("vit_tiny", "joint", 5, frames, size, dim=32, depth=1, heads=2, tubelet=(2, 4, 4))


def _square_tokens(frames, size=32, square=8, step=2, patch=4, tubelet=2):
    """(t, y, x) token cells the square covers in each tubelet frame."""
    cells = set()
    for f in range(frames):
        x0 = 4 + f * step
        for y in range(12 // patch, (12 + square - 1) // patch + 1):
            for x in range(x0 // patch, (x0 + square - 1) // patch + 1):
                cells.add((f // tubelet, y, x))
    return cells


@pytest.mark.parametrize("frames, step", [(16, 1), (8, 2)])  # groups of two tubelet frames, and groups of one
def test_selected_tokens_cover_the_moving_square_in_every_group(frames, step):
    model = _model(frames)
    tokens = model.embed(_moving_square(frames, step=step))
    t = tokens.grid[0]
    kept = group_dynamic_select(tokens, budget=t * 16)  # a quarter of the 64 tokens of each frame
    square = _square_tokens(frames, step=step)
    kept_cells = {tuple(p) for p in kept.pos[0].tolist()}
    per_group = t // 4
    for group in range(4):
        frames_of_group = range(group * per_group, (group + 1) * per_group)
        covered = {c for c in square if c[0] in frames_of_group}
        hit = covered & kept_cells
        assert len(hit) >= 0.8 * len(covered), f"group {group}: {len(hit)} of {len(covered)} square tokens kept"


def test_each_group_gets_its_equal_quota_and_selection_is_deterministic():
    model = _model(16)
    tokens = model.embed(torch.randn(3, 3, 16, 32, 32))
    kept = group_dynamic_select(tokens, budget=100)  # 100 // 4 = 25 per group of 2 frames
    assert kept.count == 100
    for b in range(3):
        groups = kept.pos[b, :, 0] // 2
        assert torch.bincount(groups, minlength=4).tolist() == [25, 25, 25, 25]
    assert torch.equal(group_dynamic_select(tokens, 100).pos, kept.pos)


def test_scores_use_embeddings_before_the_position_embedding_without_autograd():
    model = _model(16)
    tokens = model.embed(_moving_square(16))
    scores = motion_scores(tokens)
    assert not scores.requires_grad
    static = [i for i, (t, y, x) in enumerate(tokens.pos[0].tolist()) if y >= 6]  # rows the square never visits
    assert scores[0, static].abs().max() < 1e-5  # a static background scores zero, whatever its position embedding
    kept = group_dynamic_select(tokens, 64)
    t, y, x = kept.pos[0].unbind(-1)
    assert torch.allclose(kept.x[0] - kept.raw[0], model.pos_embed(tokens.grid)[t * 64 + y * 8 + x], atol=1e-6)


def test_sampled_shapes_fall_in_the_token_window():
    base = BatchShape(16, 8, 32, 4)
    shapes = flexible_shapes(base, (2, 4, 4), budget=256)
    assert len(shapes) > 5
    for frames, size in shapes:
        assert 256 <= (frames // 2) * (size // 4) ** 2 <= 768
        assert 6 <= frames <= 24 and 16 <= size <= 48
    method = Flux()
    model = _model(8)
    method.prepare(RunContext(tiny(frames=8, size=32).resolve(), model, base, 5, torch.device("cpu"), None))
    drawn = {method.batch_shape(0.5, step, base) for step in range(200)}
    assert len(drawn) > 3
    for shape in drawn:
        assert shape.clips == 16 and shape.stride == 0 and (shape.frames, shape.size) in shapes


def test_flux_multi_loss_is_the_sum_of_its_parts():
    torch.manual_seed(0)
    features = [torch.randn(4, 8, requires_grad=True) for _ in range(3)]
    heads = [torch.nn.Linear(8, 5) for _ in range(3)]
    labels = torch.tensor([0, 1, 2, 3])
    loss = flux_multi_loss(features, heads, labels, align_weight=1.0)
    ce = sum(torch.nn.functional.cross_entropy(h(f), labels) for f, h in zip(features, heads, strict=True))
    teacher = torch.nn.functional.normalize(features[0], dim=-1)
    align = sum(torch.nn.functional.smooth_l1_loss(torch.nn.functional.normalize(f, dim=-1), teacher)
                for f in features[1:])
    assert loss.item() == pytest.approx((ce + align).item(), rel=1e-6)
    loss.backward()
    # the teacher feature is detached in the alignment: its gradient comes from its cross-entropy alone
    only_ce = torch.autograd.grad(torch.nn.functional.cross_entropy(heads[0](features[0]), labels), features[0])[0]
    assert torch.allclose(features[0].grad, only_ce, atol=1e-6)


def test_multi_adds_a_head_per_smaller_budget_and_three_passes_run():
    method = Flux(budgets=[1, 0.5, 0.25])
    model = _model(8)
    base = BatchShape(2, 8, 32, 4)
    method.prepare(RunContext(tiny(frames=8, size=32).resolve(), model, base, 5, torch.device("cpu"), None))
    assert isinstance(model.head, TokenBudgetHeads) and model.head.counts == [256, 128, 64]
    with counting_tokens() as seen:
        loss = method.training_loss(model, (torch.randn(2, 3, 8, 32, 32), torch.tensor([0, 1])), 0.5, lambda t: t,
                                    0.0)
    assert seen.counts == [256, 128, 64] and loss.requires_grad
    # each pass goes through the list's selections first (here one that keeps 100 tokens)
    first = lambda t: with_motion(t).gather(torch.arange(100).expand(2, -1))  # noqa: E731
    with counting_tokens() as seen:
        method.training_loss(model, (torch.randn(2, 3, 8, 32, 32), torch.tensor([0, 1])), 0.5, first, 0.0)
    assert seen.counts == [100, 100, 64]


def test_flux_multi_smooths_labels_as_the_baseline_does():
    torch.manual_seed(0)
    features, heads = [torch.randn(4, 8) for _ in range(2)], [torch.nn.Linear(8, 5) for _ in range(2)]
    labels = torch.tensor([0, 1, 2, 3])
    plain = flux_multi_loss(features, heads, labels, align_weight=0.0)
    smooth = flux_multi_loss(features, heads, labels, align_weight=0.0, label_smoothing=0.1)
    expected = sum(torch.nn.functional.cross_entropy(h(f), labels, label_smoothing=0.1)
                   for f, h in zip(features, heads, strict=True))
    assert smooth.item() == pytest.approx(expected.item()) and smooth.item() != pytest.approx(plain.item())


@pytest.mark.parametrize("first", [MethodSpec("token_dropout", {"keep": 0.75}), MethodSpec("pss")])
def test_flux_may_follow_another_token_method(first, tmp_path):
    config = tiny(frames=8, budget="6steps", methods=[first, MethodSpec("flux", {"tokens": 16})], eval_sweep=[])
    run_dir = execute(config, tmp_path, progress_bar=False)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    steps = pd.read_parquet(run_dir / "steps.parquet")
    assert (steps["tokens"] <= 16).all()  # flux's budget after the other method's subset


def test_evaluation_uses_the_head_trained_nearest_the_token_count():
    method = Flux(budgets=[1, 0.5, 0.25])
    model = _model(8)
    method.prepare(RunContext(tiny(frames=8, size=32).resolve(), model, BatchShape(2, 8, 32, 4), 5,
                              torch.device("cpu"), None))
    for head in model.head.heads:
        torch.nn.init.normal_(head.weight)
    video = torch.randn(2, 3, 8, 32, 32)
    for budget, nearest in ((256, 0), (200, 0), (128, 1), (100, 1), (64, 2), (16, 2)):
        select = (lambda t, b=budget: group_dynamic_select(t, b))
        feature = model.encode(select(model.embed(video)))
        assert torch.equal(model(video, select=select), model.head.heads[nearest](feature)), budget


def test_evaluation_samples_segments_as_training_does():
    model, base = _model(8), BatchShape(2, 8, 32, 4)
    flexible, fixed = Flux(), Flux(flexible=False)
    for method in (flexible, fixed):
        method.prepare(RunContext(tiny(frames=8, size=32).resolve(), model, base, 5, torch.device("cpu"), None))
    assert flexible.eval_shape(base) == base._replace(stride=0)  # one frame per segment, like its training clips
    assert fixed.eval_shape(base) == base


@pytest.mark.parametrize("params, message", [
    ({"tokens": 10_000}, "token budget 10000 must give each of 4 frame groups between 1 and 64"),
    ({"tokens": 3}, "token budget 3 must give each of 4 frame groups between 1 and 64"),
    ({"budgets": [0.5]}, "budgets=\\[0.5\\] must be a list of at least two fractions"),
    ({"tokens": -1}, "tokens=-1 must be a positive whole number"),
])
def test_bad_budgets_are_refused_before_training(params, message, tmp_path):
    from vtbench.engine.runner import execute

    with pytest.raises(ConfigError, match=message):
        execute(tiny(frames=8, size=32, methods=[MethodSpec("flux", params)]), tmp_path, progress_bar=False)
    assert not any(tmp_path.iterdir())
    with pytest.raises(ConfigError):
        build_method(MethodSpec("flux", {"budgets": [2, 1]}))
