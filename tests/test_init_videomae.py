"""VideoMAE checkpoints held exactly by the joint model (pos_embed: sincos, fc_norm, qkv_bias: qv) and loaded by
`vtbench.models.videomae`; and the three options leave the default model as it was."""

import math

import pytest
import torch
from torch import nn

from vtbench.errors import ConfigError
from vtbench.models import build_model, model_args
from vtbench.models.blocks import Stream, attention_half
from vtbench.models.videomae import from_videomae
from vtbench.models.weights import Converted, load_into, read_state

DIM, DEPTH, HEADS, CLASSES = 64, 2, 4, 5
VIDEOMAE = {"dim": DIM, "depth": DEPTH, "heads": HEADS, "tubelet": [2, 8, 8], "pos_embed": "sincos",
            "fc_norm": True, "qkv_bias": "qv"}


def _videomae_model(frames=16, **args):
    torch.manual_seed(0)
    return build_model("vit_tiny", "joint", CLASSES, frames, 32, **{**VIDEOMAE, **args}).eval()


def _hf_model(layer_norm_eps=1e-12):
    """A tiny randomly initialised VideoMAEForVideoClassification, every bias and norm made nonzero and not one."""
    transformers = pytest.importorskip("transformers")
    config = transformers.VideoMAEConfig(
        image_size=32, patch_size=8, num_frames=16, tubelet_size=2, hidden_size=DIM, num_hidden_layers=DEPTH,
        num_attention_heads=HEADS, intermediate_size=4 * DIM, use_mean_pooling=True, qkv_bias=True,
        num_labels=CLASSES, layer_norm_eps=layer_norm_eps)
    torch.manual_seed(1)
    model = transformers.VideoMAEForVideoClassification(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.2)
            elif p.dim() == 1:  # LayerNorm weights
                p.normal_(1, 0.2)
    return model


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """The HF model and its checkpoint as `save_pretrained` writes it (safetensors), read back by read_state."""
    model = _hf_model()
    folder = tmp_path_factory.mktemp("videomae")
    model.save_pretrained(folder)
    return model, read_state(folder / "model.safetensors")


def _clip():
    return torch.randn(2, 3, 16, 32, 32, generator=torch.Generator().manual_seed(2))


def _hf_logits(model, clip):
    with torch.no_grad():
        return model(pixel_values=clip.transpose(1, 2)).logits  # HF: (B, T, C, H, W)


def _logits(model, clip):
    with torch.no_grad():
        return model(clip)


def _original_layout(hf_state, prefix="encoder."):
    """The HF state renamed into the original VideoMAE code's names."""
    out = {}
    for key, value in hf_state.items():
        key = key.replace("videomae.embeddings.patch_embeddings.projection.", "patch_embed.proj.")
        key = key.replace("classifier.", "head.")
        if key.startswith("videomae.encoder.layer."):
            index, rest = key.removeprefix("videomae.encoder.layer.").split(".", 1)
            block = f"blocks.{index}."
            if rest in ("attention.attention.query.weight", "attention.attention.key.weight",
                        "attention.attention.value.weight"):
                if rest.endswith("query.weight"):
                    parts = [hf_state[f"videomae.encoder.layer.{index}.attention.attention.{n}.weight"]
                             for n in ("query", "key", "value")]
                    out[prefix + block + "attn.qkv.weight"] = torch.cat(parts)
                continue
            for old, new in [("attention.attention.q_bias", "attn.q_bias"), ("attention.attention.v_bias",
                             "attn.v_bias"), ("attention.output.dense.", "attn.proj."), ("layernorm_before.",
                             "norm1."), ("layernorm_after.", "norm2."), ("intermediate.dense.", "mlp.fc1."),
                             ("output.dense.", "mlp.fc2.")]:
                if rest.startswith(old):
                    rest = new + rest[len(old):]
                    break
            key = block + rest
        out[prefix + key] = value
    return out


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# --- the converter: Hugging Face and original layouts give VideoMAE's logits ---

