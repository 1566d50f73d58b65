"""Inflating a timm image ViT into vtbench's video models (vtbench.models.inflate): the inflated model computes on
a clip of identical frames what the image model computes on the frame."""


import pytest
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from vtbench.errors import ConfigError
from vtbench.models import build_model
from vtbench.models.inflate import from_timm
from vtbench.models.weights import load_into, read_state

TOL = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Models this small gain nothing from threads, and on a busy shared machine they spin: one, then restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def image_vit(depth=2, dim=64, img_size=32, patch_size=8, num_classes=7, seed=0, **kwargs) -> VisionTransformer:
    """A tiny timm ViT with every parameter random (position table, biases and norms included), so that a
    converter that ignored any of them could not pass."""
    torch.manual_seed(seed)
    vit = VisionTransformer(img_size=img_size, patch_size=patch_size, embed_dim=dim, depth=depth, num_heads=4,
                            num_classes=num_classes, **kwargs)
    with torch.no_grad():
        for p in vit.parameters():
            p.copy_(0.1 * torch.randn_like(p))
        for m in vit.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.add_(1.0)
    return vit.eval()


def joint(frames=4, classes=7, **kwargs) -> nn.Module:
    return build_model("vit_tiny", "joint", classes, frames, 32, dim=64, depth=2, heads=4, tubelet=[2, 8, 8],
                       **kwargs).eval()


def factorised(classes=7, **kwargs) -> nn.Module:
    return build_model("vit_tiny", "factorised", classes, 4, 32, dim=64, depth=2, heads=4, temporal_depth=1,
                       tubelet=[2, 8, 8], **kwargs).eval()


def saved(vit: nn.Module, tmp_path, fmt: str = "safetensors") -> dict[str, torch.Tensor]:
    """The image model's state, written as a checkpoint file and read back as vtbench reads it."""
    state = {k: v.contiguous() for k, v in vit.state_dict().items()}
    if fmt == "safetensors":
        path = tmp_path / "image.safetensors"
        save_file(state, str(path))
    else:
        path = tmp_path / "image.pth"
        torch.save({"model": state}, path)
    return read_state(path)


def still(frame: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, T, H, W): the frame repeated."""
    return frame.unsqueeze(2).expand(-1, -1, frames, -1, -1).contiguous()


def loaded(model, vit, tmp_path, fmt="safetensors", **options):
    report = load_into(model, from_timm(saved(vit, tmp_path, fmt), model, **options), "image")
    return model, report


@pytest.mark.parametrize("fmt", ["safetensors", "torch"])
@pytest.mark.parametrize("inflate", ["central", "average"])
def test_joint_model_on_a_still_clip_is_the_image_model(tmp_path, fmt, inflate):
    vit = image_vit(class_token=False, global_pool="avg", fc_norm=False)  # norm, then mean pool: vtbench's default
    model, report = loaded(joint(), vit, tmp_path, fmt, inflate=inflate)
    frame = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(still(frame, 4)), vit(frame), **TOL)
    assert torch.count_nonzero(model.pos_embed.temporal) == 0
    assert "inflated" in report.made["patch_embed.proj.weight"] and "zeros" in report.made["pos_embed.temporal"]
    assert not report.replaced and not report.random and not report.unused


def test_central_inflation_sees_only_each_tubelets_central_frame(tmp_path):
    vit = image_vit(class_token=False, global_pool="avg", fc_norm=False)
    frame = torch.randn(2, 3, 32, 32)
    clip = torch.randn(2, 3, 4, 32, 32)
    clip[:, :, 1::2] = frame.unsqueeze(2)  # frames 1 and 3: each 2-frame tubelet's central frame (index 2 // 2)
    central, _ = loaded(joint(), vit, tmp_path, inflate="central")
    average, _ = loaded(joint(), vit, tmp_path, inflate="average")
    with torch.no_grad():
        expected = vit(frame)
        torch.testing.assert_close(central(clip), expected, **TOL)
        assert not torch.allclose(average(clip), expected, **TOL)  # the other frames count: the test is not vacuous


@pytest.mark.parametrize("no_embed_class", [False, True])
def test_class_token_gets_its_position_folded_in(tmp_path, no_embed_class):
    vit = image_vit(class_token=True, global_pool="token", no_embed_class=no_embed_class)
    model, report = loaded(joint(frames=2, cls_token=True, pool="cls"), vit, tmp_path)
    expected_cls = vit.cls_token if no_embed_class else vit.cls_token + vit.pos_embed[:, :1]
    torch.testing.assert_close(model.cls_token, expected_cls)
    torch.testing.assert_close(model.pos_embed.spatial, vit.pos_embed[0, 0 if no_embed_class else 1:])
    assert "class token" in report.made["cls_token"]
    frame = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # one frame index: the same sequence, class token first, as the image model's
        torch.testing.assert_close(model(still(frame, 2)), vit(frame), **TOL)


def test_class_token_dropped_where_the_model_has_none(tmp_path):
    vit = image_vit(class_token=True, global_pool="token")
    state = saved(vit, tmp_path)
    converted = from_timm(state, joint())
    assert "cls_token" in converted.dropped and "cls_token" not in converted.state
    torch.testing.assert_close(converted.state["pos_embed.spatial"], vit.pos_embed[0, 1:])
    load_into(joint(), converted, "image")


def test_class_token_the_image_lacks_is_named_missing(tmp_path):
    vit = image_vit(class_token=False, global_pool="avg", fc_norm=False)
    with pytest.raises(ConfigError, match="missing cls_token"):
        loaded(joint(cls_token=True), vit, tmp_path)


def test_position_table_resampled_as_timm_resamples_it(tmp_path):
    """A 16 px image model (2x2 grid) into a 32 px video model (4x4): as timm's own model run at 32 px."""
    vit = image_vit(img_size=16, class_token=False, global_pool="avg", fc_norm=False, dynamic_img_size=True)
    model, report = loaded(joint(), vit, tmp_path)
    assert "resampled from 2x2 to 4x4" in report.made["pos_embed.spatial"]
    frame = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(still(frame, 4)), vit(frame), **TOL)


