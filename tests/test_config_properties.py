"""Property tests: whatever YAML or --set values a user writes, the configuration readers either load them or raise
the project's error type (one line at the CLI), never anything else."""

import json
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vtbench.core.budget import Budget
from vtbench.engine.config import FIELDS, RunConfig, apply, load_run_config, parse_set
from vtbench.errors import VtbenchError
from vtbench.methods import build_methods
from vtbench.models import MODEL_ARGS
from vtbench.studies.grid import KEYS as GRID_KEYS
from vtbench.studies.grid import load_grid
from vtbench.studies.tune import KEYS as TUNE_KEYS
from vtbench.studies.tune import load_tune

PROPERTIES = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
METHODS = ["token_dropout", "multigrid", "pss", "frozen_spatial", "flux", "baseline", "turbo"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["60s", "5steps", "1e400steps", "joint", "factorised", "cosine", "synthetic", "[2, 8, 8]"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8) | st.sampled_from(METHODS), inner, max_size=3),
                      max_leaves=8)


def _plausible(name: str):
    """Values of the right type for a run setting, edges and nonsense included, so that examples get past the
    type checks to the range checks, the model, the budget and the methods."""
    kind = str(FIELDS[name].type)
    if name == "budget":
        return st.sampled_from(["5steps", "0steps", "1e400steps", "2.5s", "-1s", "3e12flops", "10samples", "5 parsecs"])
    if name == "methods":
        return st.lists(method_entries, max_size=3)
    if name == "model_args":
        return st.dictionaries(st.sampled_from([*MODEL_ARGS, "width"]), scalars | st.lists(st.integers(-2, 40),
                                                                                          max_size=4), max_size=3)
    if "int" in kind:
        return st.integers(min_value=-5, max_value=2**64) | st.none()
    if "float" in kind:
        return st.floats(allow_nan=True, allow_infinity=True, min_value=None, max_value=None) | st.integers(-3, 3)
    if "list" in kind:
        return st.lists(st.sampled_from(["keep=0.5,random", "tokens=1/4,group", "frames=4", "size=16", "nonsense"]),
                        max_size=3) | st.none()
    return values


plausible_runs = st.lists(st.sampled_from(list(FIELDS)), max_size=5, unique=True).flatmap(
    lambda names: st.fixed_dictionaries({n: _plausible(n) for n in names}))
run_keys = st.sampled_from([*FIELDS, *(f"model_args.{k}" for k in MODEL_ARGS), "data_args.appearance"]) | st.text(
    max_size=10)
run_mappings = st.dictionaries(run_keys, values, max_size=5)
method_entries = st.one_of(st.sampled_from(METHODS), st.dictionaries(st.sampled_from(METHODS), values, max_size=1),
                           values)


def _checked(call):
    """The call's result, or None where it raised the project's error; anything else fails the test."""
    try:
        return call()
    except VtbenchError:
        return None


def _validated(config: RunConfig) -> None:
    """What the CLI checks before it writes anything: the resolved config, its budget and its methods."""
    resolved = config.resolve()
    Budget.parse(resolved.budget)
    build_methods(resolved.methods)


_FOLDER = tempfile.TemporaryDirectory(prefix="vtbench-properties-")


def _write(text: str) -> Path:
    path = Path(_FOLDER.name) / "config.yaml"
    path.write_text(text)
    return path


@PROPERTIES
@given(run_mappings | plausible_runs)
def test_any_run_config_yaml_loads_or_is_a_project_error(mapping):
    path = _write(yaml.safe_dump(mapping))
    config = _checked(lambda: load_run_config(path))
    if config is not None:
        _checked(lambda: _validated(config))


@PROPERTIES
@given(st.text(max_size=60))
def test_any_text_as_a_config_file_loads_or_is_a_project_error(text):
    path = _write(text)
    config = _checked(lambda: load_run_config(path))
    if config is not None:
        _checked(lambda: _validated(config))


@PROPERTIES
@given(st.lists(st.tuples(run_keys, st.text(max_size=16) | scalars.map(str)), max_size=4))
def test_any_set_flags_apply_or_are_a_project_error(items):
    def run():
        config = apply(RunConfig(budget="5steps"), parse_set([f"{k}={v}" for k, v in items]), where="--set")
        _validated(config)

    _checked(run)


@PROPERTIES
@given(st.just({}) | st.dictionaries(st.sampled_from(GRID_KEYS), values, max_size=2), plausible_runs,
       st.lists(st.lists(method_entries, max_size=2) | method_entries, min_size=1, max_size=3),
       st.lists(_plausible("budget"), max_size=2), st.lists(st.integers(-1, 3), max_size=2))
def test_any_grid_yaml_loads_or_is_a_project_error(mapping, base, methods, budgets, seeds):
    mapping = {"study": "g", "base": base, "methods": methods, "budgets": budgets or ["5steps"],
               "seeds": seeds or [0], **mapping}
    _checked(lambda: load_grid(_write(yaml.safe_dump(mapping))))


@PROPERTIES
@given(st.just({}) | st.dictionaries(st.sampled_from(TUNE_KEYS), values, max_size=2),
       plausible_runs,
       st.lists(st.dictionaries(st.sampled_from(METHODS),
                                st.dictionaries(st.sampled_from(["keep", "mode", "r"]),
                                                values | st.fixed_dictionaries({"float": st.lists(scalars, max_size=3)})
                                                | st.fixed_dictionaries({"choice": st.lists(scalars, max_size=3)}),
                                                max_size=2),
                                max_size=1), max_size=2))
