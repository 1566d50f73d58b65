import json

import pandas as pd
import pytest
import timm
import torch
from conftest import tiny
from safetensors.torch import save_file

from vtbench import methods
from vtbench.core.shape import BatchShape
from vtbench.engine.config import MethodSpec
from vtbench.engine.measure import reset_peak_rss
from vtbench.engine.runner import execute
from vtbench.errors import ConfigError
from vtbench.methods import Method, RunContext, build_method
from vtbench.models import build_model
from vtbench.models.embed import temporal_resampler

MODEL = {"dim": 32, "depth": 2, "heads": 2, "tubelet": [2, 8, 8], "temporal_depth": 1}


def _config(budget="20steps", **params):
    spec = [MethodSpec("frozen_spatial", {"stage1": 0.5, **params}), MethodSpec("snapshot")]
    return tiny(arch="factorised", frames=8, size=32, budget=budget, model_args=MODEL, methods=spec)


class Snapshot(Method):
    """Records, before every step, the spatial and temporal weights and whether spatial grads exist."""

    name = "snapshot"
    log: list = []

    def prepare(self, run):
        self.model = run.model
        Snapshot.log = []

    def lr_scale(self, progress, shape):
        model = self.model
        Snapshot.log.append({
            "progress": progress,
            "spatial": [p.detach().clone() for p in model.spatial_parameters()],
            "temporal": [p.detach().clone() for p in model.temporal_blocks.parameters()],
            "adapter": [p.detach().clone() for p in model.adapter.parameters()],
            "table1": model.temporal_pos.stage1.table.detach().clone(),
            "table2": model.temporal_pos.stage2.table.detach().clone(),
            "spatial_grads": any(p.grad is not None for p in model.spatial_parameters()),
            "spatial_trainable": any(p.requires_grad for p in model.spatial_parameters()),
        })
        return 1.0


@pytest.fixture
def snapshot(monkeypatch):
    monkeypatch.setitem(methods.REGISTRY, "snapshot", Snapshot)


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_after_the_switch_the_spatial_encoder_is_frozen_and_the_temporal_one_carries_on(snapshot, tmp_path):
    run_dir = execute(_config(), tmp_path, progress_bar=False)
    log = Snapshot.log
    switch = next(i for i, r in enumerate(log) if r["progress"] >= 0.5)
    assert switch == 10 and not log[switch]["spatial_trainable"]
    assert not _same(log[0]["spatial"], log[switch]["spatial"])  # stage 1 trained it
    for record in log[switch:]:
        assert _same(record["spatial"], log[switch]["spatial"])  # then it never changes
        assert not record["spatial_grads"]
    # the switch carries the temporal encoder over as stage 1 left it; stage 2 goes on training it
    assert not _same(log[switch]["temporal"], log[-1]["temporal"])
    steps = pd.read_parquet(run_dir / "steps.parquet")
    assert steps["stage"].tolist() == [1] * 10 + [2] * 10
    assert steps["frames"].tolist() == [4] * 10 + [8] * 10  # stage 1 on shorter clips (half)
    assert steps["trainable_params"].iloc[-1] < steps["trainable_params"].iloc[0]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0 < summary["stage2_train_s"] < summary["train_s"]


