import pytest

from vtbench.engine.config import MethodSpec, RunConfig, apply, load_run_config, parse_method, parse_set
from vtbench.errors import ConfigError


def test_set_parses_values_by_field_type():
    config = apply(RunConfig(), parse_set(["lr=3e-4", "seed=7", "budget=200steps", "model_args.depth=2",
                                           "frames=16", "lr_decay=cosine"]))
    assert config.lr == 3e-4 and isinstance(config.lr, float)
    assert config.seed == 7 and config.budget == "200steps" and config.frames == 16
    assert config.model_args == {"depth": 2}


def test_unknown_key_lists_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"unknown key 'lrr'; allowed: dataset, .*lr"):
        apply(RunConfig(), {"lrr": 1})


@pytest.mark.parametrize("key, value, expected", [("seed", "abc", "int"), ("lr", "fast", "float"),
                                                   ("batch_size", 2.5, "int"), ("seed", True, "int")])
def test_wrong_type_names_key_and_expected_type(key, value, expected):
    with pytest.raises(ConfigError, match=rf"{key} expects {expected}"):
        apply(RunConfig(), {key: value})


def test_method_forms():
    assert parse_method("token_dropout:keep=0.5,mode=tube") == MethodSpec(
        "token_dropout", {"keep": 0.5, "mode": "tube"})
    assert parse_method("pss") == MethodSpec("pss", {})
    config = apply(RunConfig(), {"methods": ["pss", {"multigrid": {"cycles": 2}}, {"flux": None}]})
    assert [str(m) for m in config.methods] == ["pss", "multigrid:cycles=2", "flux"]
    with pytest.raises(ConfigError, match="not key=value"):
        parse_method("token_dropout:keep")


def test_resolve_fills_shape_from_preset_and_drops_baseline():
    config = apply(RunConfig(), {"methods": ["baseline"]}).resolve()
    assert (config.frames, config.size, config.stride) == (16, 32, 2) and config.methods == []
    assert config.run_id() == RunConfig().resolve().run_id()


def test_run_id_follows_the_configuration():
    a = RunConfig().resolve().run_id()
    assert a == RunConfig().resolve().run_id()
    assert a != RunConfig(seed=1).resolve().run_id()
    assert a != apply(RunConfig(), {"methods": ["pss"]}).resolve().run_id()


def test_defaults_that_depend_on_the_data_or_the_start_are_stated_and_earlier_runs_keep_their_ids():
    def resolved(**settings):
        return RunConfig(**settings).resolve()

    # the fixed position table from scratch, the learned one that a timm image checkpoint fills
    assert resolved().model_args == {"pos_embed": "sincos"}
    assert resolved(arch="factorised").model_args == {}
    # flipped in training only where left and right are known not to matter
    assert resolved(dataset="folder:/data/clips").data_args == {"flip": False}
    assert resolved(dataset="kinetics:/data/k400").data_args == {"flip": True}
    assert resolved(dataset="synthetic").data_args == {}
    # ids made by vtbench before these defaults were stated: a run that states the value of that time is that run
    learned = {"pos_embed": "separable"}
    flipped = {"flip": True}
    assert resolved(dataset="folder:/data/clips", model_args=learned, data_args=flipped).run_id() == "a3f924fdd514"
    assert resolved(dataset="ssv2:/data/ssv2", model_args=learned).run_id() == "cad808f8f5f3"
    assert resolved(dataset="kinetics:/data/k400", model_args=learned).run_id() == "fd96a7e449c1"
    # and the new defaults make other runs
    assert resolved(dataset="folder:/data/clips", model_args=learned).run_id() != "a3f924fdd514"
    assert resolved(dataset="kinetics:/data/k400").run_id() != "fd96a7e449c1"


def test_yaml_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("budget: 20s\nseed: [1, 2\nlr: 0.1\n")
    with pytest.raises(ConfigError, match=rf"{path}:\d+: invalid YAML"):
        load_run_config(path)


def test_yaml_unknown_key_names_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("budget: 20s\nbatchsize: 3\n")
    with pytest.raises(ConfigError, match=rf"{path}: unknown key 'batchsize'"):
        load_run_config(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_run_config(path)


def test_yaml_config_loads(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("budget: 200steps\nmethods:\n  - token_dropout: {keep: 0.25}\nmodel_args: {depth: 2}\n")
    config = load_run_config(path)
    assert config.budget == "200steps" and config.model_args == {"depth": 2}
    assert config.methods == [MethodSpec("token_dropout", {"keep": 0.25})]


def test_invalid_values_are_refused():
    with pytest.raises(ConfigError, match="eval_every"):
        RunConfig(eval_every=0).resolve()
    with pytest.raises(ConfigError, match="unknown model preset 'vit_giant'; known: vit_tiny"):
        RunConfig(model="vit_giant").resolve()
    with pytest.raises(ConfigError, match="arch must be one of joint, factorised"):
        RunConfig(arch="x").resolve()
    with pytest.raises(ConfigError, match="stride must be at least 1, or 0 for one frame per equal segment"):
        RunConfig(stride=-1).resolve()


def test_stride_zero_asks_for_segments_not_the_preset():
    assert RunConfig(stride=0).resolve().stride == 0
    assert RunConfig().resolve().stride == 2  # vit_tiny's
