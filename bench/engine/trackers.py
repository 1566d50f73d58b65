"""Live experiment tracking: `loggers: [tensorboard, mlflow, wandb, csv]` streams what a run's files hold, as it
happens, to the tools its users watch training in: each step row once its loss is read back (loss, lr,
throughput, tokens, memory: every number of steps.parquet's row), every evaluation row, the resolved
configuration as parameters, summary.json's figures at the end, and the run's folder and id, so that a tracked
run can be found on disk.

Runs of a study are grouped by it: TensorBoard folders under `OUT/<study>/tensorboard/<run_id>` (a lone run writes
`<run_dir>/tensorboard`), an MLflow experiment named after the study (`vtbench` for a lone run), a W&B group. Each
tool is configured as its users expect, by its own environment (`MLFLOW_TRACKING_URI`, `WANDB_MODE`,
`WANDB_PROJECT`, ...).

The trackers work on a thread of their own behind a bounded queue: a slow server never slows a step, and a tracker
that fails (its package missing, its server down) warns once on stderr and is dropped while the run goes on. At the
end the run waits for them at most `CLOSE_S`.
"""

import csv
import math
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

KNOWN = ("tensorboard", "mlflow", "wandb", "csv")
EXTRAS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
CLOSE_S = 15.0  # the longest the end of a run waits for its trackers to send what is queued
QUEUE_SIZE = 10_000  # events waiting to be sent; beyond it, events are dropped (and that is said once)
SAVED = "trackers.json"  # ids that let a resumed run go on in the same tracked run


