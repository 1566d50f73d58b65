import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from vtbench.cli import main
from vtbench.cli.main import COMMANDS, build_parser

TINY = ["--set", "model_args={dim: 32, depth: 1, heads: 2, tubelet: [2, 4, 4]}", "--set", "frames=4",
        "--set", "size=16",
        "--set", "batch_size=4", "--set", "eval_clips=16", "--no-progress"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--method", "turbo"], "unknown method 'turbo'; known: baseline"),
        (["--model", "vit_giant"], "unknown model preset 'vit_giant'; known: vit_tiny, vit_small, vit_base, vit_large"),
        (["--budget", "ten minutes"], "budget 'ten minutes' is not understood; allowed forms: '20s'"),
        (["--set", "learning_rate=0.1"], "--set: unknown key 'learning_rate'; allowed: dataset"),
        (["--set", "batch_size=big"], "--set: batch_size expects int, got 'big'"),
        (["--dataset", "kinetics"], "unknown dataset 'kinetics'; known: synthetic"),
        (["--method", "baseline:keep=0.5"], "method 'baseline' has no parameters"),
        (["--config", "missing.yaml"], "config file missing.yaml does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path):
    assert main(["run", *TINY, *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vtbench: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not any(tmp_path.iterdir()), "nothing may be written before the input is valid"


def test_yaml_error_names_file_and_line(capsys, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("budget: 5steps\nmethods: [a, b\n")
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{config}:3: invalid YAML" in err and err.count("\n") == 1


def test_flags_override_the_config_file(tmp_path):
    from vtbench.cli.main import _run_parser
    from vtbench.cli.run import build_config

    config = tmp_path / "run.yaml"
    config.write_text("budget: 5steps\nseed: 3\nlr: 0.01\n")
    parser = argparse.ArgumentParser()
    _run_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["run", "--config", str(config), "--seed", "4", "--set", "lr=2e-3"])
    resolved = build_config(args)
    assert (resolved.budget, resolved.seed, resolved.lr) == ("5steps", 4, 2e-3)


def test_the_console_command_prints_the_run_directory_last(tmp_path):
    result = subprocess.run(
        [Path(sys.executable).parent / "vtbench", "run", "--budget", "4steps", "--out", str(tmp_path), *TINY],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert run_dir.parent == tmp_path and (run_dir / "summary.json").exists()
    assert "completed: top-1" in result.stderr


def test_one_budget_written_two_ways_is_one_run(capsys, tmp_path):
    assert main(["run", *TINY, "--budget", "1.5s", "--out", str(tmp_path)]) == 0
    first = capsys.readouterr().out.strip().splitlines()[-1]
    stamp = (Path(first) / "summary.json").stat().st_mtime_ns
    assert main(["run", *TINY, "--budget", "0.025min", "--out", str(tmp_path)]) == 0  # returns the ended run at once
    assert capsys.readouterr().out.strip().splitlines()[-1] == first
    assert (Path(first) / "summary.json").stat().st_mtime_ns == stamp
    assert "budget: 1.5s" in (Path(first) / "config.yaml").read_text()


def test_the_demo_finds_its_grid_in_the_checkout():
    from vtbench.cli.study import DEMO_CONFIG

    assert DEMO_CONFIG == Path(__file__).resolve().parents[1] / "configs" / "demo.yaml" and DEMO_CONFIG.is_file()


def test_the_demo_holds_a_ladder_and_both_controls_and_full_adds_every_method_to_its_cells():
    from vtbench.cli.study import DEMO_CONFIG
    from vtbench.methods import REGISTRY
    from vtbench.studies.grid import load_grid

    demo = load_grid(DEMO_CONFIG)
    baseline_budgets = {c.budget for c in demo.cells if not c.methods}
    assert len(baseline_budgets) >= 3 and all(len({c.seed for c in demo.cells if c.budget == b and not c.methods}) >= 3
                                              for b in baseline_budgets)
    assert {"control", "placebo"} <= {m.name for c in demo.cells for m in c.methods}
    full = load_grid(DEMO_CONFIG.parent / "full.yaml")
    assert full.study == demo.study  # run after the demo, it trains only what the demo has not
    assert {c.run_id() for c in demo.cells} < {c.run_id() for c in full.cells}
    assert {m.name for c in full.cells for m in c.methods} == set(REGISTRY) - {"baseline"}  # every method
    assert {str(m) for c in full.cells for m in c.methods} >= {"token_dropout:keep=0.5,layers=middle", "flux"}


def test_the_demo_prints_the_reports_opening_sections():
    from vtbench.cli.study import _headline

    report = ("# Study demo\n\n30 runs.\n\n## Speed-up at equal top-1\n\nHow it is read.\n\n| method | speed-up |\n"
              "| --- | --- |\n| pss | 1.2x [1.0, 1.4] |\n\n## Resolving power\n\n- 1.42x\n\n"
              "## Top-1 at equal budget\n\n| method | top-1 |\n")
    assert _headline(report) == ("## Speed-up at equal top-1\n\n| method | speed-up |\n| --- | --- |\n"
                                 "| pss | 1.2x [1.0, 1.4] |\n\n## Resolving power\n\n- 1.42x")


def test_every_subcommand_runs_a_function_of_its_module():
    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(subcommands) == set(COMMANDS)
    for module, function in COMMANDS.values():
        assert callable(getattr(importlib.import_module(module), function)), (module, function)


def test_help_loads_no_subcommand():
    # `vtbench --help` answers at once: the subcommands' modules (and torch) load only when one runs
    code = ("import sys\nfrom vtbench.cli.main import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'vtbench')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(["vtbench", "vtbench.cli", "vtbench.cli.main",
                                                          "vtbench.errors"])
