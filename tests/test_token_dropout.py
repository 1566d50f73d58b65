import pytest
import torch

from vtbench.engine.config import MethodSpec
from vtbench.errors import ConfigError
from vtbench.methods import build_method, build_methods
from vtbench.methods.reductions import Reduction
from vtbench.methods.token_dropout import TokenDropout, drop_tokens
from vtbench.models import build_model
from vtbench.models.counting import counting_tokens


def _tokens(clips=4, frames=8, size=32):
    torch.manual_seed(0)
    model = build_model("vit_tiny", "joint", 5, frames, size, dim=32, depth=1, heads=2, tubelet=(2, 4, 4))
    return model, model.embed(torch.randn(clips, 3, frames, size, size))  # grid (4, 8, 8): 256 tokens


@pytest.mark.parametrize("keep, expected", [(0.5, 128), (0.25, 64), (0.1, 26), (1.0, 256), (0.001, 1)])
def test_random_mode_keeps_k_per_clip(keep, expected):
    _, tokens = _tokens()
    kept = drop_tokens(tokens, keep, "random")
    assert kept.x.shape == (4, expected, 32)
    for b in range(4):
        assert len({tuple(p) for p in kept.pos[b].tolist()}) == expected  # no token twice


def test_clips_of_a_batch_keep_different_tokens():
    _, tokens = _tokens()
    kept = drop_tokens(tokens, 0.5, "random")
    assert not torch.equal(kept.pos[0], kept.pos[1])


def test_kept_tokens_carry_their_own_position_embedding():
    model, tokens = _tokens()
    kept = drop_tokens(tokens, 0.3, "random")
    table = model.pos_embed(tokens.grid)
    t, y, x = kept.pos.unbind(-1)
    source = t * 64 + y * 8 + x
    assert torch.allclose(kept.x - kept.raw, table[source], atol=1e-6)


def test_tube_mode_keeps_the_same_spatial_positions_in_every_frame():
    _, tokens = _tokens()
    kept = drop_tokens(tokens, 0.5, "tube")
    assert kept.count == 4 * 32
    for b in range(4):
        by_frame = [{(y, x) for tt, y, x in kept.pos[b].tolist() if tt == t} for t in range(4)]
        assert all(len(s) == 32 for s in by_frame) and all(s == by_frame[0] for s in by_frame)
    positions = [{(y, x) for _, y, x in kept.pos[b].tolist()} for b in range(4)]
    assert positions[0] != positions[1]


def test_frame_mode_keeps_whole_frames():
    _, tokens = _tokens()
    kept = drop_tokens(tokens, 0.5, "frame")
    assert kept.count == 2 * 64
    for b in range(4):
        frames = kept.pos[b, :, 0]
        assert len(set(frames.tolist())) == 2
        for t in set(frames.tolist()):
            assert (frames == t).sum() == 64


def test_cls_token_survives_dropout():
    torch.manual_seed(0)
    model = build_model("vit_tiny", "joint", 5, 8, 32, dim=32, depth=1, heads=2, tubelet=(2, 4, 4), cls_token=True,
                        pool="cls")
    widths = []
    model.blocks[0].register_forward_pre_hook(lambda m, args: widths.append(args[0].shape[1]))
    method = TokenDropout(keep=0.25)
    with counting_tokens() as seen:
        model(torch.randn(2, 3, 8, 32, 32), select=lambda t: method.select_tokens(t, 0.5, training=True))
    assert widths == [1 + 64]
    assert seen.counts == [64]


def test_evaluation_keeps_all_tokens_and_adds_the_training_ratio():
    _, tokens = _tokens()
    method = TokenDropout(keep=0.5, mode="tube")
    assert method.select_tokens(tokens, 0.3, training=False) is tokens
    (setting,) = method.eval_settings()
    assert setting.name == "keep=0.5,tube"  # no shared setting keeps whole tubes: the method's own
    first, again = setting.select(tokens), setting.select(tokens)
    assert first.count == 128 and torch.equal(first.pos, again.pos)  # reproducible across evaluations
    (shared,) = TokenDropout(keep=0.5).eval_settings()
    assert shared.select == Reduction("random", keep=0.5)  # random mode: the shared setting, as every run has it


