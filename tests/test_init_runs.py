"""A run's `init` setting end to end: the command line, the run id, a fine-tune from a finished run, refusals that
write nothing, the grid's `inits` axis, layer-wise learning-rate decay and the pretrained image model."""

import json
import shutil

import pytest
import torch
from conftest import tiny
from safetensors.torch import load_file
from timm.optim import create_optimizer_v2

from vtbench.cli.main import main
from vtbench.engine.config import MethodSpec, RunConfig, apply
from vtbench.engine.pretrain import pretrain
from vtbench.engine.runner import Run, execute
from vtbench.errors import ConfigError
from vtbench.models import build_model
from vtbench.models.param_groups import param_groups
from vtbench.studies.grid import load_grid

TINY_IMAGE = {"model_args": {"dim": 128, "depth": 3, "heads": 4, "tubelet": [2, 8, 8]}, "frames": 4, "size": 32}


@pytest.fixture(scope="module")
def image_checkpoint(tmp_path_factory):
    """The suite's own pretrained image model (vit_tiny's spatial side), briefly trained."""
    path = tmp_path_factory.mktemp("image") / "image_vit_tiny.safetensors"
    pretrain(path, "vit_tiny", steps=3, batch_size=8, eval_images=16)
    return path


def test_pretrain_writes_a_timm_state_dict_and_its_record(image_checkpoint):
    state = load_file(str(image_checkpoint))
    assert state["patch_embed.proj.weight"].shape == (128, 3, 8, 8) and state["head.weight"].shape == (9, 128)
    assert state["cls_token"].shape == (1, 1, 128) and state["pos_embed"].shape == (1, 17, 128)
    record = json.loads(image_checkpoint.with_suffix(".json").read_text())
    assert record["steps"] == 3 and len(record["classes"]) == 9


def test_a_run_from_an_image_checkpoint_on_the_command_line(image_checkpoint, tmp_path, capsys):
    args = ["run", "--budget", "2steps", "--out", str(tmp_path), "--no-progress", "--set", "batch_size=4",
            "--set", "eval_clips=8", "--set", "frames=4", "--set", f"init.file={image_checkpoint}",
            "--set", "init.format=timm", "--set", "init.inflate=average"]
    assert main(args) == 0
    (run_dir,) = [d for d in tmp_path.iterdir() if d.is_dir()]
    init = json.loads((run_dir / "summary.json").read_text())["init"]
    assert init["format"] == "timm" and init["inflate"] == "average" and init["random"] == []
    assert init["made"]["pos_embed.temporal"].startswith("zeros")
    assert init["replaced"] == ["head.bias", "head.weight"]  # 9 image classes, 10 video classes
    assert init["dropped"] == ["cls_token"]  # the joint model pools its tokens and has no class token
    assert init["loaded"] > 30


def test_the_run_id_follows_the_files_content_not_its_path(image_checkpoint, tmp_path):
    moved = tmp_path / "elsewhere.safetensors"
    shutil.copy(image_checkpoint, moved)
    base = tiny(**TINY_IMAGE)
    here = apply(base, {"init": {"file": str(image_checkpoint), "format": "timm"}}).resolve()
    there = apply(base, {"init": {"file": str(moved), "format": "timm"}}).resolve()
    assert here.run_id() == there.run_id() != base.resolve().run_id()
    changed = load_file(str(moved))
    changed["head.bias"] += 1
    from safetensors.torch import save_file

    save_file(changed, str(moved))
    assert apply(base, {"init": {"file": str(moved), "format": "timm"}}).resolve().run_id() != here.run_id()
    assert apply(here, {"init": {**here.init, "inflate": "average"}}).resolve().run_id() != here.run_id()