def test_stage_two_starts_from_temporal_positions_stage_one_trained(snapshot, tmp_path):
    run_dir = execute(_config(), tmp_path, progress_bar=False)
    log = Snapshot.log
    switch = next(i for i, r in enumerate(log) if r["progress"] >= 0.5)
    steps = pd.read_parquet(run_dir / "steps.parquet")
    assert (steps["frames"].iloc[:switch] // 2 >= 2).all()  # stage 1 sees at least two temporal indices
    before, trained = log[0]["table1"], log[switch - 1]["table1"]
    assert trained.shape[0] == 2 and (trained - before).abs().amax(dim=1).min() > 0  # each entry trained
    weights = temporal_resampler(2, 4)  # linear interpolation up to the 4 temporal tokens of stage 2
    assert (weights >= 0).all() and torch.allclose(weights.sum(1), torch.ones(4)) and (weights.sum(0) > 0).all()
    assert torch.allclose(log[switch]["table2"], weights @ log[switch]["table1"])  # every entry from trained ones
    assert torch.equal(log[switch]["table1"], log[-1]["table1"])  # stage 1's table frozen from then on
    assert not torch.equal(log[switch]["table2"], log[-1]["table2"])  # stage 2's table trains on


def test_frozen_parameters_hold_no_optimizer_state(tmp_path):
    config = _config()
    config.methods = config.methods[:1]
    run_dir = execute(config, tmp_path, progress_bar=False)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)["optimizer"]["state"]
    summary = json.loads((run_dir / "summary.json").read_text())
    trainable = [p for p in state.values() if "exp_avg" in p]
    assert sum(p["exp_avg"].numel() for p in trainable) == summary["trainable_params"]  # the frozen have none


class HeavyStageOne(Method):
    """Touches 400 MB on every training step before the switch (at progress 0.5), none after it."""

    name = "heavy_stage1"

    def lr_scale(self, progress, shape):
        if progress < 0.5:
            block = torch.ones(100_000_000)
            del block
        return 1.0


@pytest.mark.skipif(not reset_peak_rss(), reason="/proc/self/clear_refs is not writable here: the resident-memory "
                    "peak cannot be reset at the switch, so stage 2's peak would include stage 1's")
def test_stage_two_memory_comes_from_the_training_windows_after_the_switch(monkeypatch, tmp_path):
    monkeypatch.setitem(methods.REGISTRY, "heavy_stage1", HeavyStageOne)
    config = _config()
    config.methods = [config.methods[0], MethodSpec("heavy_stage1")]
    config.eval_every = 1.0  # no evaluation between the stages: the switch itself must split the window
    summary = json.loads((execute(config, tmp_path, progress_bar=False) / "summary.json").read_text())
    assert summary["mem_rss"] - summary["stage2_mem_rss"] > 300 * 2**20  # stage 1's 400 MB stay out of stage 2's
    assert summary["stage2_mem_rss"] > 0 and summary["stage2_mem_allocated"] is None  # no CUDA: empty, not zero


def test_stage_one_needs_two_temporal_tokens(tmp_path):
    config = tiny(arch="factorised", frames=8, size=32, model_args=MODEL,
                  methods=[MethodSpec("frozen_spatial", {"stage1_frames": 2})])
    with pytest.raises(ConfigError, match="at least 4 .two temporal tokens"):
        execute(config, tmp_path, progress_bar=False)


def test_the_spatial_encoder_runs_without_autograd_in_stage_two(snapshot, tmp_path):
    from vtbench.core.shape import BatchShape
    from vtbench.methods import RunContext
    from vtbench.models import build_model

    model = build_model("vit_tiny", "factorised", 5, 8, 32, **{**MODEL, "tubelet": (2, 8, 8)})
    method = build_method(MethodSpec("frozen_spatial", {"stage1": 0}))
    method.prepare(RunContext(tiny().resolve(), model, BatchShape(2, 8, 32, 2), 5, torch.device("cpu"), None))
    tokens = model.embed(torch.randn(2, 3, 8, 32, 32))
    frames, _ = model.spatial(tokens)
    assert not tokens.x.requires_grad and not frames.requires_grad and frames.grad_fn is None
    logits = model(torch.randn(2, 3, 8, 32, 32))
    assert logits.requires_grad  # the adapter, temporal encoder and head still learn


@pytest.mark.parametrize("adapter", ["attn_pool", "mlp"])
def test_adapter_variants_train(adapter, snapshot, tmp_path):
    execute(_config(adapter=adapter), tmp_path, progress_bar=False)
    log = Snapshot.log
    switch = next(i for i, r in enumerate(log) if r["progress"] >= 0.5)
    assert _same(log[0]["adapter"], log[switch]["adapter"])  # idle in stage 1
    assert not _same(log[switch]["adapter"], log[-1]["adapter"])  # trained in stage 2