@pytest.mark.parametrize("params, message", [
    ({"keep": 0}, r"keep=0 is outside the allowed range \(0, 1\]"),
    ({"keep": 1.5}, r"keep=1.5 is outside the allowed range \(0, 1\]"),
    ({"mode": "patch"}, r"mode='patch' is not allowed; choose one of random, tube, frame"),
])
def test_bad_parameters_are_named(params, message):
    with pytest.raises(ConfigError, match=message):
        build_method(MethodSpec("token_dropout", params))


def test_layer_wise_dropping_spares_the_first_and_last_blocks_and_puts_dropped_tokens_back_unchanged():
    from vtbench.methods.base import RunContext
    from vtbench.methods.token_dropout import layer_drop_hook
    from vtbench.models.blocks import Stream

    torch.manual_seed(0)
    model = build_model("vit_tiny", "joint", 5, 8, 32, depth=4, cls_token=True)  # 64 tokens
    stack = build_methods([MethodSpec("token_dropout", {"keep": 0.25, "layers": "middle"})])
    stack.prepare(RunContext(None, model, None, 5, torch.device("cpu"), None))
    with counting_tokens() as seen:
        model(torch.randn(2, 3, 8, 32, 32), select=stack.selector(0.5, training=True)).sum().backward()
    assert seen.lengths == [(64, 16, 16, 64)] and seen.counts == [40.0]
    with counting_tokens() as seen:
        model(torch.randn(2, 3, 8, 32, 32), select=stack.selector(0.5, training=False))
    assert seen.lengths == [64]  # evaluation sees every token in every block

    block = model.blocks[1].eval()
    x = torch.randn(2, 1 + 64, 128)
    out = layer_drop_hook(0.25, "middle")(1, 4, block, Stream(x, 1), lambda s: Stream(block(s.x), 1)).x
    changed = (out != x).any(dim=-1)
    assert changed[:, 0].all()  # the CLS token runs every block
    assert changed[:, 1:].sum(dim=1).tolist() == [16, 16]  # the kept share ran the block, the rest came back as is


def test_layer_wise_dropping_of_padded_clips_changes_only_each_clips_own_share():
    from vtbench.methods.token_dropout import layer_drop_hook
    from vtbench.models.blocks import Stream, run_block

    torch.manual_seed(0)
    block = build_model("vit_tiny", "joint", 5, 8, 32, depth=3).blocks[1].eval()
    x = torch.randn(2, 1 + 64, 128)
    valid = torch.ones(2, 1 + 64, dtype=torch.bool)
    valid[0, 1 + 19:] = False  # clip 0 has 19 real tokens, clip 1 all 64 (as after rlt)
    out = layer_drop_hook(0.5, "middle")(1, 3, block, Stream(x, 1, valid), lambda s: run_block(block, s)).x
    changed = (out != x).any(dim=-1)
    # round(0.5 x 19) = 10 of clip 0 ran the block although its share was padded to 32 places; its other 9 real
    # tokens, picked to fill those places, came back unchanged, and so did its padding
    assert changed[:, 1:].sum(dim=1).tolist() == [10, 32]
    assert not changed[0, 1 + 19:].any()


def test_layers_are_checked():
    with pytest.raises(ConfigError, match="layers='2'"):
        build_methods([MethodSpec("token_dropout", {"layers": "2"})])
    with pytest.raises(ConfigError, match="mode='tube'"):
        build_methods([MethodSpec("token_dropout", {"layers": "middle", "mode": "tube"})])
    from vtbench.methods.base import RunContext

    with pytest.raises(ConfigError, match="block 5 of a model of 3 blocks"):
        build_methods([MethodSpec("token_dropout", {"layers": "1-5"})]).prepare(
            RunContext(None, build_model("vit_tiny", "joint", 5, 8, 32), None, 5, torch.device("cpu"), None))


def test_middle_layers_of_a_two_block_model_are_refused():
    from vtbench.methods.base import RunContext

    with pytest.raises(ConfigError, match="drops nothing in a model of 2 blocks"):
        build_methods([MethodSpec("token_dropout", {"layers": "middle"})]).prepare(
            RunContext(None, build_model("vit_tiny", "joint", 5, 8, 32, depth=2), None, 5, torch.device("cpu"), None))
