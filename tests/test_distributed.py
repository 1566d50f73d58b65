"""One run carried by several processes (torch.distributed, gloo on the CPU): the shares of a batch, the sharded
evaluation, the launcher's account of a failed rank, and real two-process runs against one-process runs."""

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
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

from vtbench.datasets import build_dataset
from vtbench.engine import results
from vtbench.engine.config import MethodSpec, RunConfig
from vtbench.engine.cpu import threads_for_run
from vtbench.engine.distributed import World
from vtbench.engine.evaluate import EvalData, evaluate
from vtbench.engine.launch import _root_cause, launch, record_failure
from vtbench.engine.runner import execute
from vtbench.errors import ConfigError

TINY = dict(model_args={"dim": 32, "depth": 1, "heads": 2, "tubelet": [2, 4, 4]}, frames=4, size=16, log_every=1,
            eval_sweep=["keep=0.5,random", "keep=0.5,magnitude"], eval_every=0.5)


@pytest.mark.parametrize("count", [1, 2, 7, 15, 16, 64])
@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_the_ranks_shares_cover_a_batch_once_and_differ_by_at_most_one_clip(count, size):
    parts = [World(rank=r, size=size).part(count) for r in range(size)]
    taken = [i for p in parts for i in range(count)[p]]
    assert taken == list(range(count))
    lengths = [len(range(count)[p]) for p in parts]
    assert max(lengths) - min(lengths) <= 1


@pytest.mark.parametrize("clips", [40, 24, 9])
def test_evaluation_parts_are_the_batches_of_one_process(clips):
    """Rank r scores batches r, r + ranks, ...: the same batches (same clips, same order within) as one process,
    for the whole set and for its first `clips`, so that a per-batch random selection is the same."""
    data = build_dataset("synthetic", "val", 0, length=40)
    one = EvalData(data, 40, 16)
    ranks = [EvalData(data, 40, 16, part=(r, 3)) for r in range(3)]
    for asked in (None, clips, None):  # the second whole pass reads the kept files
        expected = [labels.tolist() for _, labels in one.batches(4, 16, 2, asked)]
        got = [[labels.tolist() for _, labels in part.batches(4, 16, 2, asked)] for part in ranks]
        interleaved = [b for group in zip(*[g + [None] * (len(expected) - len(g)) for g in got], strict=True)
                       for b in group if b is not None]
        assert interleaved == expected


def test_evaluation_adds_up_the_ranks_counts_before_dividing():
    model = torch.nn.Linear(3, 2)
    forward = model.forward
    model.forward = lambda x, select=None: forward(x)
    video, labels = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    one = evaluate(model, [(video, labels)], None, torch.device("cpu"), torch.no_grad)
    # another rank that scored 4 clips and got them all right
    other = torch.tensor([4.0, 4.0, 0.0, 4.0], dtype=torch.float64)
    both = evaluate(model, [(video, labels)], None, torch.device("cpu"), torch.no_grad, reduce=lambda t: t + other)
    assert both["clips"] == 8
    assert both["top1"] == pytest.approx((one["top1"] * 4 / 100 + 4) / 8 * 100)
    assert both["loss"] == pytest.approx(one["loss"] / 2)


def _failure(tmp_path, rank: int, exitcode: int, message: str | None, timestamp: int = 100) -> ProcessFailure:
    error_file = tmp_path / f"error-{rank}.json"
    if message is not None:
        error_file.write_text(json.dumps({"message": {"message": message, "extraInfo": {
            "py_callstack": f"Traceback of rank {rank}\n{message}", "timestamp": str(timestamp)}}}))
    return ProcessFailure(local_rank=rank, pid=1000 + rank, exitcode=exitcode, error_file=str(error_file))


WAITING = "RuntimeError: [../gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:61569"


def test_the_root_cause_is_a_killed_rank_else_the_first_rank_that_failed_on_its_own(tmp_path):
    own = _failure(tmp_path, 1, 1, "TypeError: unsupported operand")
    launcher_saw = {0: _failure(tmp_path, 0, 1, WAITING), 1: own}
    accounts = [{"rank": 0, "status": "failed", "error": WAITING, "time": 10.0},
                {"rank": 1, "status": "oom", "error": "CUDA out of memory", "time": 10.5, "oom_shape": {"clips": 8}}]
    assert _root_cause(ChildFailedError("vtbench", launcher_saw), accounts)["rank"] == 1
    assert _root_cause(ChildFailedError("vtbench", launcher_saw), [])["rank"] == 1  # from the launcher's view
    killed = ProcessFailure(local_rank=2, pid=1002, exitcode=-signal.SIGKILL, error_file=str(tmp_path / "none"))
    cause = _root_cause(ChildFailedError("vtbench", {**launcher_saw, 2: killed}), accounts)
    assert (cause["rank"], cause["error"]) == (2, "ended by signal SIGKILL")