def test_any_tune_yaml_loads_or_is_a_project_error(mapping, base, methods):
    mapping = {"study": "t", "budget": "5steps", "base": base, "methods": methods, "trials": 2, **mapping}
    _checked(lambda: load_tune(_write(yaml.safe_dump(mapping))))


# ---- valid configurations are accepted ----------------------------------------------------------------------
# The properties above pass whatever the readers do with good input, even if they refused everything: these
# generate only valid configurations, which must load and validate without any error.

valid_methods = st.one_of(
    st.just("baseline"),
    st.builds(lambda keep, mode: {"token_dropout": {"keep": keep, "mode": mode}},
              st.floats(0.05, 1.0), st.sampled_from(["random", "tube", "frame"])),
    st.builds(lambda schedule, start, end, cooldown: {"pss": {"schedule": schedule, "start": start, "end": end,
                                                               "cooldown": cooldown}},
              st.sampled_from(["linear", "cosine", "cyclic"]), st.floats(-1, 1), st.floats(-1, 1), st.floats(0, 0.9)),
    st.builds(lambda cycles, final, scaling: {"multigrid": {"cycles": cycles, "final": final, "lr_scaling": scaling}},
              st.integers(1, 5), st.floats(0, 0.9), st.sampled_from(["linear", "sqrt", "none"])),
    st.builds(lambda keep: {"tome": {"keep": keep}}, st.floats(0.05, 1.0)),
    st.builds(lambda threshold: {"rlt": {"threshold": threshold}}, st.floats(0, 255)),
)
valid_settings = {
    "budget": st.sampled_from(["5steps", "2.5s", "1min", "3e12flops", "10samples"]),
    "seed": st.integers(0, 2**63 - 1),
    "lr": st.floats(1e-6, 1.0),
    "weight_decay": st.floats(0, 1),
    "warmup": st.floats(0, 0.9),
    "grad_clip": st.floats(0, 10),
    "label_smoothing": st.floats(0, 0.9),
    "layer_decay": st.floats(0.05, 1.0),
    "eval_every": st.floats(0.01, 1.0),
    "batch_size": st.integers(1, 256),
    "eval_clips": st.integers(1, 10**6),
    "eval_subset": st.integers(1, 10**6),
    "eval_batch_size": st.integers(1, 1024),
    "log_every": st.integers(1, 1000),
    "checkpoint_every": st.floats(0, 10**4),
    "stride": st.integers(0, 8),
    "frames": st.sampled_from([4, 8, 16]),
    "size": st.sampled_from([16, 32, 64]),
    "arch": st.sampled_from(["joint", "factorised"]),
    "lr_decay": st.sampled_from(["linear", "cosine"]),
    "precision": st.sampled_from(["auto", "fp32", "bf16"]),
    "eval_sweep_at": st.sampled_from(["final", "every"]),
    "model_args": st.fixed_dictionaries({}, optional={"depth": st.integers(1, 4), "mlp_ratio": st.floats(0.5, 8),
                                                      "drop_path": st.floats(0, 0.9)}),
    "methods": st.lists(valid_methods, max_size=1),
}
valid_runs = st.fixed_dictionaries({}, optional=valid_settings)


@PROPERTIES
@given(valid_runs)
def test_valid_run_config_yaml_is_accepted(mapping):
    config = load_run_config(_write(yaml.safe_dump(mapping)))  # any error fails: the input is valid
    _validated(config)
    assert {k: getattr(config, k) for k in ("seed", "batch_size", "arch") if k in mapping} == {
        k: mapping[k] for k in ("seed", "batch_size", "arch") if k in mapping}


@PROPERTIES
@given(st.dictionaries(st.sampled_from(["seed", "batch_size", "frames", "size", "arch", "lr_decay", "eval_every",
                                        "budget"]), st.none(), max_size=4).flatmap(
    lambda keys: st.fixed_dictionaries({k: valid_settings[k] for k in keys})))
def test_valid_set_flags_apply(values):
    items = [f"{k}={v}" for k, v in values.items()]
    config = apply(RunConfig(budget="5steps"), parse_set(items), where="--set")
    _validated(config)
    assert {k: getattr(config, k) for k in values} == values


@PROPERTIES
@given(valid_runs.map(lambda run: {k: v for k, v in run.items() if k not in ("budget", "seed", "methods")}),
       st.lists(valid_methods, min_size=1, max_size=3, unique_by=json.dumps),
       st.lists(valid_settings["budget"], min_size=1, max_size=2, unique=True),
       st.lists(st.integers(0, 3), min_size=1, max_size=2, unique=True))
def test_valid_grid_yaml_is_accepted(base, methods, budgets, seeds):
    mapping = {"study": "g", "base": base, "methods": methods, "budgets": budgets, "seeds": seeds}
    grid = load_grid(_write(yaml.safe_dump(mapping)))  # any error fails: the input is valid
    assert len(grid.cells) == len(methods) * len(budgets) * len(seeds)


@PROPERTIES
@given(valid_runs.map(lambda run: {k: v for k, v in run.items() if k not in ("budget", "methods")}),
       st.floats(0.05, 0.45), st.floats(0.55, 1.0), st.sampled_from(["tpe", "random", "qmc"]), st.integers(1, 50))
def test_valid_tune_yaml_is_accepted(base, low, high, sampler, trials):
    mapping = {"study": "t", "budget": "5steps", "base": base, "sampler": sampler, "trials": trials,
               "methods": [{"token_dropout": {"keep": {"float": [low, high]}, "mode": {"choice": ["random", "tube"]}}}]}
    loaded = load_tune(_write(yaml.safe_dump(mapping)))  # any error fails: the input is valid
    assert (loaded.trials, loaded.sampler) == (trials, sampler)
