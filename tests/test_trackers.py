"""Live experiment tracking (`loggers`): what TensorBoard, a real MLflow server, W&B in offline mode and the CSV
logger receive, read back with each tool's own reader, and runs that go on when a tracker cannot."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny

from vtbench.engine import results
from vtbench.engine.config import load_run_config
from vtbench.engine.runner import execute

GRID = """study: tracked
base: {model: vit_tiny, frames: 4, size: 16, batch_size: 4, eval_clips: 16, eval_every: 0.5,
       log_every: 5, model_args: {dim: 32, depth: 1, heads: 2, tubelet: [2, 4, 4]}, eval_sweep: ["keep=0.5,random"],
       loggers: [tensorboard, mlflow, wandb, csv]}
methods: [[]]
budgets: [20steps]
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on a loopback port, with a SQLite backend."""
    pytest.importorskip("mlflow")
    import requests

    root, port = tmp_path_factory.mktemp("mlflow"), _free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--workers", "1",
                               "--default-artifact-root", str(root / "artifacts")],
                              stdout=subprocess.DEVNULL, stderr=open(root / "server.log", "w"), start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if requests.get(f"{url}/health", timeout=1).ok:
                break
        except requests.RequestException:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-500:]}")
        time.sleep(0.3)
    yield url
    os.killpg(server.pid, signal.SIGKILL)  # a throw-away server: no need to wait for its orderly shutdown
    server.wait(timeout=30)


def _same(got: list, expected: list) -> bool:
    """Two series of (step, value): the same steps, the same values to float32 precision."""
    return ([int(step) for step, _ in got] == [int(step) for step, _ in expected]
            and [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6))


def _wandb_records(run_folder: Path, path: Path | None = None) -> list:
    """The records of a W&B offline run (its .wandb file: a LevelDB log of `Record` protobufs after a 7-byte
    header), parsed with W&B's own protobuf."""
    from wandb.proto.wandb_internal_pb2 import Record

    if path is None:
        (path,) = run_folder.glob("wandb/offline-run-*/run-*.wandb")
    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    position, pieces, records = 7, b"", []
    while position + 7 <= len(data):
        left = block - position % block
        length, kind = int.from_bytes(data[position + 4:position + 6], "little"), data[position + 6]
        if left < 7 or (length == 0 and kind == 0):  # a block's padding
            position += left
            continue
        pieces += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            records.append(Record.FromString(pieces))
            pieces = b""
    return records