def test_factorised_spatial_encoder_is_the_image_model_per_frame(tmp_path):
    vit = image_vit(class_token=True, global_pool="token")
    model = factorised()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model, report = loaded(model, vit, tmp_path)
    clip = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        frames, _ = model.spatial(model.embed(clip))
        for t in range(2):  # frame index t: tubelet frames 2t, 2t+1; central inflation sees frame 2t + 1
            torch.testing.assert_close(frames[:, t, 0], vit.forward_features(clip[:, :, 2 * t + 1])[:, 0], **TOL)
    temporal = [k for k in before if k.startswith(("temporal_", "norm."))]
    assert temporal and all("left at initialisation" in report.made[k] for k in temporal)
    for key in temporal:  # random: the temporal encoder kept its own initialisation
        torch.testing.assert_close(model.state_dict()[key], before[key])
    torch.testing.assert_close(model.spatial_norm.weight, vit.norm.weight)
    torch.testing.assert_close(model.pos_embed.temporal, torch.zeros_like(model.pos_embed.temporal))


def test_factorised_temporal_encoder_from_the_image_blocks(tmp_path):
    vit = image_vit(class_token=True, global_pool="token")
    model, report = loaded(factorised(), vit, tmp_path, temporal="from_spatial")
    for name, value in vit.blocks[0].state_dict().items():
        torch.testing.assert_close(model.temporal_blocks[0].state_dict()[name], value)
    torch.testing.assert_close(model.norm.weight, vit.norm.weight)
    assert report.made["temporal_cls"].startswith("left at initialisation")
    assert "from_spatial" in report.made["temporal_blocks.0.attn.qkv.weight"]


def test_factorised_temporal_deeper_than_the_image_is_refused(tmp_path):
    vit = image_vit(depth=1, class_token=True, global_pool="token")
    model = build_model("vit_tiny", "factorised", 7, 4, 32, dim=64, depth=1, heads=4, temporal_depth=2,
                        tubelet=[2, 8, 8])
    with pytest.raises(ConfigError, match=r"temporal_blocks\.1 .*blocks\.1"):
        from_timm(saved(vit, tmp_path), model, temporal="from_spatial")


def test_frozen_spatial_parts_left_at_initialisation(tmp_path):
    """frozen_spatial's parts on the temporal side (its adapter, its staged temporal table) are not in an image
    model: they load as left at initialisation, so that the method can start from an image checkpoint."""
    from vtbench.methods.frozen_spatial import AttentionPool, StagedAdapter, StagedTemporalTable

    vit = image_vit(class_token=True, global_pool="token")
    model = factorised()
    model.temporal_pos = StagedTemporalTable(1, 2, 64)
    model.adapter = StagedAdapter(AttentionPool(64, 4))
    query = model.adapter.inner.query.clone()
    _, report = loaded(model, vit, tmp_path, inflate="average")
    for key in ("adapter.inner.query", "temporal_pos.stage1.table", "temporal_pos.stage2.table"):
        assert "left at initialisation" in report.made[key]
    torch.testing.assert_close(model.adapter.inner.query, query)
    torch.testing.assert_close(model.spatial_blocks[1].mlp.fc2.bias, vit.blocks[1].mlp.fc2.bias)


