"""Live experiment tracking (`loggers`): what TensorBoard, a real MLflow server, W&B in offline mode and the CSV
logger receive, read back with each tool's own reader, and runs that go on when a tracker cannot."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny

from vtbench.engine import results
from vtbench.engine.config import load_run_config
from vtbench.engine.runner import execute

GRID = """study: tracked
base: {model: vit_tiny, frames: 4, size: 16, batch_size: 4, eval_clips: 16, eval_every: 0.5, eval_sweep: [],
       log_every: 5, model_args: {dim: 32, depth: 1, heads: 2, tubelet: [2, 4, 4]},
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


def _wandb_records(run_folder: Path) -> list:
    """The records of a W&B offline run (its .wandb file: a LevelDB log of `Record` protobufs after a 7-byte
    header), parsed with W&B's own protobuf."""
    from wandb.proto.wandb_internal_pb2 import Record

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

    # W&B offline: the run's own record file, grouped by study, with the same history and summary
    records = _wandb_records(run_dir)
    (meta,) = [r.run for r in records if r.WhichOneof("record_type") == "run"][:1]
    assert meta.run_group == "tracked" and meta.run_id == run_dir.name
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item} for r in records
               if r.WhichOneof("record_type") == "history"]
    assert _same([[h["_step"], h["loss"]] for h in history if "loss" in h], losses)
    assert _same([[h["_step"], h["top1"]] for h in history if "top1" in h], top1)
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
