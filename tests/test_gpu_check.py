"""benchmarks/gpu_check.py on a machine without CUDA, started as on the lent GPU machine: from the checkout with
PYTHONPATH (the editable install hidden), without the packages that machine lacks (PyAV, Optuna, SQLAlchemy,
submitit, W&B, MLflow) and with CUDA hidden.
It must finish well under a minute, run every CPU-runnable section at its small scale, and say of every GPU-only
check that it was skipped for want of a CUDA device."""

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
NO_CUDA = "no CUDA device"

# Run before the script by Python's site module: the device machine's conditions
AS_ON_THE_DEVICE = '''
import sys

ABSENT = ("av", "optuna", "sqlalchemy", "submitit", "wandb", "mlflow", "psycopg")


class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r} (absent on the GPU machine)", name=name)
        return None


sys.meta_path[:] = [Absent()] + [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
'''


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu_check")
    site = folder / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(AS_ON_THE_DEVICE)
    # one thread: the small scale checks code paths, and stays off the cores of whatever else runs here
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}.", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("VTBENCH_THREADS", None)
    out = folder / "out"
    began = time.monotonic()
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--scale", "small"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - began
    assert done.returncode == 0, done.stderr[-3000:]
    return out, seconds, done.stdout


@pytest.fixture(scope="module")
def report(small_run):
    out, _, _ = small_run
    return json.loads((out / "gpu_check.json").read_text())


def test_it_finishes_well_under_a_minute_and_writes_its_two_files_alone(small_run):
    out, seconds, stdout = small_run
    assert seconds < 50, stdout
    # the device machine returns at most 8 files from its output folder: the run's folder goes elsewhere
    assert sorted(path.name for path in out.iterdir()) == ["gpu_check.json", "gpu_check.md"]
    markdown = (out / "gpu_check.md").read_text()
    for section in ("run", "monitor_overhead", "token_methods", "rlt_packing", "compiled", "peak_memory",
                    "batch_transfer"):
        assert f"(`{section}`)" in markdown
    assert f"Skipped: {NO_CUDA}" in markdown


def test_it_starts_from_the_checkout_without_the_packages_the_device_lacks(report):
    assert report["machine"]["vtbench_import"].startswith("pyproject package-dir")
    assert report["imported_absent_on_device"] == []
    assert NO_CUDA in report["machine"]["gpu"]
    assert report["machine"]["torch"] == torch.__version__ and report["machine"]["date"]


def test_gpu_only_checks_are_skipped_naming_the_missing_cuda_device(report):
    sections = report["sections"]
    for name in ("monitor_overhead", "batch_transfer"):
        assert sections[name]["status"] == "skipped" and NO_CUDA in sections[name]["skipped"], sections[name]
    gpu_only = {"run": {"mem_allocated", "mem_reserved", "mem_device", "power_w", "energy_j"},
                "rlt_packing": {"packed_flash_kernel"}, "compiled": {"inductor"}, "peak_memory": {"measured_peak"}}
    for name, figures in gpu_only.items():
        assert sections[name]["status"] == "ok", sections[name]
        skipped = sections[name]["figures"]["skipped_figures"]
        assert set(skipped) == figures
        assert all(reason.startswith(NO_CUDA) for reason in skipped.values()), skipped
    assert sections["token_methods"]["status"] == "ok", sections["token_methods"]


def test_the_cpu_runnable_figures_are_numbers(report):
    sections = report["sections"]
    run = sections["run"]["figures"]
    assert run["status"] == "completed" and run["steps"] == 8
    assert run["run_summary"]["status"] == "completed" and len(run["run_steps"]) == 2  # a row per 5 steps
    for key in ("train_s", "step_s", "median_row_compute_s", "data_wait_share", "mfu", "mfu_without_data_wait"):
        assert is_number(run[key]) and run[key] > 0, key

    assert sections["token_methods"]["figures"]["failed_settings"] == {}
    tokens = sections["token_methods"]["figures"]["settings"]
    assert list(tokens) == ["baseline", "token_dropout:keep=0.5", "token_dropout:keep=0.25", "tome",
                            "token_dropout:keep=0.5,layers=middle"]
    for setting in tokens.values():
        for key in ("ms_per_step", "speedup", "flop_ratio", "speedup_over_flop_ratio", "tokens_per_clip"):
            assert is_number(setting[key]) and setting[key] > 0, (setting, key)
    assert tokens["baseline"]["flop_ratio"] == 1
    assert 1 < tokens["token_dropout:keep=0.5"]["flop_ratio"] < tokens["token_dropout:keep=0.25"]["flop_ratio"]
    assert tokens["token_dropout:keep=0.5"]["tokens_per_clip"] == tokens["baseline"]["tokens_per_clip"] / 2

    rlt = sections["rlt_packing"]["figures"]
    assert is_number(rlt["fp32_loss_difference"]) and rlt["fp32_loss_difference"] <= 1e-4
    assert 0 < rlt["kept"] < 1  # half the clips held still: RLT drops their repeated tubelets
    assert is_number(rlt["padded"]["ms_per_step"]) and is_number(rlt["packed"]["ms_per_step"])
    assert is_number(rlt["packed_over_padded"])

    compiled = sections["compiled"]["figures"]
    for key in ("eager_ms", "compiled_ms", "compile_s", "compiled_over_eager"):
        assert is_number(compiled[key]), key
    dropout = compiled["token_dropout_keep_0.5"]
    assert dropout["compiled_frames"] >= 1 and dropout["recompiles"] == 0  # one token count: compiled once
    assert is_number(dropout["ms_per_step"]) and is_number(dropout["compile_s"])

    memory = sections["peak_memory"]["figures"]["settings"]
    ratios = [memory[name]["estimate_ratio"] for name in ("baseline", "token_dropout:keep=0.5",
                                                          "token_dropout:keep=0.25")]
    assert ratios[0] == 1 and 1 < ratios[1] < ratios[2]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_failing_section_is_recorded_with_its_error_line(gpu_check, monkeypatch, tmp_path):
    def broken(plan):
        raise ValueError("a broken section")

    monkeypatch.setitem(gpu_check.SECTIONS, "run", ("broken", broken))
    plan = gpu_check.Plan(gpu_check.SCALES["small"], torch.device("cpu"), tmp_path)
    result = gpu_check.run_section("run", plan, time.monotonic() + 60)
    assert result["status"] == "failed"
    assert result["error"] == "ValueError: a broken section"
    assert result["where"].startswith(f"{__file__}:") and result["where"].endswith("in broken")


def test_a_section_the_time_left_cannot_hold_is_skipped_and_one_that_overruns_is_cut_short(gpu_check, monkeypatch,
                                                                                          tmp_path):
    plan = gpu_check.Plan(gpu_check.SCALES["small"], torch.device("cpu"), tmp_path)
    skipped = gpu_check.run_section("compiled", plan, time.monotonic() + 5)
    assert skipped["status"] == "skipped" and skipped["skipped"].startswith("time:")

    def hangs(plan):
        time.sleep(30)

    monkeypatch.setitem(gpu_check.SECTIONS, "monitor_overhead", ("hangs", hangs))
    began = time.monotonic()
    cut = gpu_check.run_section("monitor_overhead", plan, time.monotonic() + 60)  # needs 1 s: cut after 2
    assert cut["status"] == "failed" and cut["error"].startswith("cut short after 2 s")
    assert time.monotonic() - began < 5