def test_hugging_face_checkpoint_gives_the_same_logits(hf):
    model_hf, state = hf
    assert any(k.endswith("q_bias") for k in state)  # the layout save_pretrained writes
    for name, p in model_hf.named_parameters():
        if name.endswith(("query.bias", "value.bias")):
            assert p.abs().min() > 0, name  # biases ignored would show
    model = _videomae_model()
    report = load_into(model, from_videomae(state, model), "hf")
    assert not report.made and not report.random and not report.unused and not report.replaced
    qkv = model.blocks[0].attn.qkv.bias
    assert torch.equal(qkv[DIM:2 * DIM], torch.zeros(DIM)) and qkv[:DIM].abs().min() > 0
    clip = _clip()
    ours, theirs = _logits(model, clip), _hf_logits(model_hf, clip)
    # HF's LayerNorm eps (1e-12 in the blocks, 1e-5 in fc_norm) against vtbench's 1e-6: within float tolerance
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=2e-5), (ours - theirs).abs().max()


def test_the_mapping_is_exact_when_the_epsilons_agree(tmp_path):
    """The eps the only difference: with HF's set to vtbench's 1e-6, the logits agree to float32 rounding."""
    model_hf = _hf_model(layer_norm_eps=1e-6)
    model_hf.fc_norm.eps = 1e-6
    model = _videomae_model()
    load_into(model, from_videomae(model_hf.state_dict(), model), "hf module state")  # query.bias / value.bias
    clip = _clip()
    assert torch.allclose(_logits(model, clip), _hf_logits(model_hf, clip), rtol=1e-5, atol=1e-6)


def test_original_pretraining_layout_gives_the_same_logits_and_drops_the_decoder(hf):
    model_hf, state = hf
    original = _original_layout(state)
    original["decoder.blocks.0.norm1.weight"] = torch.ones(32)
    original["mask_token"] = torch.zeros(1, 1, 32)
    model = _videomae_model()
    converted = from_videomae(original, model)
    assert set(converted.dropped) == {"decoder.blocks.0.norm1.weight", "mask_token"}
    report = load_into(model, converted, "original")
    assert sorted(report.dropped) == ["decoder.blocks.0.norm1.weight", "mask_token"]
    clip = _clip()
    assert torch.allclose(_logits(model, clip), _hf_logits(model_hf, clip), rtol=1e-4, atol=2e-5)


def test_backbone_without_classifier_starts_fc_norm_fresh_and_says_so(hf):
    _, state = hf
    original = {k: v for k, v in _original_layout(state, "backbone.").items() if "fc_norm" not in k
                and "head" not in k}
    original["backbone.norm.weight"], original["backbone.norm.bias"] = torch.full((DIM,), 3.0), torch.ones(DIM)
    model = _videomae_model()
    report = load_into(model, from_videomae(original, model), "backbone")
    assert set(report.dropped) == {"backbone.norm.weight", "backbone.norm.bias"}
    assert set(report.made) == {"fc_norm.weight", "fc_norm.bias"} and report.replaced == ["head.bias", "head.weight"]
    assert torch.equal(model.fc_norm.weight, torch.ones(DIM)) and torch.equal(model.fc_norm.bias, torch.zeros(DIM))


