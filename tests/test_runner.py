import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import stopped_run, tiny

from vtbench import methods
from vtbench.engine.config import MethodSpec
from vtbench.engine.runner import execute
from vtbench.methods import Method

STEP_COLUMNS = {"step", "progress", "used_s", "used_flops", "used_samples", "loss", "lr", "clips", "frames",
                "size", "tokens", "clips_per_s"}
EVAL_COLUMNS = {"progress", "used_s", "setting", "top1", "top5", "loss"}
SUMMARY_KEYS = {"status", "top1", "train_s", "eval_s", "steps", "trainable_params"}


def test_a_steps_budget_run_writes_every_file(tmp_path):
    run_dir = execute(tiny(budget="20steps"), tmp_path, progress_bar=False)
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "checkpoint.pt", "config.yaml", "env.json", "evals.parquet", "progress.json", "steps.parquet", "summary.json"]
    steps = pd.read_parquet(run_dir / "steps.parquet")
    evals = pd.read_parquet(run_dir / "evals.parquet")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert STEP_COLUMNS <= set(steps.columns) and EVAL_COLUMNS <= set(evals.columns)
    assert SUMMARY_KEYS <= set(summary)
    assert summary["status"] == "completed" and summary["steps"] == 20 == len(steps)
    assert steps["step"].tolist() == list(range(1, 21))
    assert steps["used_flops"].is_monotonic_increasing and steps["used_flops"].iloc[0] > 0
    default = evals[evals["setting"] == "default"]
    assert default["point"].tolist() == pytest.approx([0.1 * k for k in range(1, 11)])
    assert default["progress"].tolist() == pytest.approx([0.1 * k for k in range(1, 11)])
    assert set(evals[evals["point"] < 1]["setting"]) == {"default"}  # the sweep runs at the final point only
    assert steps["lr"].iloc[-1] < steps["lr"].max() and steps["progress"].iloc[-1] == 1.0
    assert summary["top1"] == default["top1"].iloc[-1]
    env = json.loads((run_dir / "env.json").read_text())
    assert {"python", "torch", "timm", "vtbench", "git_commit", "device_name", "cores"} <= set(env)
    assert run_dir.name == tiny(budget="20steps").resolve().run_id()