def test_head_replaced_when_class_counts_differ(tmp_path):
    vit = image_vit(class_token=False, global_pool="avg", fc_norm=False)
    model = joint(classes=5)
    head = model.head.weight.clone()
    _, report = loaded(model, vit, tmp_path)
    assert report.replaced == ["head.bias", "head.weight"]
    torch.testing.assert_close(model.head.weight, head)
    _, report = loaded(joint(), vit, tmp_path)
    assert report.replaced == []


def test_deeper_image_is_one_error_naming_the_block(tmp_path):
    vit = image_vit(depth=3, class_token=False, global_pool="avg", fc_norm=False)
    with pytest.raises(ConfigError, match=r"unexpected blocks\.2\.") as err:
        loaded(joint(), vit, tmp_path)
    assert len(str(err.value).splitlines()) == 1


def test_wider_image_is_one_error_naming_the_keys(tmp_path):
    vit = image_vit(dim=128, class_token=False, global_pool="avg", fc_norm=False)
    with pytest.raises(ConfigError, match=r"wrong shape .*\(model: "):
        loaded(joint(), vit, tmp_path)


def test_pool_then_norm_into_norm_then_pool_is_named(tmp_path):
    vit = image_vit(class_token=False, global_pool="avg")  # timm's default for avg: fc_norm, norm an Identity
    with pytest.raises(ConfigError, match=r"missing norm\.bias, norm\.weight; unexpected fc_norm\.bias"):
        loaded(joint(), vit, tmp_path)


def test_fc_norm_loads_where_the_model_has_one(tmp_path):
    vit = image_vit(class_token=False, global_pool="avg")
    model = joint()
    model.norm, model.fc_norm = nn.Identity(), nn.LayerNorm(64, eps=1e-6)  # the shape of a model with fc_norm: true
    loaded(model, vit, tmp_path)
    torch.testing.assert_close(model.fc_norm.weight, vit.fc_norm.weight)


@pytest.mark.parametrize("model_options, image_options", [
    (dict(fc_norm=True), dict(global_pool="avg")),  # pool then norm, on both sides
    (dict(qkv_bias="none"), dict(global_pool="avg", fc_norm=False, qkv_bias=False)),
    (dict(qkv_bias="qv"), dict(global_pool="avg", fc_norm=False)),  # the image's k bias zeroed: the same attention
])
def test_joint_model_options_on_a_still_clip(tmp_path, model_options, image_options):
    vit = image_vit(class_token=False, **image_options)
    model, report = loaded(joint(**model_options), vit, tmp_path)
    frame = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(still(frame, 4)), vit(frame), **TOL)
    if model_options.get("qkv_bias") == "qv":
        assert "k third zeroed" in report.made["blocks.0.attn.qkv.bias"]
        assert torch.count_nonzero(model.blocks[0].attn.qkv.bias[64:128]) == 0


def test_fixed_position_table_is_kept(tmp_path):
    vit = image_vit(class_token=True, global_pool="token")
    model = joint(pos_embed="sincos", cls_token=True, pool="cls")
    table = model.pos_embed.table.clone()
    _, report = loaded(model, vit, tmp_path)
    assert "pos_embed" in report.dropped and "fixed" in report.made["pos_embed.table"]
    torch.testing.assert_close(model.pos_embed.table, table)
    torch.testing.assert_close(model.cls_token, vit.cls_token + vit.pos_embed[:, :1])


@pytest.mark.parametrize("options, pattern", [
    (dict(inflate="sideways"), r"init\.inflate='sideways' .*central, average"),
    (dict(temporal="frozen"), r"init\.temporal='frozen' .*random, from_spatial"),
    (dict(temporal="from_spatial"), r"init\.temporal='from_spatial' applies to the factorised encoder"),
])
def test_unknown_options_are_refused(tmp_path, options, pattern):
    state = saved(image_vit(class_token=False, global_pool="avg", fc_norm=False), tmp_path)
    with pytest.raises(ConfigError, match=pattern):
        from_timm(state, joint(), **options)


def test_register_tokens_are_refused(tmp_path):
    state = saved(image_vit(reg_tokens=2, class_token=True, global_pool="token"), tmp_path)
    with pytest.raises(ConfigError, match=r"reg_token: .* 2 register tokens.*reg_tokens=0"):
        from_timm(state, joint(cls_token=True))


def test_patch_kernel_of_another_size_is_refused(tmp_path):
    state = saved(image_vit(patch_size=4, class_token=False, global_pool="avg", fc_norm=False), tmp_path)
    with pytest.raises(ConfigError, match=r"patch_embed\.proj\.weight is a 4x4 patch kernel.*\[2, 4, 4\]"):
        from_timm(state, joint())
