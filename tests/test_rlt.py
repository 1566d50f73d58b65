"""RLT (methods/rlt.py): which tubelets it keeps, their run lengths, the threshold's units, and padding that gives
every clip the logits it gets alone."""

from dataclasses import replace

import pytest
import torch

from vtbench.engine.config import MethodSpec
from vtbench.errors import ConfigError
from vtbench.methods import build_methods
from vtbench.methods.base import RunContext
from vtbench.methods.rlt import changed_tubelets, run_lengths
from vtbench.models import build_model
from vtbench.models.counting import counting_tokens

STD = torch.tensor([0.225, 0.225, 0.225])
MEAN = 0.45
GRID = (4, 4, 4)  # 8 frames x 32 px in 2 x 8 x 8 tubelets


def normalised(grey: torch.Tensor) -> torch.Tensor:
    """Grey levels (B, 3, T, H, W) in 0-255 -> the data sets' normalised pixels."""
    return (grey / 255 - MEAN) / STD.view(1, 3, 1, 1, 1)


def static_with_moving_patch() -> torch.Tensor:
    """A uniform background of level 120; the patch at place (1, 2) flickers between 30 and 220 every frame."""
    grey = torch.full((1, 3, 8, 32, 32), 120.0)
    grey[:, :, 0::2, 8:16, 16:24] = 30.0
    grey[:, :, 1::2, 8:16, 16:24] = 220.0
    return grey


def test_a_static_background_keeps_the_first_step_and_only_the_moving_place_after_it():
    keep = changed_tubelets(normalised(static_with_moving_patch()), GRID, 5.74, STD)[0]
    assert keep[0].all()  # every tubelet of the first temporal step
    moving = torch.zeros(4, 4, dtype=torch.bool)
    moving[1, 2] = True
    for t in range(1, 4):
        assert torch.equal(keep[t], moving), t


def test_a_clip_of_noise_keeps_everything():
    grey = torch.randint(0, 256, (2, 3, 8, 32, 32), generator=torch.Generator().manual_seed(0)).float()
    assert changed_tubelets(normalised(grey), GRID, 5.74, STD).all()


def test_the_threshold_is_in_grey_levels():
    grey = torch.full((1, 3, 8, 32, 32), 100.0)
    grey[:, :, 4:] += 1.0  # one grey level brighter from the third tubelet on
    keep = changed_tubelets(normalised(grey), GRID, 2.0, STD)
    assert keep[:, 1:].sum() == 0  # a 1-level shift is static at threshold 2
    keep = changed_tubelets(normalised(grey), GRID, 0.5, STD)
    # tubelet 2's last frame (5) against tubelet 1's first (2) changed; 3 against 2: frames 7 and 4 both shifted
    assert keep[0, 2].all() and keep[0, 1].sum() == 0 and keep[0, 3].sum() == 0
    # the same in another normalisation: the threshold follows the data set's pixel_std
    other = torch.tensor([0.5, 0.25, 0.1])
    assert changed_tubelets((grey / 255 - MEAN) / other.view(1, 3, 1, 1, 1), GRID, 2.0, other)[:, 1:].sum() == 0


def test_run_lengths_add_up_to_the_temporal_grid_at_every_place():
    keep = torch.rand(3, 6, 4, 4, generator=torch.Generator().manual_seed(1)) > 0.6
    keep[:, 0] = True
    lengths = run_lengths(keep)
    assert torch.equal((lengths * keep).sum(dim=1), torch.full((3, 4, 4), 6))
    column = torch.tensor([True, False, False, True, True, False]).view(1, 6, 1, 1)
    assert run_lengths(column)[0, :, 0, 0][column[0, :, 0, 0]].tolist() == [3, 1, 2]


def _rlt(model, *others: MethodSpec, **params):
    stack = build_methods([MethodSpec("rlt", params), *others])

    class Data:
        pixel_std = tuple(STD.tolist())

    stack.prepare(RunContext(None, model, None, 5, torch.device("cpu"), Data()))
    return stack


