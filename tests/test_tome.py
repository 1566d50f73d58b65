"""ToMe (methods/tome.py): each block removes r tokens, merged tokens are size-weighted means of their sources,
sizes add up, and proportional attention over merged duplicates equals attention over the unmerged tokens."""

import pytest
import torch
from timm.models.vision_transformer import Block

from vtbench.engine.config import MethodSpec
from vtbench.errors import ConfigError
from vtbench.methods import build_methods
from vtbench.methods.base import RunContext
from vtbench.methods.tome import bipartite_soft_matching, merge_wavg, merging_hook
from vtbench.models import build_model
from vtbench.models.blocks import Stream, attend
from vtbench.models.counting import counting_tokens


def _block(dim=32) -> Block:
    torch.manual_seed(0)
    return Block(dim, 4, qkv_bias=True).double().eval()


def test_attend_is_timms_attention_with_its_keys():
    block = _block()
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    out, keys = attend(block.attn, x, None)
    torch.testing.assert_close(out, block.attn(x))
    assert keys.shape == (2, 9, 8)


@pytest.mark.parametrize("prefix", [0, 1])
def test_each_block_removes_exactly_r_tokens_and_sizes_add_up(prefix):
    block, x = _block(), torch.randn(2, prefix + 20, 32, dtype=torch.float64)
    hook = merging_hook(r=3, keep=None, proportional=True)
    stream = Stream(x, prefix)
    for index in range(3):
        stream = hook(index, 3, block, stream, run=None)
        assert stream.count == 20 - 3 * (index + 1)
        torch.testing.assert_close(stream.size[:, prefix:].sum(dim=1), torch.full((2,), 20.0))
    if prefix:
        assert (stream.size[:, 0] == 1).all()  # the CLS token is never merged


def test_a_merged_token_is_the_size_weighted_mean_of_its_sources():
    # four tokens: A = places 0, 2; B = places 1, 3. Token 2 points the same way as token 3, token 0 matches none.
    metric = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.6, 0.8]]])
    merge, r = bipartite_soft_matching(metric, 1)
    x = torch.tensor([[[1.0], [2.0], [3.0], [5.0]]])
    size = torch.tensor([[1.0, 1.0, 2.0, 3.0]])
    merged, sizes = merge_wavg(merge, x, size)
    assert r == 1
    assert merged[0, :, 0].tolist() == pytest.approx([1.0, 2.0, (3 * 2 + 5 * 3) / 5])
    assert sizes[0].tolist() == [1.0, 1.0, 5.0]


def test_proportional_attention_over_merged_duplicates_equals_attention_over_the_unmerged_tokens():
    block = _block()
    distinct = torch.randn(1, 5, 32, dtype=torch.float64)
    unmerged = distinct[:, [0, 1, 1, 2, 3, 3, 3, 4]]  # token 1 twice, token 3 three times
    size = torch.tensor([[1.0, 2.0, 1.0, 3.0, 1.0]], dtype=torch.float64)
    plain, _ = attend(block.attn, unmerged, None)
    proportional, _ = attend(block.attn, distinct, Stream(distinct, 0, size=size, proportional=True).attn_bias())
    torch.testing.assert_close(proportional, plain[:, [0, 1, 3, 4, 7]])
    without, _ = attend(block.attn, distinct, None)
    assert not torch.allclose(without, plain[:, [0, 1, 3, 4, 7]])


def test_padding_merges_first_and_never_changes_a_real_token():
    metric = torch.randn(1, 8, 4)
    padding = torch.tensor([[False, False, False, True, True, False, True, False]])  # places 4 and 6 lie in A
    merge, r = bipartite_soft_matching(metric, 2, 0, padding)
    x = torch.randn(1, 8, 3)
    merged, sizes = merge_wavg(merge, x, (~padding).float())
    assert r == 2 and sizes.sum() == 5 and (sizes > 0).sum() == 5  # the two merged away were padding
    real = x[0][~padding[0]]
    assert sorted(merged[0][sizes[0] > 0][:, 0].tolist()) == sorted(real[:, 0].tolist())  # every real one intact


def test_the_model_runs_fewer_tokens_block_by_block_and_pools_by_size():
    torch.manual_seed(0)
    model = build_model("vit_tiny", "joint", 5, 8, 32)  # 64 tokens, 3 blocks
    stack = build_methods([MethodSpec("tome", {"r": 8})])
    stack.prepare(RunContext(None, model, None, 5, torch.device("cpu"), None))
    with counting_tokens() as seen:
        model(torch.randn(2, 3, 8, 32, 32), select=stack.selector(0.5, training=True)).sum().backward()
    assert seen.lengths == [(64, 56, 48)] and seen.counts == [56.0]
    keep = build_methods([MethodSpec("tome", {"keep": 0.25})])
    with counting_tokens() as seen:
        model(torch.randn(2, 3, 8, 32, 32), select=keep.selector(0.5, training=False))
    assert seen.lengths == [(64, 48, 32)]  # r = ceil(48 / 3) = 16


def test_tome_refuses_what_it_cannot_do():
    with pytest.raises(ConfigError, match="r=2 or keep=0.5"):
        build_methods([MethodSpec("tome", {"r": 2, "keep": 0.5})])
    with pytest.raises(ConfigError, match="tome and token_dropout cannot be combined"):
        build_methods([MethodSpec("tome"), MethodSpec("token_dropout", {"layers": "middle"})])
    build_methods([MethodSpec("tome"), MethodSpec("multigrid")])  # composes
    with pytest.raises(ConfigError, match="arch: joint"):
        build_methods([MethodSpec("tome")]).prepare(
            RunContext(None, build_model("vit_tiny", "factorised", 5, 8, 32), None, 5, torch.device("cpu"), None))


def test_a_keep_target_is_reached_after_the_last_block():
    block, x = _block(), torch.randn(2, 64, 32, dtype=torch.float64)
    hook, stream = merging_hook(r=None, keep=0.5, proportional=False), Stream(x, 0)
    for index in range(3):
        stream = hook(index, 3, block, stream, run=None)
    assert stream.count == 32


def test_evaluation_scores_the_model_unmerged_and_at_other_merge_rates_and_compile_is_refused():
    from vtbench.engine.config import RunConfig

    torch.manual_seed(0)
    model = build_model("vit_tiny", "joint", 5, 8, 32)  # 64 tokens, 3 blocks
    stack = build_methods([MethodSpec("tome", {"keep": 0.5})])
    settings = {s.name: s for s in stack.eval_settings()}
    assert list(settings) == ["merge=off", "keep=0.75,merge", "keep=0.25,merge"]  # not the trained rate again
    chain = stack.selector(1.0, training=False)
    lengths = {}
    for name, setting in [("default", None), *settings.items()]:
        with counting_tokens() as seen:
            model(torch.randn(1, 3, 8, 32, 32),
                  select=chain if setting is None else (lambda tokens, s=setting: s.select(chain(tokens))))
        lengths[name] = seen.lengths
    # tokens entering each block; a keep of k removes 64 (1 - k) spread over the blocks left: 11, 11, 10 at 0.5
    assert lengths == {"default": [(64, 53, 42)], "merge=off": [64], "keep=0.75,merge": [(64, 58, 53)],
                       "keep=0.25,merge": [(64, 48, 32)]}
    with pytest.raises(ConfigError, match="compile: false"):
        stack.prepare(RunContext(RunConfig(compile=True), model, None, 5, torch.device("cpu"), None))