@pytest.mark.mlflow
@pytest.mark.slow
def test_a_grid_streams_to_tensorboard_mlflow_wandb_and_csv_grouped_by_its_study(tmp_path, mlflow_server,
                                                                                  monkeypatch):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "grid.yaml").write_text(GRID)
    from vtbench.cli.main import main

    assert main(["grid", str(tmp_path / "grid.yaml"), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    study = tmp_path / "out" / "tracked"
    (run_dir,) = [d for d in study.iterdir() if (d / "summary.json").exists()]
    summary = results.read_json(run_dir / "summary.json")
    losses = pd.read_parquet(run_dir / "steps.parquet")[["step", "loss"]].values.tolist()
    evals = pd.read_parquet(run_dir / "evals.parquet").query("setting == 'default'")
    top1 = evals[["step", "top1"]].values.tolist()

    # TensorBoard: the study's folder holds each run's event files, read back with tensorboard's own reader
    events = EventAccumulator(str(study / "tensorboard" / run_dir.name))
    events.Reload()
    assert _same([[e.step, e.value] for e in events.Scalars("loss")], losses)
    assert _same([[e.step, e.value] for e in events.Scalars("top1")], top1)

    # MLflow: an experiment per study, a run per cell tagged with its folder, the metrics' histories, the params
    client = MlflowClient(mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name("tracked").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["vtbench.run_dir"] == str(run_dir.resolve())
    history = client.get_metric_history(run.info.run_id, "loss")
    assert _same([[m.step, m.value] for m in history], losses)
    assert _same([[m.step, m.value] for m in client.get_metric_history(run.info.run_id, "top1")], top1)
    config = load_run_config(run_dir / "config.yaml")
    assert run.data.params["lr"] == str(config.lr) and run.data.params["model_args.dim"] == "32"
    assert run.data.metrics["summary.top1"] == pytest.approx(summary["top1"])
    # an evaluation setting's name holds characters MLflow refuses in a key (`=`, `,`): sent under a key it takes
    sweep = pd.read_parquet(run_dir / "evals.parquet").query("setting == 'keep=0.5,random'")
    sweep = sweep[["step", "top1"]].values.tolist()
    assert _same([[m.step, m.value] for m in client.get_metric_history(run.info.run_id, "keep_0.5_random/top1")],
                 sweep)

    # W&B offline: the run's own record file, grouped by study, with the same history and summary
    records = _wandb_records(run_dir)
    (meta,) = [r.run for r in records if r.WhichOneof("record_type") == "run"][:1]
    # its id: the run folder's name and a suffix of its own (the same configuration in another study is another
    # W&B run), kept for a resume
    assert meta.run_group == "tracked" and meta.run_id.startswith(f"{run_dir.name}-")
    assert results.read_json(run_dir / "trackers.json")["wandb_run_id"] == meta.run_id
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item} for r in records
               if r.WhichOneof("record_type") == "history"]
    assert _same([[h["step"], h["loss"]] for h in history if "loss" in h], losses)  # plotted against the run's step
    assert _same([[h["step"], h["top1"]] for h in history if "top1" in h], top1)
    summaries = {u.key or "/".join(u.nested_key): json.loads(u.value_json) for r in records
                 if r.WhichOneof("record_type") == "summary" for u in r.summary.update}
    assert summaries["top1"] == pytest.approx(summary["top1"])

    # CSV: every value as it came, the summary's included
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert _same([[float(r["step"]), float(r["value"])] for r in rows if r["name"] == "loss"], losses)
    assert float(next(r["value"] for r in rows if r["kind"] == "summary" and r["name"] == "top1")) == summary["top1"]


def test_a_run_goes_on_when_its_server_is_down_or_a_package_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if W&B were not installed
    pytest.importorskip("mlflow")
    run_dir = execute(tiny(budget="20steps", loggers=["mlflow", "wandb", "csv"]), tmp_path, progress_bar=False)
    assert results.read_json(run_dir / "summary.json")["status"] == "completed"
    err = capsys.readouterr().err
    assert err.count("loggers: mlflow failed") == 1 and "does not answer" in err  # said once, at once
    assert err.count("loggers: wandb needs the wandb package") == 1 and "pip install 'vtbench[wandb]'" in err
    assert "still sending" not in err  # the end of the run did not wait on the server
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert any(r["name"] == "loss" for r in rows)  # the logger that works went on


def test_loggers_are_checked_and_leave_the_run_id_as_it_was():
    from vtbench.engine.config import RunConfig
    from vtbench.errors import ConfigError

    assert RunConfig(loggers=["csv"]).resolve().run_id() == RunConfig().resolve().run_id()
    with pytest.raises(ConfigError, match="loggers must be a list of different ones of tensorboard, mlflow, wandb"):
        RunConfig(loggers=["neptune"]).resolve()


def _attempt(run_dir: Path, names: list[str], rows: list[tuple[int, float]], status: str, loggers: list[str]):
    """One attempt of a run as the runner feeds its trackers: parameters, step rows of 5 steps, an evaluation at
    step 10, the end."""
    from vtbench.engine.trackers import RunInfo, Trackers

    trackers = Trackers(names, RunInfo(run_dir, "baseline", {"lr": 0.001, "loggers": loggers}))
    trackers.params({"lr": 0.001, "loggers": loggers})
    for step, loss in rows:
        trackers.step({"step": step, "steps": 5, "loss": loss, "progress": step / 20})
        if step == 10:
            trackers.evaluation({"setting": "default", "step": 10, "progress": 0.5, "top1": 40.0, "top5": 90.0})
    if status == "completed":
        trackers.summary({"steps": 20, "top1": 50.0})
    trackers.close(status)


def test_a_resumed_run_goes_on_in_the_same_tracked_runs_without_plotting_a_step_twice(tmp_path, monkeypatch, capsys):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "a1b2c3d4e5f6"
    run_dir.mkdir()
    names = ["tensorboard", "mlflow", "wandb"]
    # the first attempt logged up to step 15 and was stopped; its checkpoint holds step 10
    _attempt(run_dir, names, [(5, 3.0), (10, 2.5), (15, 2.25)], "interrupted", ["tensorboard", "mlflow", "wandb"])
    ids = results.read_json(run_dir / "trackers.json")
    time.sleep(1.1)  # TensorBoard names its event files by the second
    # the resumed attempt trains steps 11-20 again, watched by one more logger (a setting outside the run's id)
    _attempt(run_dir, names, [(15, 2.125), (20, 1.875)], "completed", ["tensorboard", "mlflow", "wandb", "csv"])
    assert "loggers:" not in capsys.readouterr().err  # no tracker failed

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(5, 3.0), (10, 2.5), (15, 2.125), (20, 1.875)]

    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("vtbench").experiment_id])
    assert run.info.run_id == ids["mlflow_run_id"] and run.info.status == "FINISHED"
    assert run.data.tags["vtbench.status"] == "completed" and run.data.metrics["summary.top1"] == 50.0
    assert run.data.params["loggers"] == str(["tensorboard", "mlflow", "wandb"])  # its first value is kept

    paths = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"), key=lambda p: p.parent.name)
    assert len(paths) == 2
    steps = []
    for path in paths:
        records = _wandb_records(run_dir, path)
        assert [r.run.run_id for r in records if r.WhichOneof("record_type") == "run"][:1] == [ids["wandb_run_id"]]
        history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item} for r in records
                   if r.WhichOneof("record_type") == "history"]
        steps += [(h["step"], h["loss"]) for h in history if "loss" in h]
    assert steps == [(5, 3.0), (10, 2.5), (15, 2.25), (15, 2.125), (20, 1.875)]  # step 15 twice: kept, not dropped


def test_a_tracker_that_hangs_delays_neither_the_others_nor_the_end_beyond_its_bound(tmp_path, monkeypatch, capsys):
    from vtbench.engine import trackers

    release = threading.Event()

    class Hangs:
        def __init__(self, info):
            pass

        def params(self, params):
            release.wait(30)  # a server that does not answer

        step = summary = close = params

    monkeypatch.setitem(trackers.MAKERS, "hangs", Hangs)
    monkeypatch.setattr(trackers, "CLOSE_S", 1.0)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    began = time.monotonic()
    try:
        _attempt(run_dir, ["hangs", "csv"], [(5, 3.0), (10, 2.5)], "completed", ["csv"])
        waited = time.monotonic() - began
    finally:
        release.set()
    assert waited < 5
    err = capsys.readouterr().err
    assert "loggers: hangs still sending after 1 s" in err and "csv" not in err
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert [float(r["value"]) for r in rows if r["name"] == "loss"] == [3.0, 2.5]  # the csv logger got everything
    assert any(r["kind"] == "summary" for r in rows)