@pytest.mark.parametrize("length_embedding", [False, True])
def test_padded_clips_give_each_clip_its_logits_alone(length_embedding):
    torch.manual_seed(0)
    model = build_model("vit_tiny", "joint", 5, 8, 32, depth=2).double().eval()
    stack = _rlt(model, length_embedding=length_embedding)
    if length_embedding:
        model.double()
    noise = torch.randint(0, 256, (1, 3, 8, 32, 32), generator=torch.Generator().manual_seed(2)).double()
    video = normalised(torch.cat([static_with_moving_patch().double(), noise]))
    select = stack.selector(0.0, training=False)
    with torch.no_grad(), counting_tokens() as seen:
        together = model(video, select=select)
        alone = torch.cat([model(video[i : i + 1], select=select) for i in range(2)])
    assert seen.counts[0] == (16 + 3 + 64) / 2  # 19 and 64 tokens, padded to 64
    assert seen.counts[1:] == [19, 64]
    torch.testing.assert_close(together, alone)
    # and each clip's logits are those of its real tokens alone, gathered by hand: no padding and no mask at all
    keep = changed_tubelets(video, GRID, 5.74, STD)
    for i in range(2):
        with torch.no_grad():
            tokens = model.embed(video[i : i + 1])
            if length_embedding:
                table = model.rlt_lengths(GRID[0])
                tokens = replace(tokens, x=tokens.x + table[run_lengths(keep[i : i + 1]).flatten(1) - 1])
            real = tokens.gather(keep[i].flatten().nonzero()[:, 0][None])
            assert real.valid is None and real.count == (19, 64)[i]
            bare = model.head(model.encode(real))
        torch.testing.assert_close(together[i : i + 1], bare, rtol=0, atol=1e-9)
        torch.testing.assert_close(alone[i : i + 1], bare, rtol=0, atol=1e-9)


def test_the_length_embedding_adds_each_tokens_own_run_length():
    torch.manual_seed(0)
    model = build_model("vit_tiny", "joint", 5, 8, 32, depth=1)
    stack = _rlt(model, length_embedding=True)
    tokens = model.embed(normalised(static_with_moving_patch()))
    kept = stack.select_tokens(tokens, 0.0, training=True)
    table = model.rlt_lengths(4)
    by_place = {tuple(p): i for i, p in enumerate(tokens.pos[0].tolist())}
    real = kept.valid[0].tolist() if kept.valid is not None else [True] * kept.count
    assert sum(real) == 19 and kept.count == 32  # padded to a multiple of 16
    for j, (t, y, x) in enumerate(kept.pos[0].tolist()):
        if not real[j]:
            continue
        length = 1 if (y, x) == (1, 2) else 4  # the moving place is kept at every step; the rest once, for all 4
        torch.testing.assert_close(kept.x[0, j], tokens.x[0, by_place[(t, y, x)]] + table[length - 1])


def test_rlt_needs_the_joint_model_and_refuses_flux():
    with pytest.raises(ConfigError, match="arch: joint"):
        _rlt(build_model("vit_tiny", "factorised", 5, 8, 32))
    with pytest.raises(ConfigError, match="rlt and flux cannot be combined"):
        build_methods([MethodSpec("rlt"), MethodSpec("flux")])
    with pytest.raises(ConfigError, match="threshold=-1"):
        build_methods([MethodSpec("rlt", {"threshold": -1})])


def test_rlt_is_refused_with_compiled_blocks():
    from vtbench.engine.config import RunConfig

    stack = build_methods([MethodSpec("rlt")])
    with pytest.raises(ConfigError, match="compile: false"):
        stack.prepare(RunContext(RunConfig(compile=True), build_model("vit_tiny", "joint", 5, 8, 32), None, 5,
                                 torch.device("cpu"), None))


def test_after_rlt_layer_wise_dropping_keeps_each_clips_own_share():
    torch.manual_seed(0)
    model = build_model("vit_tiny", "joint", 5, 8, 32, depth=3)
    dropping = _rlt(model, MethodSpec("token_dropout", {"keep": 0.5, "layers": "middle"}))
    noise = torch.randint(0, 256, (1, 3, 8, 32, 32), generator=torch.Generator().manual_seed(2)).float()
    video = normalised(torch.cat([static_with_moving_patch(), noise]))
    with counting_tokens() as seen:
        model(video, select=dropping.selector(0.5, training=True))
    # 19 and 64 real tokens; the middle block runs round(0.5 x 19) = 10 and 32 of them, padded to 32
    assert seen.lengths == [(64, 32, 64)]
    assert seen.counts == [pytest.approx(((19 + 64) / 2 * 2 + (10 + 32) / 2) / 3)]