class CrashInStageTwo(Method):
    name = "crash_stage2"
    crashed = False

    def lr_scale(self, progress, shape):
        if progress >= 0.7 and not CrashInStageTwo.crashed:
            CrashInStageTwo.crashed = True
            raise RuntimeError("simulated crash")
        return 1.0


def test_the_stage_switch_survives_checkpoint_and_resume(monkeypatch, tmp_path):
    monkeypatch.setitem(methods.REGISTRY, "crash_stage2", CrashInStageTwo)
    config = tiny(arch="factorised", frames=8, size=32, budget="20steps", model_args=MODEL,
                  methods=[MethodSpec("frozen_spatial", {"stage1": 0.5}), MethodSpec("crash_stage2")])
    CrashInStageTwo.crashed = True
    reference = execute(config, tmp_path / "ref", progress_bar=False)
    CrashInStageTwo.crashed = False
    with pytest.raises(RuntimeError):
        execute(config, tmp_path / "run", progress_bar=False)
    resumed = execute(config, tmp_path / "run", progress_bar=False)
    ref, res = (pd.read_parquet(d / "steps.parquet") for d in (reference, resumed))
    assert res["stage"].tolist() == ref["stage"].tolist()
    assert res["loss"].tolist() == pytest.approx(ref["loss"].tolist(), rel=1e-5)
    ref_model, res_model = (torch.load(d / "checkpoint.pt", weights_only=False)["model"] for d in (reference, resumed))
    assert all(torch.equal(ref_model[k], res_model[k]) for k in ref_model)
    ref_summary, res_summary = (json.loads((d / "summary.json").read_text()) for d in (reference, resumed))
    assert 0 < res_summary["stage2_train_s"] < res_summary["train_s"]  # the switch's time survived the resume
    assert res_summary["stage2_mem_rss"] > 0 and ref_summary["stage2_mem_rss"] > 0


def _timm_state(tmp_path, depth=2):
    """A tiny image ViT with every parameter random (nothing at zero), saved as timm saves it."""
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32,
                            depth=depth, num_heads=2, num_classes=0)
    with torch.no_grad():
        for p in vit.parameters():
            p.add_(0.02 * torch.randn_like(p))
    path = tmp_path / f"vit_depth{depth}.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path))
    return vit.eval(), path


def test_as_published_the_spatial_encoder_is_the_image_model_and_never_changes(snapshot, tmp_path):
    vit, path = _timm_state(tmp_path)
    config = tiny(arch="factorised", frames=8, size=32, budget="6steps", model_args=MODEL, lr=0.05,
                  init={"file": str(path), "format": "timm"},
                  methods=[MethodSpec("frozen_spatial", {"stage1": 0}), MethodSpec("snapshot")])
    run_dir = execute(config, tmp_path / "out", progress_bar=False)
    first, last = Snapshot.log[0], Snapshot.log[-1]
    assert _same(first["spatial"], last["spatial"]) and not last["spatial_grads"]  # frozen from the first step
    assert not _same(first["temporal"], last["temporal"])  # while the temporal encoder trains
    model = build_model("vit_tiny", "factorised", 10, 8, 32, **MODEL)
    with torch.no_grad():
        for p, value in zip(model.spatial_parameters(), first["spatial"], strict=True):
            p.copy_(value)
        clip = torch.randn(2, 3, 8, 32, 32)
        frames, _ = model.spatial(model.embed(clip))
        for t in range(4):  # each frame index's CLS output is the image model's on that tubelet's central frame
            image = vit.forward_features(clip[:, :, 2 * t + 1])[:, 0]
            assert torch.allclose(frames[:, t, 0], image, atol=1e-4)
    init = json.loads((run_dir / "summary.json").read_text())["init"]
    assert init["format"] == "timm" and init["inflate"] == "central" and init["random"] == []
    assert "patch_embed.proj.weight" in init["made"] and init["replaced"] == ["head.bias", "head.weight"]