@pytest.mark.parametrize("damage", ["missing", "misshapen"])
def test_a_key_that_does_not_fit_is_named_and_nothing_is_loaded(hf, damage):
    _, state = hf
    state = dict(state)
    if damage == "missing":
        del state["videomae.encoder.layer.1.intermediate.dense.weight"]
        named = "blocks.1.mlp.fc1.weight"
    else:
        state["videomae.encoder.layer.0.layernorm_after.bias"] = torch.zeros(DIM + 1)
        named = "blocks.0.norm2.bias"
    model = _videomae_model()
    before = _snapshot(model)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")) as error:
        load_into(model, from_videomae(state, model), "damaged")
    assert "\n" not in str(error.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_layer_scale_and_a_cls_token_are_reported_not_dropped(hf):
    _, state = hf
    original = _original_layout(state, "")
    original["blocks.0.gamma_1"] = torch.ones(DIM)
    original["cls_token"] = torch.zeros(1, 1, DIM)
    model = _videomae_model()
    with pytest.raises(ConfigError, match="unexpected") as error:
        load_into(model, from_videomae(original, model), "scaled")
    assert "blocks.0.ls1.gamma" in str(error.value) and "cls_token" in str(error.value)


# --- position tables stored in a checkpoint ---

def test_a_learned_table_for_16_frames_is_resampled_into_an_8_frame_model(hf):
    _, state = hf
    original = _original_layout(state, "")
    table = torch.randn(1, 8 * 4 * 4, DIM)  # 16 frames / 2 x (32 / 8)^2
    original["pos_embed"] = table
    model = _videomae_model(frames=8)
    assert model.pos_embed.grid == (4, 4, 4)
    report = load_into(model, from_videomae(original, model), "learned")
    assert "(8, 4, 4) to (4, 4, 4)" in report.made["pos_embed.table"]
    # linear in time, align_corners=False, halving the length: each new frame is the mean of two old ones
    expected = table.reshape(4, 2, 16, DIM).mean(dim=1).reshape(-1, DIM)
    assert torch.allclose(model.pos_embed.table, expected, atol=1e-6)
    assert model(torch.randn(1, 3, 8, 32, 32)).shape == (1, CLASSES)


def test_a_stored_sinusoid_becomes_the_models_own_and_an_unknown_grid_is_refused(hf):
    from vtbench.models.embed import sinusoid_table

    _, state = hf
    original = _original_layout(state, "backbone.")
    original["backbone.pos_embed"] = sinusoid_table(128, DIM)[None]  # mmaction2 keeps VideoMAE's as a buffer
    model = _videomae_model(frames=8)
    own = model.pos_embed.table.clone()
    report = load_into(model, from_videomae(original, model), "mmaction")
    assert "fixed sinusoid" in report.made["pos_embed.table"] and torch.equal(model.pos_embed.table, own)
    original["backbone.pos_embed"] = torch.randn(1, 21, DIM)
    with pytest.raises(ConfigError, match="21 positions"):
        from_videomae(original, model)


# --- the options ---

def test_defaults_build_todays_model():
    assert not {"pos_embed", "fc_norm", "qkv_bias"} & set(model_args("vit_tiny", "joint", {}))  # not in configs
    torch.manual_seed(0)
    model = build_model("vit_tiny", "joint", CLASSES, 8, 32).eval()
    torch.manual_seed(0)
    explicit = build_model("vit_tiny", "joint", CLASSES, 8, 32, pos_embed="separable", fc_norm=False,
                           qkv_bias="all").eval()
    state = model.state_dict()
    assert model.fc_norm is None and not any("fc_norm" in k or k == "pos_embed.table" for k in state)
    assert {"pos_embed.spatial", "pos_embed.temporal", "norm.weight", "norm.bias"} <= set(state)
    assert isinstance(model.norm, nn.LayerNorm)
    for block in model.blocks:
        assert type(block.attn.qkv) is nn.Linear and block.attn.qkv.bias.shape == (3 * model.dim,)
    assert list(state) == list(explicit.state_dict())
    assert all(torch.equal(v, explicit.state_dict()[k]) for k, v in state.items())
    clip = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():  # LayerNorm on the tokens, then the mean, then the head: timm's blocks as they are
        x = model.embed(clip).x
        for block in model.blocks:
            x = block(x)
        by_hand = model.head(model.norm(x).mean(dim=1))
    assert torch.equal(_logits(model, clip), _logits(explicit, clip))
    assert torch.allclose(_logits(model, clip), by_hand, atol=1e-6)


def test_qv_bias_keeps_k_at_zero_through_an_optimizer_step():
    model = _videomae_model().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5)  # decay on every parameter
    for block in model.blocks:
        assert torch.equal(block.attn.qkv.bias, torch.zeros(3 * DIM))  # initialised at zero, the k third with it
    model(torch.randn(2, 3, 16, 32, 32)).logsumexp(dim=1).sum().backward()
    for block in model.blocks:
        grad = block.attn.qkv.bias.grad
        assert grad[:DIM].abs().sum() > 0 and grad[2 * DIM:].abs().sum() > 0
        assert torch.equal(grad[DIM:2 * DIM], torch.zeros(DIM))
    optimizer.step()
    for block in model.blocks:
        bias = block.attn.qkv.bias
        assert torch.equal(bias[DIM:2 * DIM], torch.zeros(DIM)) and bias[:DIM].abs().min() > 0


