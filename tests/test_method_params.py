"""Typed method parameters (vtbench.methods.params): every method declares its parameters once; a run, a grid and a
tune are checked against the declaration before a run id exists or anything is written; `vtbench methods` prints it."""

import inspect

import pytest

from vtbench import methods
from vtbench.cli import main
from vtbench.engine.config import MethodSpec, RunConfig, parse_method
from vtbench.errors import ConfigError
from vtbench.methods import REGISTRY, Method, Param, build_method, register
from vtbench.studies.grid import load_grid
from vtbench.studies.tune import load_tune

TINY = ["--set", "model_args={dim: 32, depth: 1, heads: 2, tubelet: [2, 4, 4]}", "--set", "frames=4",
        "--set", "size=16", "--set", "batch_size=4", "--set", "eval_clips=16", "--no-progress"]
BASE = ("base: {model: vit_tiny, frames: 4, size: 16, batch_size: 4, eval_clips: 16, eval_batch_size: 16,\n"
        "       model_args: {dim: 32, depth: 1, heads: 2, tubelet: [2, 4, 4]}}\n")


def _write(tmp_path, body, name):
    path = tmp_path / name
    path.write_text(body)
    return path


def _shown(value) -> str:
    """A default as `vtbench methods` writes it (as a user would in YAML)."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


# ---- vtbench run: refused before a run id, a folder or a claim -----------------------------------------------


@pytest.mark.parametrize("method, message", [
    ("token_dropout:keep=7", "method 'token_dropout': keep=7 is outside the allowed range (0, 1]"),
    ("token_dropout:ratio=0.5", "method 'token_dropout' has no parameter ratio; its parameters: keep, mode, layers"),
    ("token_dropout:keep=abc", "method 'token_dropout': keep='abc' is not a number; the allowed range is (0, 1]"),
    ("multigrid:cycles=1.5", "method 'multigrid': cycles=1.5 must be a whole number >= 1"),
    ("rlt:length_embedding=2", "method 'rlt': length_embedding=2 must be true or false"),
    ("token_dropout:layers=middle,mode=tube", "mode='tube' applies to dropping before the first block"),
])
def test_a_bad_parameter_exits_2_in_one_line_and_writes_nothing(method, message, capsys, tmp_path):
    out = tmp_path / "out"
    assert main(["run", *TINY, "--budget", "2steps", "--method", method, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vtbench: error: ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists() and not any(tmp_path.iterdir()), "no run folder, no claim"


def test_resolve_checks_the_methods_before_a_run_id_exists(monkeypatch):
    def no_id(self):
        raise AssertionError("the run id was computed before the methods were checked")

    monkeypatch.setattr(RunConfig, "run_id", no_id)
    with pytest.raises(ConfigError, match=r"keep=7 is outside the allowed range \(0, 1\]"):
        RunConfig(methods=[parse_method("token_dropout:keep=7")]).resolve()


def test_checking_leaves_the_values_as_written_so_run_ids_stay_the_same():
    resolved = RunConfig(methods=[MethodSpec("token_dropout", {"keep": 1})]).resolve()
    assert resolved.methods[0].params == {"keep": 1} and type(resolved.methods[0].params["keep"]) is int
    assert resolved.run_id() == RunConfig(methods=[MethodSpec("token_dropout", {"keep": 1})]).resolve().run_id()


# ---- grids and tune: refused at load ---------------------------------------------------------------------------


def test_a_grid_with_a_bad_parameter_is_refused_at_load(capsys, tmp_path):
    path = _write(tmp_path, f"study: s\n{BASE}methods: [[pss], [{{token_dropout: {{keep: 7}}}}]]\n", "grid.yaml")
    with pytest.raises(ConfigError, match=r"method 'token_dropout': keep=7 is outside the allowed range \(0, 1\]"):
        load_grid(path)
    out = tmp_path / "out"
    assert main(["grid", str(path), "--out", str(out)]) == 2
    assert "keep=7 is outside the allowed range" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("space, message", [
    ("{token_dropout: {keep: {float: [0.5, 2.0]}}}",
     r"keep=2.0 is outside the allowed range \(0, 1\] \(searched parameter token_dropout.keep = 2.0\)"),
    ("{token_dropout: {keep: {float: [0.0, 0.5]}}}", r"keep=0.0 is outside the allowed range \(0, 1\]"),
    ("{multigrid: {cycles: {int: [0, 3]}}}", "cycles=0 must be a whole number >= 1"),
    ("{multigrid: {cycles: {float: [1, 3]}}}", "cycles=1.0 must be a whole number >= 1"),
    ("{token_dropout: {mode: {choice: [random, patch]}}}", "mode='patch' is not allowed; choose one of random"),
    ("{pss: {start: {float: [-2, 0.5]}}}", r"start=-2.0 is outside the allowed range \[-1, 1\] \(a drop ratio\)"),
])
def test_a_tune_range_partly_outside_the_declared_one_is_refused_at_load(space, message, tmp_path):
    path = _write(tmp_path, f"study: s\n{BASE}methods: [{space}]\n", "tune.yaml")
    with pytest.raises(ConfigError, match=message):
        load_tune(path)


def test_a_tune_range_inside_the_declared_one_loads(tmp_path):
    path = _write(tmp_path, f"study: s\n{BASE}methods: [{{token_dropout: {{keep: {{float: [0.2, 1.0]}}}}}}, "
                            "{multigrid: {cycles: {int: [1, 4]}}}]\n", "tune.yaml")
    assert [p.name for p in load_tune(path).space.params] == ["token_dropout.keep", "multigrid.cycles"]


# ---- the declaration and the constructor agree ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_declared_names_and_defaults_are_the_constructors(name):
    cls = REGISTRY[name]
    assert cls.params is not None, f"{name} declares no parameters"
    signature = {k: p for k, p in inspect.signature(cls.__init__).parameters.items()
                 if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    assert list(cls.params) == list(signature)
    for key, param in cls.params.items():
        default = signature[key].default
        assert default == param.default and type(default) is type(param.default), (key, default, param.default)
        assert param.validate(key, param.default) == param.default
    build_method(MethodSpec(name))  # every default builds


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_the_declared_bounds_are_what_the_method_takes(name):
    """At each closed bound the method builds; just past every bound (and at an open one) it is refused."""
    for key, param in REGISTRY[name].params.items():
        if param.kind not in (int, float):
            continue
        values = {"low": param.low, "high": param.high}
        for side, bound in values.items():
            if bound is None:
                continue
            step = 1 if param.kind is int else 1e-6
            outside = bound - step if side == "low" else bound + step
            bound = int(bound) if param.kind is int else float(bound)
            if (param.low_open if side == "low" else param.high_open):
                with pytest.raises(ConfigError, match=f"{key}="):
                    build_method(MethodSpec(name, {key: bound}))
            else:
                build_method(MethodSpec(name, {key: bound}))
            with pytest.raises(ConfigError, match=f"method '{name}': {key}="):
                build_method(MethodSpec(name, {key: outside}))


def test_register_refuses_a_declaration_that_disagrees_with_the_constructor():
    class Wrong(Method):
        name = "wrong_default"
        params = {"keep": Param(float, 0.5, low=0, high=1)}

        def __init__(self, keep: float = 0.25):
            self.keep = keep

    class Missing(Method):
        name = "missing_param"
        params = {"keep": Param(float, 0.5)}

        def __init__(self, keep: float = 0.5, mode: str = "random"):
            self.keep = keep

    with pytest.raises(TypeError, match="keep defaults to 0.25 in __init__ but to 0.5 in params"):
        register(Wrong)
    with pytest.raises(TypeError, match="declares keep; its __init__ takes keep, mode"):
        register(Missing)
    assert "wrong_default" not in REGISTRY and "missing_param" not in REGISTRY


def test_a_method_without_a_declaration_has_its_names_checked_and_its_constructor_checks_values(monkeypatch):
    class Undeclared(Method):
        name = "undeclared"

        def __init__(self, at: int = 3):
            if at < 0:
                raise ValueError(f"at={at} must be >= 0")
            self.at = at

    monkeypatch.setitem(methods.REGISTRY, "undeclared", Undeclared)
    assert RunConfig(methods=[MethodSpec("undeclared", {"at": 5})]).resolve().methods[0].params == {"at": 5}
    with pytest.raises(ConfigError, match="method 'undeclared' has no parameter when; its parameters: at"):
        RunConfig(methods=[MethodSpec("undeclared", {"when": 5})]).resolve()
    with pytest.raises(ConfigError, match="method 'undeclared': at=-1 must be >= 0"):
        build_method(MethodSpec("undeclared", {"at": -1}))


def test_the_constructor_receives_checked_values():
    method = build_method(MethodSpec("pss", {"start": 1, "cooldown": 0}))
    assert type(method.start) is float and type(method.cooldown) is float


# ---- vtbench methods --------------------------------------------------------------------------------------------


def _sections(text: str) -> dict[str, list[str]]:
    """`name: paper` headed groups of lines, keyed by name."""
    sections, current = {}, None
    for line in text.splitlines():
        if line and not line.startswith(" ") and ": " in line:
            current = line.split(": ", 1)[0]
            sections[current] = []
        elif current is not None and line.strip():
            sections[current].append(line)
    return sections


def test_vtbench_methods_lists_every_registered_method_with_each_parameters_default(capsys):
    assert main(["methods"]) == 0
    sections = _sections(capsys.readouterr().out)
    assert set(REGISTRY) <= set(sections), set(REGISTRY) - set(sections)
    assert {"control", "placebo"} <= set(sections)
    for name, cls in REGISTRY.items():
        rows = {line.split()[0]: line.split() for line in sections[name] if line.startswith("  ")}
        for key, param in cls.params.items():
            assert key in rows, (name, key)
            assert _shown(param.default) in rows[key], (name, key, rows[key])
        if not cls.params:
            assert "(no parameters)" in " ".join(sections[name])


def test_vtbench_methods_shows_each_paper(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name, cls in REGISTRY.items():
        if cls.claim is not None:
            assert f"{name}: {cls.claim.paper}" in out
    assert "control: Positive control" in out and "placebo: Placebo" in out


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_vtbench_methods_name_prints_every_parameter_and_the_first_paragraph(name, capsys):
    assert main(["methods", name]) == 0
    out = capsys.readouterr().out
    cls = REGISTRY[name]
    doc = (cls.__doc__ or inspect.getmodule(cls).__doc__).strip().split("\n\n")[0]
    assert doc.splitlines()[0] in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line[2:3].strip()}
    for key, param in cls.params.items():
        assert key in lines and _shown(param.default) in lines[key].split(), (key, lines.get(key))
        assert param.allowed() in lines[key]


def test_vtbench_methods_of_an_unknown_name_is_one_line_and_exit_2(capsys):
    assert main(["methods", "turbo"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'turbo'; known: baseline" in err and err.count("\n") == 1
