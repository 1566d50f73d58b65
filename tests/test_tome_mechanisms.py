"""ToMe's proportional attention through the real merging path (methods/tome.py's `merging_hook` run by a
`BlockPlan`, as VideoViT.encode runs it): when every merged pair was two identical tokens, the merged stream
carries exactly what the unmerged tokens give through plain blocks, and pools to the same feature."""

from dataclasses import replace

import pytest
import torch
from timm.models.vision_transformer import Block

from vtbench.methods.tome import merging_hook
from vtbench.models import build_model
from vtbench.models.blocks import BlockPlan, Stream
from vtbench.models.counting import counting_tokens
from vtbench.models.tokens import Tokens

DIM, DEPTH = 32, 3


def _blocks() -> list[Block]:
    torch.manual_seed(0)
    return [Block(DIM, 4, qkv_bias=True).double().eval() for _ in range(DEPTH)]


def _merge_first(r: int, proportional: bool) -> BlockPlan:
    """Merge r tokens in the first block and none after it (the stream keeps the sizes and the proportional bias)."""
    first, rest = merging_hook(r, None, proportional), merging_hook(0, None, proportional)

    def hook(index, depth, block, stream, run):
        return (first if index == 0 else rest)(index, depth, block, stream, run)

    return BlockPlan([hook])


def _pairs(distinct: torch.Tensor, prefix: int = 0) -> torch.Tensor:
    """Each clip token twice in a row, at places (2i, 2i + 1) of the whole sequence: ToMe's A (even places) and B
    (odd places) then hold one copy each. With a prefix token (CLS at place 0), the first clip token stays single."""
    body = distinct[:, prefix:]
    single = body[:, :prefix]  # at place `prefix`, in B; its partner would be the CLS token, which never merges
    twice = body[:, prefix:].repeat_interleave(2, dim=1)
    return torch.cat([distinct[:, :prefix], single, twice], dim=1)


@pytest.mark.parametrize("prefix", [0, 1])
def test_merged_duplicates_give_what_plain_blocks_give_on_the_unmerged_tokens(prefix):
    blocks = _blocks()
    distinct = torch.randn(2, prefix + 9, DIM, dtype=torch.float64)
    x = _pairs(distinct, prefix)  # 18 tokens
    assert x.shape[1] == 18 and torch.equal(x[:, 2 * prefix :: 2], x[:, 2 * prefix + 1 :: 2])
    r = (x.shape[1] - prefix) // 2  # every A token but the CLS
    plain = x
    for block in blocks:
        plain = block(plain)
    plan, stream = _merge_first(r, proportional=True), Stream(x, prefix)
    for index, block in enumerate(blocks):
        stream = plan.run(index, DEPTH, block, stream)
    assert [n for _, n in stream.seen] == [18 - prefix, 9, 9]
    # what is left, in order: the CLS token and the single one (sizes 1), then one token per pair (sizes 2)
    sizes = [1.0] * 2 * prefix + [2.0] * (9 - prefix)
    assert stream.size.tolist() == [sizes, sizes]
    left = [*range(prefix), *range(1, 18, 2)]  # the CLS token, then B: the odd places
    torch.testing.assert_close(stream.x, plain[:, left], rtol=0, atol=1e-9)
    torch.testing.assert_close(stream.pool(stream.x), plain[:, prefix:].mean(dim=1), rtol=0, atol=1e-9)


def _sorted_rows(x: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of x (B, N, D) and their sizes in the order of their first feature (a comparison that ignores where
    the merge put each token)."""
    order = x[..., 0].argsort(dim=1)
    return x.gather(1, order[..., None].expand_as(x)), size.gather(1, order)


@pytest.mark.parametrize("proportional", [True, False])
def test_proportional_attention_over_tokens_of_mixed_sizes_gives_the_unmerged_result(proportional):
    """Where every size is 2 the log-size bias is one constant on all logits and changes nothing; here 6 pairs
    merge (size 2) and 6 tokens stay single (size 1), so only proportional attention keeps the blocks exact."""
    blocks = _blocks()
    distinct = torch.randn(2, 12, DIM, dtype=torch.float64)
    x = torch.cat([distinct[:, :6].repeat_interleave(2, dim=1), distinct[:, 6:]], dim=1)  # places 0-11: 6 pairs
    plain = x
    for block in blocks:
        plain = block(plain)
    plan, stream = _merge_first(6, proportional), Stream(x, 0)
    for index, block in enumerate(blocks):
        stream = plan.run(index, DEPTH, block, stream)
    assert [n for _, n in stream.seen] == [18, 12, 12]
    expected = plain[:, [*range(1, 12, 2), *range(12, 18)]]  # one copy of each pair, and the 6 single tokens
    expected_size = torch.tensor([[2.0] * 6 + [1.0] * 6] * 2)
    got, got_size = _sorted_rows(stream.x, stream.size)
    expected, expected_size = _sorted_rows(expected, expected_size)
    assert torch.equal(stream.size.sort(dim=1).values, expected_size.sort(dim=1).values)  # only the 6 pairs merged
    pooled = stream.pool(stream.x)
    if proportional:
        assert torch.equal(got_size, expected_size)  # each pair's token has size 2, each single one size 1
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-9)
        torch.testing.assert_close(pooled, plain.mean(dim=1), rtol=0, atol=1e-9)
    else:  # a merged token then weighs as one token in every later attention
        assert not torch.allclose(got, expected, rtol=0, atol=1e-6)
        assert not torch.allclose(pooled, plain.mean(dim=1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("proportional", [True, False])
def test_a_video_vit_with_the_merging_plan_pools_merged_duplicates_as_the_unmerged_tokens(proportional):
    torch.manual_seed(0)
    model = build_model("vit_tiny", "joint", 5, 8, 32, depth=DEPTH).double().eval()  # no CLS token, mean pooling
    distinct = torch.randn(2, 48, model.dim, dtype=torch.float64)
    x = torch.cat([distinct[:, :16].repeat_interleave(2, dim=1), distinct[:, 16:]], dim=1)  # 16 pairs, 32 single
    tokens = Tokens(x=x, pos=torch.zeros(2, 64, 3, dtype=torch.long), grid=(4, 4, 4), raw=x)
    with torch.no_grad(), counting_tokens() as seen:
        plain = model.encode(tokens)
        merged = model.encode(replace(tokens, blocks=_merge_first(16, proportional)))
    assert seen.lengths == [64, (64, 48, 48)]
    if proportional:
        torch.testing.assert_close(merged, plain, rtol=0, atol=1e-9)
    else:
        assert not torch.allclose(merged, plain, rtol=0, atol=1e-6)