def test_a_failed_rank_is_recorded_in_the_summary_rank_0_wrote_or_alone(tmp_path):
    run_dir = tmp_path / "abc"
    began = time.time()
    killed = {"rank": 1, "status": "failed", "error": "ended by signal SIGKILL"}
    assert record_failure(run_dir, "rank 1 of 2: ended by signal SIGKILL", began, 2, killed) == "failed"
    alone = results.read_json(run_dir / "summary.json")
    assert alone == {"run_id": "abc", "world_size": 2, "status": "failed",
                     "error": "rank 1 of 2: ended by signal SIGKILL"}
    results.write_json(run_dir / "summary.json", {"status": "failed", "error": "rank 0 of 2: Connection closed",
                                                  "steps": 12, "traceback": "rank 0's wait"})
    oom = {"rank": 1, "status": "oom", "error": "out of memory", "traceback": "Traceback of rank 1",
           "oom_shape": {"clips": 8}, "oom_during": "training"}
    assert record_failure(run_dir, "rank 1 of 2: out of memory", began, 2, oom) == "oom"
    kept = results.read_json(run_dir / "summary.json")
    assert kept == {"status": "oom", "error": "rank 1 of 2: out of memory", "steps": 12,
                    "traceback": "Traceback of rank 1", "oom_shape": {"clips": 8}, "oom_during": "training"}
    results.write_json(run_dir / "summary.json", {"status": "completed", "steps": 20})
    assert record_failure(run_dir, "rank 1 of 2: on its way out", began, 2, killed) == "completed"
    assert results.read_json(run_dir / "summary.json")["status"] == "completed"


LEARNED = {"pos_embed": "separable"}


def test_nproc_is_validated_and_leaves_a_one_process_run_id_as_it_was():
    with pytest.raises(ConfigError, match="batch_size 2 cannot be shared by nproc 4"):
        RunConfig(batch_size=2, nproc=4).resolve()
    with pytest.raises(ConfigError, match="nproc must be a whole number from 1"):
        RunConfig(nproc=0).resolve()
    # Pinned literals, computed once from the code: they are the ids of results that already exist (their folders
    # are named by them), so a change to how ids are computed must leave them as they are. Never recompute them.
    # (made when the joint model's learned position table was the default, now stated: LEARNED)
    config = RunConfig(model_args=LEARNED).resolve()
    assert config.run_id() == "60e862819d5e"
    assert RunConfig(model_args=LEARNED, nproc=1, compile=False, compile_backend="inductor",
                     layer_decay=1.0).resolve().run_id() == "60e862819d5e"  # later settings at their old values
    assert RunConfig(model_args=LEARNED, nproc=2).resolve().run_id() == "05e51ae4a074"
    assert RunConfig(model_args=LEARNED, compile=True).resolve().run_id() == "233b10dceaba"
    assert RunConfig(model_args=LEARNED, layer_decay=0.75).resolve().run_id() == "684fa82a1a05"
    assert RunConfig(model_args=LEARNED, budget="5steps", seed=3,
                     methods=[MethodSpec("token_dropout", {"keep": 0.5})]).resolve().run_id() == "462268c74cb3"


def test_a_run_of_nproc_2_needs_two_processes(tmp_path):
    with pytest.raises(ConfigError, match="nproc is 2 but this process is one of 1"):
        execute(RunConfig(nproc=2, **TINY).resolve(), tmp_path)


def _tables(run_dir: Path):
    return (pd.read_parquet(run_dir / "steps.parquet"), pd.read_parquet(run_dir / "evals.parquet"),
            results.read_json(run_dir / "summary.json"))