def numbers(row: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a row (what a tracker can plot)."""
    return {k: float(v) for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested configuration as `key.sub` parameters."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


class RunInfo:
    """What a tracker is told of the run it follows."""

    def __init__(self, run_dir: Path, label: str, config: dict[str, Any]):
        self.run_dir = Path(run_dir).resolve()
        self.run_id = self.run_dir.name
        self.study = self.run_dir.parent.name if (self.run_dir.parent / "study.json").exists() else None
        self.label = label
        self.config = config

    @property
    def name(self) -> str:
        return f"{self.label} ({self.run_id})"

    @property
    def tags(self) -> dict[str, str]:
        return {"vtbench.run_id": self.run_id, "vtbench.run_dir": str(self.run_dir),
                "vtbench.study": self.study or "", "vtbench.label": self.label}

    def saved(self) -> dict[str, Any]:
        from vtbench.engine import results

        path = self.run_dir / SAVED
        return results.read_json(path) if path.exists() else {}

    def save(self, **ids: Any) -> None:
        from vtbench.engine import results

        results.write_json(self.run_dir / SAVED, {**self.saved(), **ids})


# ---- the trackers: each a thin wrapper around its tool's own API ---------------------------------------------


class TensorBoard:
    def __init__(self, info: RunInfo):
        from torch.utils.tensorboard import SummaryWriter

        root = info.run_dir.parent / "tensorboard" / info.run_id if info.study else info.run_dir / "tensorboard"
        self.writer = SummaryWriter(str(root))
        self.writer.add_text("run", f"{info.name}: {info.run_dir}")

    def params(self, params: dict[str, Any]) -> None:
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in params.items()))

    def step(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def summary(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(f"summary/{key}", value, step)

    def close(self, status: str) -> None:
        self.writer.close()


class MLflow:
    def __init__(self, info: RunInfo):
        import mlflow
        from mlflow.tracking import MlflowClient

        uri = mlflow.get_tracking_uri()
        if uri.startswith(("http://", "https://")):  # a server that is down is said at once, not after retries
            import requests

            try:
                requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
            except requests.RequestException as err:
                raise ConnectionError(f"tracking server {uri} does not answer ({type(err).__name__})") from None
        self.client = MlflowClient(uri)
        experiment = info.study or "vtbench"
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        resumed = info.saved().get("mlflow_run_id")
        if resumed:
            self.client.update_run(resumed, status="RUNNING")
            self.run_id = resumed
        else:
            self.run_id = self.client.create_run(experiment_id, run_name=info.name, tags=info.tags).info.run_id
            info.save(mlflow_run_id=self.run_id)

    def params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 parameters a call
            self.client.log_batch(self.run_id, params=items[start:start + 100])

    def step(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def summary(self, values: dict[str, float], step: int) -> None:
        self.step({f"summary.{k}": v for k, v in values.items()}, step)

    def close(self, status: str) -> None:
        ended = {"completed": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED")
        self.client.set_terminated(self.run_id, ended)


class WandB:
    def __init__(self, info: RunInfo):
        import os

        import wandb

        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "vtbench"), group=info.study, name=info.name,
            id=info.run_id, resume="allow", dir=str(info.run_dir), tags=[info.run_id], config=info.tags,
            reinit="create_new", settings=wandb.Settings(console="off", silent=True))

    def params(self, params: dict[str, Any]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def step(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def summary(self, values: dict[str, float], step: int) -> None:
        self.run.summary.update(values)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "completed" else 1)


class Csv:
    """`metrics.csv` in the run folder: one line per value as it comes (kind, step, name, value), for tools that
    read nothing else."""

    def __init__(self, info: RunInfo):
        path = info.run_dir / "metrics.csv"
        new = not path.exists()
        self.file = open(path, "a", newline="")
        self.writer = csv.writer(self.file)
        if new:
            self.writer.writerow(["time", "kind", "step", "name", "value"])

    def _rows(self, kind: str, values: dict[str, Any], step: int) -> None:
        now = f"{time.time():.3f}"
        self.writer.writerows([now, kind, step, k, v] for k, v in values.items())
        self.file.flush()

    def params(self, params: dict[str, Any]) -> None:
        self._rows("param", params, 0)

    def step(self, values: dict[str, float], step: int) -> None:
        self._rows("metric", values, step)

    def summary(self, values: dict[str, float], step: int) -> None:
        self._rows("summary", values, step)

    def close(self, status: str) -> None:
        self.file.close()


MAKERS = {"tensorboard": TensorBoard, "mlflow": MLflow, "wandb": WandB, "csv": Csv}


# ---- the thread ------------------------------------------------------------------------------------------------


class Trackers:
    """The run's trackers, fed from its loop through a queue and run on their own thread."""

    def __init__(self, names: list[str], info: RunInfo):
        self.names, self.info = list(names), info
        self.queue: queue.Queue = queue.Queue(QUEUE_SIZE)
        self.dropped = False
        self.thread = threading.Thread(target=self._work, daemon=True, name="vtbench-trackers")
        self.thread.start()

    def params(self, config: dict[str, Any]) -> None:
        """The resolved configuration, as flat parameters."""
        self._put("params", flat(config))

    def step(self, row: dict[str, Any]) -> None:
        """A steps.parquet row, once its loss is known."""
        self._put("step", numbers(row), int(row["step"]))

    def evaluation(self, row: dict[str, Any]) -> None:
        """An evaluations row: `top1`, `top5` and `eval_loss` of the default setting, `<setting>/top1` of others."""
        scores = {"top1": row.get("top1"), "top5": row.get("top5"), "eval_loss": row.get("loss")}
        if row["setting"] != "default":
            scores = {f"{row['setting']}/{k}": v for k, v in scores.items()}
        self._put("step", numbers({**scores, "progress": row["progress"]}), int(row["step"]))

    def summary(self, summary: dict[str, Any]) -> None:
        self._put("summary", numbers(summary), int(summary.get("steps") or 0))

    def close(self, status: str) -> None:
        self._put("close", status)
        self.thread.join(CLOSE_S)
        if self.thread.is_alive():
            print(f"vtbench: loggers: {', '.join(self.names)} still sending after {CLOSE_S:.0f} s; the run ends "
                  "without waiting for them", file=sys.stderr)

    def _put(self, kind: str, *args: Any) -> None:
        try:
            self.queue.put_nowait((kind, args))
        except queue.Full:
            if not self.dropped:
                self.dropped = True
                print(f"vtbench: loggers: {QUEUE_SIZE} events wait to be sent; later ones are dropped (the run's "
                      "files keep everything)", file=sys.stderr)

    def _work(self) -> None:
        live: dict[str, Any] = {}
        for name in self.names:
            tracker = self._call(name, MAKERS[name], self.info)
            if tracker is not None:
                live[name] = tracker
        while True:
            kind, args = self.queue.get()
            for name, tracker in list(live.items()):
                if self._call(name, getattr(tracker, kind), *args) is None:
                    live.pop(name)
            if kind == "close":
                return

    def _call(self, name: str, call, *args: Any) -> Any:
        """`call(*args)`, or None after saying once that the tracker failed and is dropped."""
        try:
            result = call(*args)
            return True if result is None else result
        except ImportError as err:
            print(f"vtbench: loggers: {name} needs the {EXTRAS.get(name, name)} package ({err}): pip install "
                  f"'vtbench[{name}]'; the run goes on without it", file=sys.stderr)
        except Exception as err:  # noqa: BLE001 - a tracker never stops the run
            line = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
            print(f"vtbench: loggers: {name} failed ({type(err).__name__}: {line}); the run goes on without it",
                  file=sys.stderr)
        return None