def test_time_budget_stops_at_the_first_step_past_it_and_excludes_evaluation(tmp_path):
    run_dir = execute(tiny(budget="3s", eval_clips=64), tmp_path, progress_bar=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    steps = pd.read_parquet(run_dir / "steps.parquet")
    assert summary["eval_s"] > 0
    assert 3.0 <= summary["train_s"] <= 3.0 + steps["step_s"].max() + 0.05
    # no step begins once the budget is spent: the last one began before 3 s (the clock may pass 3 s during it
    # or in the bookkeeping after it)
    assert steps["used_s"].iloc[-2] < 3.0
    assert steps["used_s"].iloc[-1] - steps["step_s"].iloc[-1] < 3.0


def test_samples_and_flops_budgets(tmp_path):
    run_dir = execute(tiny(budget="30samples"), tmp_path, progress_bar=False)
    steps = pd.read_parquet(run_dir / "steps.parquet")
    assert steps["used_samples"].tolist()[-2:] == [28, 32]
    flops_per_step = steps["used_flops"].iloc[0]
    run_dir = execute(tiny(budget=f"{flops_per_step * 5.5:.6e}flops"), tmp_path / "f", progress_bar=False)
    assert len(pd.read_parquet(run_dir / "steps.parquet")) == 6


def test_runs_are_deterministic(tmp_path):
    a = execute(tiny(), tmp_path / "a", progress_bar=False)
    b = execute(tiny(), tmp_path / "b", progress_bar=False)
    la = pd.read_parquet(a / "steps.parquet")["loss"]
    lb = pd.read_parquet(b / "steps.parquet")["loss"]
    assert la.tolist() == lb.tolist()
    c = execute(tiny(seed=1), tmp_path / "c", progress_bar=False)
    assert pd.read_parquet(c / "steps.parquet")["loss"].tolist() != la.tolist()


def test_an_ended_run_is_not_run_again(tmp_path):
    run_dir = execute(tiny(), tmp_path, progress_bar=False)
    stamp = (run_dir / "steps.parquet").stat().st_mtime_ns
    assert execute(tiny(), tmp_path, progress_bar=False) == run_dir
    assert (run_dir / "steps.parquet").stat().st_mtime_ns == stamp


class CrashOnce(Method):
    """Raises once at a chosen step, as a crash in the middle of training would."""

    name = "crash_once"
    crashed = False

    def __init__(self, at: int = 13):
        self.at = at

    def lr_scale(self, progress, shape):
        self.calls = getattr(self, "calls", 0) + 1
        return 1.0

    def batch_shape(self, progress, step, base):
        if step == self.at and not CrashOnce.crashed:
            CrashOnce.crashed = True
            raise RuntimeError("simulated crash")
        return base


def test_a_crashed_run_resumes_and_ends_like_an_uninterrupted_one(tmp_path, monkeypatch):
    monkeypatch.setitem(methods.REGISTRY, "crash_once", CrashOnce)
    config = tiny(budget="30steps", methods=[MethodSpec("crash_once")])
    CrashOnce.crashed = True  # the reference run does not crash
    reference = execute(config, tmp_path / "ref", progress_bar=False)
    CrashOnce.crashed = False
    with pytest.raises(RuntimeError, match="simulated crash"):
        execute(config, tmp_path / "run", progress_bar=False)
    crashed_dir = tmp_path / "run" / reference.name
    assert json.loads((crashed_dir / "summary.json").read_text())["status"] == "failed"
    resumed = execute(config, tmp_path / "run", progress_bar=False)
    _assert_same_run(reference, resumed)


def test_a_run_asked_to_stop_saves_its_place_and_resumes_like_an_uninterrupted_one(tmp_path, monkeypatch):
    config, run_dir = stopped_run(tmp_path / "run", monkeypatch, "30steps", 12, match="stopped at step 12 as asked")
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["clock"]["used"]["steps"] == 12  # where it ended
    assert not (run_dir / "summary.json").exists()  # not ended: neither completed nor failed
    reference = execute(config, tmp_path / "ref", progress_bar=False)
    resumed = execute(config, tmp_path / "run", progress_bar=False)
    _assert_same_run(reference, resumed)
    assert json.loads((resumed / "summary.json").read_text())["resumed_at"] == [12]


def _assert_same_run(reference, resumed):
    ref_steps, res_steps = (pd.read_parquet(d / "steps.parquet") for d in (reference, resumed))
    assert res_steps["step"].tolist() == list(range(1, len(ref_steps) + 1))
    assert res_steps["loss"].tolist() == pytest.approx(ref_steps["loss"].tolist(), rel=1e-5)
    ref_evals, res_evals = (pd.read_parquet(d / "evals.parquet") for d in (reference, resumed))
    assert res_evals["top1"].tolist() == ref_evals["top1"].tolist()
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == len(ref_steps)


def test_a_killed_run_resumes_from_its_checkpoint(tmp_path):
    args = ["run", "--budget", "60steps", "--no-progress",
            "--set", "model_args={dim: 32, depth: 1, heads: 2, tubelet: [2, 4, 4]}",
            "--set", "frames=4", "--set", "size=16", "--set", "batch_size=4", "--set", "eval_clips=16",
            "--set", "log_every=1"]
    from vtbench.cli.main import main

    assert main([*args, "--out", str(tmp_path / "ref")]) == 0  # the reference, in this process
    (reference,) = (tmp_path / "ref").glob("*/summary.json")
    reference = str(reference.parent)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "vtbench.cli", *args, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    checkpoint = out / os.path.basename(reference) / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = torch.load(checkpoint, weights_only=False)
    assert partial["clock"]["used"]["steps"] < 60, "the run must have been killed before it ended"
    assert not (checkpoint.parent / "summary.json").exists()
    assert main([*args, "--out", str(out)]) == 0  # the same command again: it resumes
    _assert_same_run(Path(reference), checkpoint.parent)


class Explode(Method):
    name = "explode"

    def training_loss(self, model, batch, progress, select, label_smoothing):
        video, labels = batch
        loss = torch.nn.functional.cross_entropy(model(video), labels)
        return loss * float("nan") if progress >= 0.5 else loss


def test_a_non_finite_loss_ends_the_run_as_diverged(tmp_path, monkeypatch):
    monkeypatch.setitem(methods.REGISTRY, "explode", Explode)
    run_dir = execute(tiny(budget="10steps", methods=[MethodSpec("explode")]), tmp_path, progress_bar=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged" and "step 6" in summary["error"]
    assert summary["top1"] is None


def test_a_steps_row_summarises_log_every_steps(tmp_path):
    every = pd.read_parquet(execute(tiny(budget="20steps", eval_every=0.5), tmp_path / "a",
                                    progress_bar=False) / "steps.parquet")
    rows = pd.read_parquet(execute(tiny(budget="20steps", eval_every=0.5, log_every=4), tmp_path / "b",
                                   progress_bar=False) / "steps.parquet")
    # intervals of four steps, cut where an evaluation falls (after step 10) so no row spans one
    assert rows["step"].tolist() == [4, 8, 10, 14, 18, 20] and rows["steps"].tolist() == [4, 4, 2, 4, 4, 2]
    for row in rows.itertuples():
        interval = every[(every["step"] > row.step - row.steps) & (every["step"] <= row.step)]
        assert row.loss == pytest.approx(interval["loss"].mean(), rel=1e-5)
        assert row.used_samples == interval["used_samples"].iloc[-1]
        assert row.clips_per_s == pytest.approx(row.clips / row.step_s)  # the interval's clips over its time


def test_log_every_beyond_the_loss_reads_is_honoured(tmp_path):
    config = tiny(budget="120steps", eval_every=1.0, log_every=100, eval_sweep=[])
    rows = pd.read_parquet(execute(config, tmp_path, progress_bar=False) / "steps.parquet")
    assert rows["step"].tolist() == [100, 120] and rows["steps"].tolist() == [100, 20]


def test_the_final_point_scores_eval_clips_and_the_others_the_subset(tmp_path):
    config = tiny(budget="4steps", eval_every=0.5, eval_clips=48, eval_subset=16, eval_sweep=["keep=0.5,random"])
    evals = pd.read_parquet(execute(config, tmp_path, progress_bar=False) / "evals.parquet")
    assert evals[evals["setting"] == "default"]["clips"].tolist() == [16, 48]
    assert evals[evals["setting"] == "keep=0.5,random"]["clips"].tolist() == [16]


def test_evaluation_clips_are_one_set_shared_by_runs_of_the_same_data():
    from vtbench.datasets.synthetic import SyntheticVideos
    from vtbench.engine.evaluate import EvalData

    data = SyntheticVideos("val", length=40)
    first = EvalData(data, 40, 16, share="same data")
    subset = [labels for _, labels in first.batches(4, 16, 2, clips=20)]
    assert [len(labels) for labels in subset] == [16, 4]
    whole = torch.cat([video for video, _ in first.batches(4, 16, 2)])  # made once, kept in a file
    again = EvalData(data, 40, 8, share="same data")  # another run: the same file, its own batch size
    batches = list(again.batches(4, 16, 2, clips=20))
    assert [len(labels) for _, labels in batches] == [8, 8, 4]
    assert torch.equal(torch.cat([video for video, _ in batches]), whole[:20])
    assert torch.equal(whole, data.batch(range(40), 4, 16, 2, training=False)[0])