def test_a_fine_tune_starts_from_its_parents_final_weights(tmp_path):
    parent = execute(tiny(budget="6steps", eval_every=1.0), tmp_path / "parent", progress_bar=False)
    parent_top1 = json.loads((parent / "summary.json").read_text())["top1"]
    # the same model from the parent's weights, trained at a learning rate too small to move a float32 weight
    child = tiny(budget="1steps", eval_every=1.0, lr=1e-30, seed=5, init={"file": str(parent), "format": "vtbench"})
    child_dir = execute(child, tmp_path / "child", progress_bar=False)
    summary = json.loads((child_dir / "summary.json").read_text())
    assert summary["top1"] == parent_top1
    assert summary["init"]["replaced"] == [] and summary["init"]["made"] == {}
    weights = torch.load(parent / "checkpoint.pt", weights_only=True)["model"]
    run = Run(child.resolve(), tmp_path / "unused")
    assert all(torch.equal(run.model.state_dict()[k], v) for k, v in weights.items())


def test_a_run_that_has_not_completed_is_no_start(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text(json.dumps({"status": "failed"}))
    with pytest.raises(ConfigError, match=r"is not a completed vtbench run \(its summary.json says failed\)"):
        tiny(init={"file": str(tmp_path / "run"), "format": "vtbench"}).resolve()


def test_a_misshapen_or_missing_key_is_one_line_and_nothing_is_written(image_checkpoint, tmp_path, capsys):
    from safetensors.torch import save_file

    state = load_file(str(image_checkpoint))
    state["blocks.1.mlp.fc1.weight"] = state["blocks.1.mlp.fc1.weight"][:100]
    del state["blocks.2.norm1.bias"]
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad))
    out = tmp_path / "out"
    code = main(["run", "--budget", "2steps", "--out", str(out), "--no-progress", "--set", "frames=4",
                 "--set", f"init.file={bad}", "--set", "init.format=timm"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "missing blocks.2.norm1.bias" in err[0] and "wrong shape blocks.1.mlp.fc1.weight (100, 128)" in err[0]
    assert not out.exists() or not any(out.iterdir())  # no run folder, no claim left behind


@pytest.mark.parametrize("init, message", [
    ({"format": "timm"}, "init needs a file"),
    ({"file": "x.pth", "format": "onnx"}, "init.format must be one of timm, videomae, vtbench; got 'onnx'"),
    ({"file": "x.pth", "format": "timm", "inflate": "first"}, "init.inflate must be one of central, average"),
    ({"file": "x.pth", "format": "videomae", "inflate": "central"}, "init.inflate is not an option of format videomae"),
    ({"file": "nowhere.pth", "format": "timm"}, "init.file nowhere.pth does not exist"),
])
def test_bad_init_settings_are_named(init, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tiny(init=init).resolve()


def test_the_grids_inits_axis_matches_each_start_with_its_own_baseline(image_checkpoint, tmp_path):
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(f"""
study: starts
base: {{model_args: {TINY_IMAGE['model_args']}, frames: 4, size: 32}}
inits: [scratch, {{file: {image_checkpoint}, format: timm}}]
methods: [[], ["token_dropout:keep=0.5"]]
budgets: [2steps]
seeds: [0, 1]
""")
    grid = load_grid(grid_file)
    assert len(grid.cells) == 8
    assert sum(1 for c in grid.cells if c.init) == 4
    labels = sorted(set(grid.labels.values()))
    assert "baseline @ 2steps, seed 0" in labels and "token_dropout:keep=0.5 @ 2steps, seed 1" in labels
    from vtbench.studies.comparison import labels as row_labels

    rows = sorted(set(row_labels(grid.cells)))
    # an image checkpoint brings its learned position table, a start from scratch takes the fixed one: the rows say so
    image = "init=timm:image_vit_tiny.safetensors, model_args.pos_embed=separable"
    assert rows == ["baseline (init=scratch)", f"baseline ({image})", "token_dropout:keep=0.5 (init=scratch)",
                    f"token_dropout:keep=0.5 ({image})"]


def test_layer_decay_scales_each_blocks_rate_from_the_head_down():
    model = build_model("vit_tiny", "joint", 5, 4, 32)  # 3 blocks
    groups = param_groups(model, 0.05, layer_decay=0.5)
    scale = {name: g["lr_scale"] for g in groups for p in g["params"]
             for name, q in model.named_parameters() if q is p}
    assert scale["head.weight"] == scale["norm.weight"] == 1.0
    assert scale["blocks.2.mlp.fc1.weight"] == 0.5 and scale["blocks.0.attn.qkv.weight"] == 0.125
    assert scale["patch_embed.proj.weight"] == scale["pos_embed.spatial"] == 0.0625
    decays = {name: g["weight_decay"] for g in groups for p in g["params"]
              for name, q in model.named_parameters() if q is p}
    assert decays["pos_embed.spatial"] == 0 and decays["blocks.0.attn.qkv.bias"] == 0
    assert decays["blocks.0.attn.qkv.weight"] == 0.05
    factorised = build_model("vit_tiny", "factorised", 5, 4, 32)  # 3 spatial blocks, 1 temporal
    order = {name: g["lr_scale"] for g in param_groups(factorised, 0.05, 0.5) for p in g["params"]
             for name, q in factorised.named_parameters() if q is p}
    depth = {name.split(".")[0] + ("." + name.split(".")[1] if "blocks" in name else ""): scale
             for name, scale in order.items()}  # BEiT's numbering over both encoders: 0.5 per layer from the head
    assert depth == {"head": 1, "norm": 1, "temporal_blocks.0": 0.5, "spatial_norm": 0.25, "temporal_pos": 0.25,
                     "temporal_cls": 0.25, "spatial_blocks.2": 0.125, "spatial_blocks.1": 0.0625,
                     "spatial_blocks.0": 0.03125, "patch_embed": 0.015625, "pos_embed": 0.015625,
                     "spatial_cls": 0.015625}


def test_a_run_applies_the_scales_to_the_learning_rate(tmp_path):
    config = tiny(budget="2steps", layer_decay=0.5, warmup=0.0)
    run = Run(config.resolve(), tmp_path / "run")
    run._set_learning_rate(0.5, run.base)
    rates = {g["lr_scale"]: g["lr"] for g in run.optimizer.param_groups}
    assert rates[1.0] == pytest.approx(config.lr * 0.5)  # linear decay at progress 0.5
    assert rates[0.25] == pytest.approx(config.lr * 0.5 * 0.25)
    assert RunConfig(layer_decay=0.75).resolve().run_id() != RunConfig().resolve().run_id()


def test_runs_without_a_start_keep_the_ids_they_had_before_starts_existed():
    # ids of runs made before `init` and `layer_decay` were settings (computed at commit 33041f8): results found
    # (the joint model's learned position table, the default then, stated)
    assert RunConfig(model_args={"pos_embed": "separable"}).resolve().run_id() == "60e862819d5e"
    assert RunConfig(arch="factorised", model="vit_small").resolve().run_id() == "5d287089d5a0"


def test_one_start_has_one_id_however_its_defaults_are_spelt(image_checkpoint):
    bare = tiny(init={"file": str(image_checkpoint), "format": "timm"}).resolve()
    spelt = tiny(init={"file": str(image_checkpoint), "format": "timm", "inflate": "central", "strict": True})
    assert bare.run_id() == spelt.resolve().run_id()


def test_a_finished_run_of_another_model_is_refused_by_name(tmp_path):
    parent = execute(tiny(budget="1steps", eval_every=1.0), tmp_path / "parent", progress_bar=False)
    with pytest.raises(ConfigError, match=r"the run trained another model: model_args .*'depth': 1.* \(this run: "):
        tiny(model_args={"dim": 32, "depth": 2, "heads": 2, "tubelet": [2, 4, 4]},
             init={"file": str(parent), "format": "vtbench"}).resolve()


def test_a_run_of_a_method_that_changes_the_model_fine_tunes_the_same_method(tmp_path):
    # frozen_spatial adds an adapter and a staged position table: its weights load into the model it makes again
    model = {"dim": 32, "depth": 1, "heads": 2, "tubelet": [2, 8, 8], "temporal_depth": 1}
    base = dict(arch="factorised", frames=8, size=32, model_args=model, eval_every=1.0)
    parent = execute(tiny(budget="4steps", methods=[MethodSpec("frozen_spatial", {"stage1": 0.5})], **base),
                     tmp_path / "parent", progress_bar=False)
    child = tiny(budget="1steps", lr=1e-30, methods=[MethodSpec("frozen_spatial", {"stage1": 0})],
                 init={"file": str(parent), "format": "vtbench"}, **base)
    summary = json.loads((execute(child, tmp_path / "child", progress_bar=False) / "summary.json").read_text())
    assert summary["init"]["random"] == [] and summary["init"]["unused"] == []
    assert summary["top1"] == json.loads((parent / "summary.json").read_text())["top1"]


def test_a_grid_whose_start_does_not_fit_is_refused_before_any_cell(image_checkpoint, tmp_path):
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(f"""
study: misfit
base: {{model_args: {{dim: 64, depth: 3, heads: 4, tubelet: [2, 8, 8]}}, frames: 4, size: 32}}
inits: [{{file: {image_checkpoint}, format: timm}}]
budgets: [2steps]
""")
    misshapen = r"wrong shape .*blocks\.0\.attn\.qkv\.weight \(384, 128\) \(model: \(192, 64\)\)"
    with pytest.raises(ConfigError, match=misshapen):
        load_grid(grid_file)


def test_a_training_scripts_checkpoint_with_its_arguments_loads(tmp_path):
    import argparse

    from vtbench.models.weights import read_state

    torch.save({"model": {"blocks.0.norm1.weight": torch.ones(4)}, "epoch": 3,
                "args": argparse.Namespace(lr=5e-4)}, tmp_path / "checkpoint-99.pth")  # as VideoMAE saves
    assert list(read_state(tmp_path / "checkpoint-99.pth")) == ["blocks.0.norm1.weight"]


def test_a_run_from_a_hugging_face_videomae_checkpoint_on_the_command_line(tmp_path):
    transformers = pytest.importorskip("transformers")  # a dev dependency: present wherever the tests are
    config = transformers.VideoMAEConfig(image_size=32, patch_size=8, num_frames=16, tubelet_size=2, hidden_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                                         use_mean_pooling=True, qkv_bias=True, num_labels=5)
    transformers.VideoMAEForVideoClassification(config).save_pretrained(tmp_path / "videomae")
    args = ["run", "--budget", "1steps", "--out", str(tmp_path / "out"), "--no-progress", "--set", "batch_size=4",
            "--set", "eval_clips=8", "--set", f"init.file={tmp_path / 'videomae' / 'model.safetensors'}",
            "--set", "init.format=videomae"]
    for key, value in {"dim": 64, "depth": 2, "heads": 4, "tubelet": "[2,8,8]", "pos_embed": "sincos",
                       "fc_norm": "true", "qkv_bias": "qv"}.items():
        args += ["--set", f"model_args.{key}={value}"]
    assert main(args) == 0
    (run_dir,) = [d for d in (tmp_path / "out").iterdir() if d.is_dir()]
    init = json.loads((run_dir / "summary.json").read_text())["init"]
    assert init["format"] == "videomae" and init["random"] == [] and init["unused"] == []
    assert init["replaced"] == ["head.bias", "head.weight"]  # 5 labels in the checkpoint, 10 video classes here
    assert init["loaded"] == len(torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]) - 2


@pytest.mark.parametrize("arch", ["joint", "factorised"])
def test_the_models_answer_timms_questions_so_timms_own_optimizer_groups_them_alike(arch):
    model = build_model("vit_tiny", arch, 5, 4, 32)
    ours = param_groups(model, 0.05, layer_decay=0.5)
    timms = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.5).param_groups

    def by_name(groups):
        names = {id(p): n for n, p in model.named_parameters()}
        return {names[id(p)]: (g["lr_scale"], g["weight_decay"]) for g in groups for p in g["params"]}

    assert by_name(timms) == by_name(ours)
    assert len({scale for scale, _ in by_name(ours).values()}) > 3  # several depths, not one group
