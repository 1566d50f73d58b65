import pytest
import torch

from vtbench.errors import ConfigError
from vtbench.models import build_model
from vtbench.models.counting import counting_tokens
from vtbench.models.embed import grid_positions
from vtbench.models.vivit import _group_by_frame

SMALL = {"dim": 32, "depth": 2, "heads": 2, "tubelet": (2, 4, 4)}


def _model(arch="joint", frames=4, size=16, **args):
    torch.manual_seed(0)
    return build_model("vit_tiny", arch, num_classes=5, frames=frames, size=size, **{**SMALL, **args}).eval()


def _random_subset(tokens, keep, seed=0):
    g = torch.Generator().manual_seed(seed)
    index = torch.stack([torch.randperm(tokens.count, generator=g)[:keep] for _ in range(tokens.x.shape[0])])
    return tokens.gather(index), index


@pytest.mark.parametrize("arch", ["joint", "factorised"])
def test_any_grid_works_and_resampling_is_cached(arch):
    model = _model(arch)
    for frames, size in [(4, 16), (8, 32), (2, 8), (6, 24)]:
        assert model(torch.randn(2, 3, frames, size, size)).shape == (2, 5)
    assert len(model.pos_embed._resamplers) >= 3


def test_embedding_at_the_nominal_grid_uses_the_tables_unchanged():
    model = _model()
    temporal, spatial = model.pos_embed.tables((2, 4, 4))
    assert temporal is model.pos_embed.temporal and spatial is model.pos_embed.spatial


def test_resampled_embedding_stays_trainable():
    model = _model().train()
    model(torch.randn(1, 3, 8, 32, 32)).sum().backward()
    assert model.pos_embed.spatial.grad.abs().sum() > 0 and model.pos_embed.temporal.grad.abs().sum() > 0


def test_tokens_carry_their_grid_positions():
    tokens = _model().embed(torch.randn(2, 3, 4, 16, 16))
    assert tokens.grid == (2, 4, 4) and tokens.count == 32
    assert torch.equal(tokens.pos[0], grid_positions((2, 4, 4)))
    assert torch.equal(tokens.pos[0, 13], torch.tensor([0, 3, 1]))  # raster order t, y, x


@pytest.mark.parametrize("arch", ["joint", "factorised"])
def test_gathered_tokens_keep_their_own_position_embedding(arch):
    model = _model(arch)
    tokens = model.embed(torch.randn(3, 3, 4, 16, 16))
    kept, index = _random_subset(tokens, 10)
    assert kept.x.shape == (3, 10, 32) and kept.pos.shape == (3, 10, 3)
    table = model.pos_embed(tokens.grid) if arch == "joint" else None
    for b in range(3):
        for j in range(10):
            t, y, x = kept.pos[b, j].tolist()
            source = t * 16 + y * 4 + x
            assert source == index[b, j]
            assert torch.equal(kept.x[b, j], tokens.x[b, source])
            if table is not None:
                assert torch.allclose(kept.x[b, j] - kept.raw[b, j], table[source], atol=1e-6)


def test_cls_token_is_prepended_after_selection():
    model = _model(cls_token=True, pool="cls")
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    tokens = model.embed(torch.randn(2, 3, 4, 16, 16))
    kept, _ = _random_subset(tokens, 7)
    with counting_tokens() as counted:
        model.encode(kept)
    assert seen == [8] and counted.counts == [7]


def test_joint_model_on_a_subset_equals_a_model_that_never_saw_the_rest():
    model = _model()
    tokens = model.embed(torch.randn(2, 3, 4, 16, 16))
    kept, _ = _random_subset(tokens, 12)
    shuffled = kept.gather(torch.stack([torch.randperm(12) for _ in range(2)]))
    # attention is permutation-invariant and mean pooling too: order of the subset must not matter
    assert torch.allclose(model.encode(kept), model.encode(shuffled), atol=1e-5)


def test_factorised_uneven_frames_match_frame_by_frame_computation():
    model = _model("factorised")
    tokens = model.embed(torch.randn(2, 3, 4, 16, 16))
    kept, _ = _random_subset(tokens, 11)  # frames keep different numbers of tokens
    out, mask = model.spatial(kept)
    for b in range(2):
        for t in range(2):
            mine = kept.x[b][kept.pos[b, :, 0] == t]
            x = torch.cat([model.spatial_cls[0], mine]).unsqueeze(0)
            for block in model.spatial_blocks:
                x = block(x)
            expected_cls = model.spatial_norm(x)[0, 0]
            assert torch.allclose(out[b, t, 0], expected_cls, atol=1e-5)
            assert mask[b, t].sum() == 1 + len(mine)


def test_factorised_frames_without_tokens_are_masked_out_of_time():
    model = _model("factorised")
    frames = torch.randn(1, 2, 32)
    valid = torch.tensor([[True, False]])
    other = frames.clone()
    other[:, 1] = torch.randn(32) * 10
    assert torch.allclose(model.temporal(frames, valid), model.temporal(other, valid), atol=1e-5)
    assert not torch.allclose(model.temporal(frames, valid), model.temporal(frames, valid | True), atol=1e-5)
    tokens = model.embed(torch.randn(1, 3, 4, 16, 16))
    assert torch.isfinite(model.encode(tokens.gather(torch.arange(16).unsqueeze(0)))).all()


def test_group_by_frame_scatters_every_token_once():
    model = _model("factorised")
    tokens = model.embed(torch.randn(2, 3, 4, 16, 16))
    kept, _ = _random_subset(tokens, 9)
    padded, mask = _group_by_frame(kept)
    assert mask.sum() == 18
    assert torch.allclose(padded[mask].sum(0), kept.x.reshape(-1, 32).sum(0), atol=1e-4)


def test_presets_and_bad_names():
    model = build_model("vit_base", "joint", 400, 16, 224)
    assert sum(p.numel() for p in model.parameters()) > 85e6
    assert model.embed(torch.randn(1, 3, 16, 224, 224)).count == 1568
    with pytest.raises(ConfigError, match="unknown model preset 'vit_xl'; known: vit_tiny, vit_small, vit_base"):
        build_model("vit_xl", "joint", 10, 8, 32)
    with pytest.raises(ConfigError, match="unknown model_args"):
        build_model("vit_tiny", "joint", 10, 8, 32, temporal_depth=3)
    with pytest.raises(ConfigError, match="does not divide into tubelets"):
        build_model("vit_tiny", "joint", 10, 7, 32)
