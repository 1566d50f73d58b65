import pytest

from vtbench.cli import main
from vtbench.engine.config import MethodSpec, RunConfig
from vtbench.engine.estimate import estimate


def _hand_count(n: int, d: int, depth: int, patch_inputs: int, classes: int) -> int:
    """Forward FLOPs of the joint ViT by hand: 2 per multiply-add, norms and activations not counted."""
    embed = 2 * n * d * patch_inputs
    attention = 2 * n * d * 3 * d + 2 * (2 * n * n * d) + 2 * n * d * d  # qkv, scores and values, projection
    mlp = 2 * (2 * n * d * 4 * d)
    return embed + depth * (attention + mlp) + 2 * d * classes


def test_tiny_estimate_matches_a_count_by_hand():
    config = RunConfig(frames=4, size=16, model_args={"dim": 32, "depth": 2, "heads": 2, "tubelet": [2, 4, 4]})
    row = estimate(config, [], num_classes=10)
    expected = _hand_count(n=32, d=32, depth=2, patch_inputs=3 * 2 * 4 * 4, classes=10)
    assert row.tokens == 32
    assert row.forward_gflops * 1e9 == pytest.approx(expected, rel=1e-9)
    assert row.forward_gmacs == pytest.approx(row.forward_gflops / 2)
    assert row.train_gflops == pytest.approx(3 * row.forward_gflops, rel=0.05)  # backward costs about twice
    assert row.activation_mib > 0


def test_token_dropout_halves_the_token_count_and_about_halves_the_cost():
    config = RunConfig(frames=4, size=16, model_args={"dim": 32, "depth": 2, "heads": 2, "tubelet": [2, 4, 4]})
    full = estimate(config, [], num_classes=10)
    half = estimate(config, [MethodSpec("token_dropout", {"keep": 0.5})], num_classes=10)
    expected = _hand_count(n=16, d=32, depth=2, patch_inputs=96, classes=10)
    embed_difference = 2 * 16 * 32 * 96  # the patch embedding still runs on every tubelet
    assert half.tokens == 16
    assert half.forward_gflops * 1e9 == pytest.approx(expected + embed_difference, rel=1e-9)
    assert half.activation_mib < full.activation_mib


@pytest.mark.parametrize("model, gmacs", [("vit_base", 180), ("vit_large", 597), ("vit_huge", 1192)])
def test_the_vit_presets_reproduce_videomae_figures(model, gmacs):
    """VideoMAE's table gives 180, 597 and 1192 G(MACs) per 16 x 224^2 clip for ViT-B, -L and -H."""
    row = estimate(RunConfig(model=model), [])
    assert (row.frames, row.size, row.tokens) == (16, 224, 1568)
    assert row.forward_gmacs == pytest.approx(gmacs, rel=0.002)


def test_estimate_command_prints_a_row_per_setting(capsys):
    assert main(["estimate", "--model", "vit_tiny", "--method", "token_dropout:keep=0.5",
                 "--method", "multigrid+token_dropout:keep=0.25"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 + 3 and "baseline" in out[2] and "token_dropout:keep=0.5" in out[3]
    assert "multigrid + token_dropout:keep=0.25" in out[4]


@pytest.fixture(scope="module")
def vit_base_rows():
    """One ViT-B estimate (16 x 224^2, 1568 tokens, 12 blocks) per setting, shared by the tests below (each takes
    a few seconds)."""
    config = RunConfig(model="vit_base", frames=16, size=224)
    settings = {"baseline": [], "tome": [MethodSpec("tome", {"r": 8})], "rlt": [MethodSpec("rlt")],
                "layers": [MethodSpec("token_dropout", {"keep": 0.5, "layers": "middle"})]}
    return {name: estimate(config, methods) for name, methods in settings.items()}


def test_tome_at_vit_base_merges_8_tokens_per_block_and_costs_in_proportion(vit_base_rows):
    base, tome = vit_base_rows["baseline"], vit_base_rows["tome"]
    assert base.tokens == 1568 and base.forward_gmacs == pytest.approx(180.3, abs=0.1)
    # blocks see 1568, 1560, ..., 1480 tokens: 1568 - 8 x 5.5 on average
    assert tome.tokens == 1524
    ratio = tome.forward_gmacs / base.forward_gmacs
    assert tome.forward_gmacs < base.forward_gmacs and 0.95 < ratio < 1.0
    assert ratio == pytest.approx(1524 / 1568, abs=0.01)  # the blocks' cost is nearly linear in the tokens here
    assert tome.train_gflops < base.train_gflops and tome.activation_mib < base.activation_mib


def test_rlt_is_estimated_with_every_token(vit_base_rows):
    """Meta tensors have no pixels to compare, so RLT keeps everything: the estimate is the baseline's."""
    base, rlt = vit_base_rows["baseline"], vit_base_rows["rlt"]
    assert rlt.tokens == 1568
    assert rlt.forward_gflops == pytest.approx(base.forward_gflops, rel=1e-9)


def test_layer_wise_dropping_at_vit_base_runs_the_middle_blocks_on_half_the_tokens(vit_base_rows):
    base, layers = vit_base_rows["baseline"], vit_base_rows["layers"]
    assert layers.tokens == pytest.approx((2 * 1568 + 10 * 784) / 12)  # the first and last blocks see all 1568
    assert layers.forward_gmacs < base.forward_gmacs
    assert layers.train_gflops < base.train_gflops


def test_estimate_command_says_rlt_is_shown_with_every_token(capsys):
    assert main(["estimate", "--model", "vit_tiny", "--method", "rlt"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "rlt" in out[3] and "every token, the upper bound" in out[-1]
    assert out[2].split("|")[3] == out[3].split("|")[3]  # the same tokens per clip as the baseline


@pytest.mark.slow
def test_every_claim_that_can_be_estimated_has_its_cost_ratios_at_paper_scale():
    """The reproduction table's paper-scale columns, for every method card that carries an estimable claim (the
    report tests stub the costly ones: ViViT-FE at 32 x 320^2 alone takes about 40 s)."""
    from vtbench.report.reproduction import claims, paper_scale

    estimable = {name: claim for name, claim in claims().items() if claim.estimable}
    assert estimable
    for name, claim in estimable.items():
        compute, memory = paper_scale(name, claim)
        assert compute > 1 and memory > 0, (name, compute, memory)  # every claim is of a cheaper training or pass