def test_k_bias_has_no_effect_and_attend_matches_the_block():
    model = _videomae_model()
    block = model.blocks[0]
    with torch.no_grad():
        block.attn.qkv.bias.normal_()
    x = torch.randn(2, 9, DIM)
    valid = torch.ones(2, 9, dtype=torch.bool)
    valid[1, 6:] = False
    for mask in (None, valid):
        stream = Stream(x, 0, mask)
        ours, _ = attention_half(block, stream)
        with torch.no_grad():
            reference = x + block.attn(block.norm1(x), attn_mask=stream.attn_bias())
        assert torch.allclose(ours, reference, atol=1e-6)
    q, k, v = block.attn.qkv(x).chunk(3, dim=-1)
    assert torch.allclose(k, x @ block.attn.qkv.weight[DIM:2 * DIM].T, atol=1e-6)  # no k bias in the forward
    assert not torch.allclose(q, x @ block.attn.qkv.weight[:DIM].T, atol=1e-3)


def test_sincos_table_is_videomaes_formula_and_resamples_to_any_grid():
    model = _videomae_model()
    table = model.pos_embed.table
    assert table.shape == (8 * 4 * 4, DIM) and not table.requires_grad
    assert "pos_embed.table" in model.state_dict() and not any("pos_embed" in n for n, _ in model.named_parameters())
    for pos in (0, 1, 37, 127):
        for j in (0, 1, 10, 31, 62, 63):
            angle = pos / 10000 ** (2 * (j // 2) / DIM)
            assert math.isclose(table[pos, j].item(), math.sin(angle) if j % 2 == 0 else math.cos(angle),
                                abs_tol=1e-6)
    assert model.pos_embed((8, 4, 4)) is table
    other = model.pos_embed((4, 2, 2))
    assert other.shape == (16, DIM) and model.pos_embed((4, 2, 2)) is other  # cached
    with torch.no_grad():
        table.mul_(2)  # a load writes the buffer in place: the cached resampling follows
    assert torch.allclose(model.pos_embed((4, 2, 2)), 2 * other)
    assert model(torch.randn(1, 3, 8, 16, 16)).shape == (1, CLASSES)


def test_option_checks():
    with pytest.raises(ConfigError, match="fc_norm"):
        model_args("vit_tiny", "joint", {"fc_norm": True, "cls_token": True, "pool": "cls"})
    with pytest.raises(ConfigError, match="fc_norm"):
        build_model("vit_tiny", "joint", CLASSES, 16, 32, fc_norm=True, cls_token=True, pool="cls")
    for key, value in [("pos_embed", "sincos"), ("fc_norm", True), ("qkv_bias", "qv")]:
        with pytest.raises(ConfigError, match=f"unknown model_args \\['{key}'\\] for arch 'factorised'"):
            model_args("vit_tiny", "factorised", {key: value})
    for key, value in [("pos_embed", "learned"), ("fc_norm", 1), ("qkv_bias", "k")]:
        with pytest.raises(ConfigError, match=f"model_args.{key} must be"):
            model_args("vit_tiny", "joint", {key: value})
    model = build_model("vit_tiny", "joint", CLASSES, 16, 32, qkv_bias="none")
    assert all(block.attn.qkv.bias is None for block in model.blocks)
    with pytest.raises(ConfigError, match="joint model"):
        from_videomae({}, build_model("vit_tiny", "factorised", CLASSES, 16, 32))
    assert isinstance(from_videomae({}, _videomae_model()), Converted)