@pytest.mark.slow
@pytest.mark.parametrize("methods, arch", [
    ([], "joint"), ([MethodSpec("frozen_spatial", {"stage1": 0.5})], "factorised"), ([MethodSpec("flux")], "joint"),
], ids=["baseline", "frozen_spatial", "flux"])
def test_two_processes_train_and_evaluate_as_one(tmp_path, methods, arch):
    """A global batch of 15 clips (shares of 7 and 8): the same losses step by step, the same evaluations, the same
    FLOPs and samples; device time is twice the wall time. frozen_spatial freezes parameters mid-run (DDP is made
    again) and leaves some unused in stage 1; Flux makes several passes per step."""
    values = dict(TINY, budget="16steps", batch_size=15, eval_clips=40, eval_subset=24, eval_batch_size=16,
                  methods=methods, arch=arch)
    one = execute(RunConfig(**values).resolve(), tmp_path / "one", progress_bar=False)
    two = launch(RunConfig(**values, nproc=2).resolve(), tmp_path / "two", progress_bar=False)
    (steps1, evals1, summary1), (steps2, evals2, summary2) = _tables(one), _tables(two)
    assert summary1["status"] == summary2["status"] == "completed"
    assert (summary1["world_size"], summary2["world_size"]) == (1, 2)
    assert steps2["loss"].tolist() == pytest.approx(steps1["loss"].tolist(), abs=2e-4)
    assert steps2["trainable_params"].tolist() == steps1["trainable_params"].tolist()
    if arch == "factorised":
        assert steps2["trainable_params"].iloc[-1] < steps2["trainable_params"].iloc[0]  # it froze under DDP
    assert evals2[["point", "setting", "clips"]].equals(evals1[["point", "setting", "clips"]])
    assert evals2["top1"].tolist() == evals1["top1"].tolist()
    assert evals2["loss"].tolist() == pytest.approx(evals1["loss"].tolist(), abs=2e-4)
    assert summary2["samples"] == summary1["samples"] == 16 * 15
    # the ranks' own counts added up: work that does not grow with the batch (Flux's) is done by each rank
    assert summary2["total_flops"] == pytest.approx(summary1["total_flops"], rel=1e-3)
    assert summary2["train_wall_s"] == pytest.approx(summary2["train_s"] / 2)
    assert summary2["threads"] == max(1, threads_for_run() // 2)  # the two ranks share this machine's cores


@pytest.mark.slow
def test_a_killed_rank_fails_the_run_naming_it_and_rerunning_resumes(tmp_path):
    argv = [Path(sys.executable).parent / "vtbench", "run", "--nproc", "2", "--budget", "80steps", "--no-progress",
            "--out", str(tmp_path), "--set", "model_args={dim: 32, depth: 1, heads: 2, tubelet: [2, 4, 4]}",
            "--set", "frames=4", "--set", "size=16", "--set", "batch_size=4", "--set", "eval_clips=16",
            "--set", "eval_every=0.25", "--set", "eval_sweep=[]"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("*/checkpoint.pt")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert list(tmp_path.glob("*/checkpoint.pt")), "the run wrote no checkpoint"
        rank1 = sorted(_workers(proc.pid))[1]  # the launcher starts the ranks in order
        os.kill(rank1, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert "rank 1 of 2: ended by signal SIGKILL" in err
    run_dir = next(tmp_path.glob("*/checkpoint.pt")).parent
    summary = results.read_json(run_dir / "summary.json")
    assert summary["status"] == "failed" and summary["error"] == "rank 1 of 2: ended by signal SIGKILL"
    from vtbench.cli.main import main

    assert main([str(a) for a in argv[1:]]) == 0  # the same command again, in this process: it resumes
    summary = results.read_json(run_dir / "summary.json")
    assert summary["status"] == "completed" and summary["steps"] == 80 and summary["world_size"] == 2
    assert len(summary["resumed_at"]) == 1 and 0 < summary["resumed_at"][0] < 80


def _workers(parent: int) -> list[int]:
    """The launcher's rank processes (multiprocessing's spawned children)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"spawn_main" in cmdline:
            pids.append(int(entry.name))
    assert len(pids) == 2, pids
    return pids


GRID_BASE = ("base: {model: vit_tiny, frames: 4, size: 16, batch_size: 4, eval_clips: 16, eval_every: 0.5,\n"
             "       eval_sweep: [], model_args: {dim: 32, depth: 1, heads: 2, tubelet: [2, 4, 4]}}\n")


@pytest.mark.slow
def test_a_grid_cell_of_two_processes_runs_and_is_found_done_again(tmp_path, capsys):
    from vtbench.cli.main import main

    path = tmp_path / "grid.yaml"
    path.write_text("study: ddp\nnproc_per_run: 2\n" + GRID_BASE + "methods: [[]]\nbudgets: [8steps]\n")
    argv = ["grid", str(path), "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 0
    (summary_path,) = (tmp_path / "out" / "ddp").glob("*/summary.json")
    summary = results.read_json(summary_path)
    assert summary["status"] == "completed" and summary["world_size"] == 2 and summary["steps"] == 8
    assert main(argv) == 0 and "1 completed" in capsys.readouterr().err  # nothing is run twice


def test_the_command_line_nproc_overrides_the_grids_and_slurm_refuses_mixed_cells(tmp_path, capsys):
    from vtbench.cli.main import main
    from vtbench.studies.grid import load_grid

    path = tmp_path / "grid.yaml"
    path.write_text("study: ddp\nnproc_per_run: 2\n" + GRID_BASE + "methods: [[], {methods: [], set: {nproc: 1, "
                    "lr: 0.001}}]\nbudgets: [8steps]\n")
    assert [c.nproc for c in load_grid(path).cells] == [2, 1]  # a cell's own setting over the grid's
    assert [c.nproc for c in load_grid(path, nproc=4).cells] == [4, 4]  # the command line's over both
    assert main(["grid", str(path), "--out", str(tmp_path / "out"), "--executor", "slurm"]) == 2
    assert "every cell runs on the same number of processes" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_local_workers_each_get_their_group_of_gpus(monkeypatch):
    from tqdm import tqdm

    from vtbench.errors import VtbenchError
    from vtbench.studies import executors

    envs = []

    class Started:
        returncode = 0

        def __init__(self, argv, env, stdout):
            envs.append(env)

        def poll(self):
            return 0

    monkeypatch.setattr(executors.torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(executors.subprocess, "Popen", Started)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,2,1,0")
    bar = tqdm(disable=True)
    assert executors.run_local(["grid"], 3, bar, lambda: 0, devices_per_worker=2) == [0, 0, 0]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["3,2", "1,0", "3,2"]
    with pytest.raises(VtbenchError, match="a cell runs on 8 GPUs, and 4 are visible here"):
        executors.run_local(["grid"], 1, bar, lambda: 0, devices_per_worker=8)


def test_a_tuning_study_takes_nproc_from_its_base_its_nproc_per_run_and_the_command_line(tmp_path):
    from vtbench.studies.tune import load_tune

    path = tmp_path / "tune.yaml"
    body = ("study: t\nbase: {nproc: 2, batch_size: 8}\nbudget: 10steps\n"
            "methods: [{token_dropout: {keep: {float: [0.2, 1.0]}}}]\n")
    path.write_text(body)
    assert load_tune(path).base.nproc == 2
    path.write_text(body + "nproc_per_run: 4\n")
    assert load_tune(path).base.nproc == 4 and load_tune(path, nproc=1).base.nproc == 1
    path.write_text(body + "nproc_per_run: 16\n")
    with pytest.raises(ConfigError, match="batch_size 8 cannot be shared by nproc 16"):
        load_tune(path)


def test_a_fixed_gpu_for_several_processes_is_refused(monkeypatch):
    from vtbench.engine.distributed import rank_device

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="device cuda:1 names one GPU"):
        rank_device(torch.device("cuda", 1))
    assert rank_device(torch.device("cpu")) == torch.device("cpu")


def test_ranks_another_launcher_started_end_with_the_rank_that_failed_first(tmp_path):
    from vtbench.engine.launch import settle_failure

    began = time.time()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    results.write_json(run_dir / "summary.json", {"status": "failed", "steps": 7, "world_size": 2,
                                                  "error": "rank 0 of 2: RuntimeError: Connection closed by peer"})
    results.write_json(run_dir / "failure-rank0.json", {"rank": 0, "status": "failed", "time": began + 2,
                                                        "error": "RuntimeError: Connection closed by peer"})
    results.write_json(run_dir / "failure-rank1.json", {"rank": 1, "status": "failed", "time": began + 1,
                                                        "error": "ValueError: bad clip", "traceback": "T"})
    assert settle_failure(run_dir, began, 2) == "rank 1 of 2: ValueError: bad clip"
    summary = results.read_json(run_dir / "summary.json")
    assert summary["error"] == "rank 1 of 2: ValueError: bad clip" and summary["steps"] == 7  # rank 0's figures kept
    assert summary["traceback"] == "T" and not list(run_dir.glob("failure-rank*"))  # accounts used once
    # a rank killed outright writes nothing: the waits of the others are all there is, and the error says so
    results.write_json(run_dir / "failure-rank0.json", {"rank": 0, "status": "failed", "time": began + 3,
                                                        "error": "RuntimeError: Connection closed by peer"})
    error = settle_failure(run_dir, began, 2)
    assert error.startswith("a rank ended without an account (killed?); rank 0 of 2: RuntimeError: Connection")
    assert settle_failure(run_dir, began, 2) is None  # no account left


class PruneAtHalf:
    """A tuner's `on_eval` that prunes at progress 0.5, noting in a file which process was told of each point."""

    def __init__(self, log: Path):
        self.log = log

    def __call__(self, point: float, top1: float) -> None:
        from vtbench.engine.runner import Pruned

        with open(self.log, "a") as f:
            f.write(f"{os.environ.get('RANK')} {point}\n")
        if point == 0.5:
            raise Pruned("pruned at 0.5")


def test_a_run_of_two_processes_is_pruned_by_rank_0_and_every_rank_ends_it(tmp_path):
    config = RunConfig(**{**TINY, "budget": "16steps", "eval_every": 0.25}, nproc=2).resolve()
    run_dir = launch(config, tmp_path, progress_bar=False, on_eval=PruneAtHalf(tmp_path / "told"))
    summary = results.read_json(run_dir / "summary.json")
    assert summary["status"] == "pruned" and summary["error"] == "pruned at 0.5" and summary["steps"] == 8
    assert (tmp_path / "told").read_text().split("\n")[:-1] == ["0 0.25", "0 0.5"]  # rank 0 alone was told