def test_a_mismatching_checkpoint_names_the_key_and_writes_nothing(tmp_path):
    _, path = _timm_state(tmp_path, depth=3)
    config = tiny(arch="factorised", frames=8, size=32, model_args=MODEL, init={"file": str(path), "format": "timm"},
                  methods=[MethodSpec("frozen_spatial", {"stage1": 0})])
    with pytest.raises(ConfigError, match=r"unexpected spatial_blocks\.2\."):
        execute(config, tmp_path / "out", progress_bar=False)
    assert not (tmp_path / "out").exists()


def test_frozen_spatial_with_token_dropout(tmp_path):
    config = tiny(arch="factorised", frames=8, size=32, budget="12steps", model_args=MODEL,
                  methods=[MethodSpec("frozen_spatial", {"stage1": 0.5}), MethodSpec("token_dropout", {"keep": 0.5})])
    steps = pd.read_parquet(execute(config, tmp_path, progress_bar=False) / "steps.parquet")
    full = (steps["frames"] // 2) * 16
    assert (steps["tokens"] == (full * 0.5).round()).all()
    assert steps["stage"].tolist() == [1] * 6 + [2] * 6


@pytest.mark.parametrize("params, message", [
    ({"stage1": 1.0}, r"stage1=1.0 is outside the allowed range \[0, 1\)"),
    ({"stage1": -0.1}, r"stage1=-0.1 is outside"),
    ({"adapter": "linear"}, "adapter='linear' is not allowed; choose one of attn_pool, mlp"),
    ({"checkpoint": "vit.pth"}, "now the run's init setting"),
])
def test_bad_parameters_are_named(params, message):
    with pytest.raises(ConfigError, match=message):
        build_method(MethodSpec("frozen_spatial", params))


def test_frozen_spatial_needs_the_factorised_encoder(tmp_path):
    with pytest.raises(ConfigError, match="needs the factorised encoder: set arch=factorised"):
        execute(tiny(methods=[MethodSpec("frozen_spatial")]), tmp_path, progress_bar=False)


def test_the_frozen_encoders_optimizer_state_is_gone_when_stage_two_begins(monkeypatch, tmp_path):
    import inspect

    from vtbench.engine.measure import Measurements

    stale = []
    begin = Measurements.begin_phase

    def spying(self, name):
        run = inspect.currentframe().f_back.f_locals["self"]  # the Run beginning the phase
        stale.append(sum(p in run.optimizer.state for p in run.model.spatial_parameters()))
        begin(self, name)

    monkeypatch.setattr(Measurements, "begin_phase", spying)
    config = _config()
    config.methods = config.methods[:1]
    execute(config, tmp_path, progress_bar=False)
    assert stale == [0]  # AdamW's moments of the frozen encoder were dropped before stage 2's memory counts


def test_the_planned_shape_foresees_the_switch_without_making_it():
    model = build_model("vit_tiny", "factorised", 5, 8, 32, **{**MODEL, "tubelet": (2, 8, 8)})
    method = build_method(MethodSpec("frozen_spatial", {"stage1": 0.5}))
    base = BatchShape(2, 8, 32, 2)
    method.prepare(RunContext(tiny().resolve(), model, base, 5, torch.device("cpu"), None))
    stage1 = base._replace(frames=method.stage1_frames)
    assert stage1 != base
    assert method.planned_shape(0.4, 3, base) == method.batch_shape(0.4, 3, base) == stage1
    assert method.planned_shape(0.5, 4, base) == base and method.stage == 1  # foreseen, not made
    assert method.batch_shape(0.5, 4, base) == base and method.stage == 2
