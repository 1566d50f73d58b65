"""Live experiment tracking: `loggers: [tensorboard, mlflow, wandb, csv]` streams what a run's files hold, as it
happens, to the tools its users watch training in: each step row once its loss is read back (loss, lr,
throughput, tokens, memory: every number of steps.parquet's row), every evaluation row, the resolved
configuration as parameters, summary.json's figures at the end, and the run's folder and id, so that a tracked
run can be found on disk.

Runs of a study are grouped by it: TensorBoard folders under `OUT/<study>/tensorboard/<run_id>` (a lone run writes
`<run_dir>/tensorboard`), an MLflow experiment named after the study (`vtbench` for a lone run), a W&B group. Each
tool is configured as its users expect, by its own environment (`MLFLOW_TRACKING_URI`, `WANDB_MODE`,
`WANDB_PROJECT`, ...).

A resumed run goes on in the same tracked run (MLflow's and W&B's run ids are kept in the run folder's
`trackers.json`) and trains again the steps after its checkpoint: TensorBoard hides what the interrupted attempt
logged past the checkpoint (its purge step), W&B plots against the run's own `step` (its internal step must only
grow, and would drop the repeated steps), and MLflow keeps both attempts' points of the repeated steps.

Each tracker works on a thread of its own behind a bounded queue: a slow server never slows a step nor another
tracker, and a tracker that fails (its package missing, its server down) warns once on stderr and is dropped while
the run goes on. At the end the run waits for them at most `CLOSE_S` in all.
"""

import csv
import math
import os
import posixpath
import queue
import re
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Any

from vtbench.engine import results

KNOWN = ("tensorboard", "mlflow", "wandb", "csv")
EXTRAS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
CLOSE_S = 15.0  # the longest the end of a run waits for its trackers to send what is queued
QUEUE_SIZE = 10_000  # events waiting to be sent to one tracker; beyond it, events are dropped (and that is said once)
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
        self._lock = threading.Lock()  # the trackers' threads save their ids into one file

    @property
    def name(self) -> str:
        return f"{self.label} ({self.run_id})"

    @property
    def tags(self) -> dict[str, str]:
        return {"vtbench.run_id": self.run_id, "vtbench.run_dir": str(self.run_dir),
                "vtbench.study": self.study or "", "vtbench.label": self.label}

    def saved(self) -> dict[str, Any]:
        path = self.run_dir / SAVED
        return results.read_json(path) if path.exists() else {}

    def save(self, **ids: Any) -> None:
        with self._lock:
            results.write_json(self.run_dir / SAVED, {**self.saved(), **ids})


# ---- the trackers: each a thin wrapper around its tool's own API ---------------------------------------------


class TensorBoard:
    """Event files read by TensorBoard. The writer opens at the run's first step: an attempt that resumes where
    earlier event files are purges their events past its checkpoint (SummaryWriter's `purge_step`), so that the
    steps trained again are not plotted twice."""

    def __init__(self, info: RunInfo):
        from torch.utils.tensorboard import SummaryWriter

        self.make = SummaryWriter
        self.root = info.run_dir.parent / "tensorboard" / info.run_id if info.study else info.run_dir / "tensorboard"
        self.earlier = self.root.is_dir() and any(self.root.glob("events.out.tfevents.*"))
        self.writer = None
        self.texts = [("run", f"{info.name}: {info.run_dir}")]

    def _open(self, purge_step: int | None = None):
        if self.writer is None:
            self.writer = self.make(str(self.root), purge_step=purge_step)
            for tag, text in self.texts:
                self.writer.add_text(tag, text)
        return self.writer

    def begin(self, after: int) -> None:
        """The steps this attempt logs come after step `after` (its checkpoint's; 0 for a fresh run)."""
        self._open(after + 1 if self.earlier else None)

    def params(self, params: dict[str, Any]) -> None:
        text = ("config", "\n".join(f"    {k}: {v}" for k, v in params.items()))
        if self.writer is None:
            self.texts.append(text)
        else:
            self.writer.add_text(*text)

    def step(self, values: dict[str, float], step: int) -> None:
        writer = self._open()
        for key, value in values.items():
            writer.add_scalar(key, value, step)
        writer.flush()  # on this thread: a viewer sees the row now rather than at the writer's next flush

    def summary(self, values: dict[str, float], step: int) -> None:
        self.step({f"summary/{key}": value for key, value in values.items()}, step)

    def close(self, status: str) -> None:
        self._open().close()


_MLFLOW_BAD = re.compile(r"[^\w./\- :]")


def mlflow_key(name: str) -> str:
    """`name` as MLflow takes it: its keys hold only alphanumerics, `_ - . / :` and spaces (an evaluation setting
    such as `keep=0.8,random` becomes `keep_0.8_random`), at most 250 characters."""
    key = _MLFLOW_BAD.sub("_", name).strip("/")[:250] or "_"
    return key if posixpath.normpath(key) == key else key.replace("/", "_")  # nor may it resolve as a path


class MLflow:
    def __init__(self, info: RunInfo):
        import mlflow
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        uri = mlflow.get_tracking_uri()
        if uri.startswith(("http://", "https://")):  # a server that is down is said at once, not after retries
            import requests

            try:
                requests.get(uri.rstrip("/") + "/health", timeout=5)  # any answer will do: the server is up
            except (requests.ConnectionError, requests.Timeout) as err:
                raise ConnectionError(f"tracking server {uri} does not answer ({type(err).__name__})") from None
        self.client = MlflowClient(uri)
        self.logged: dict[str, str] = {}  # parameters the run holds already (a resumed run's)
        saved = info.saved()
        self.run_id = saved.get("mlflow_run_id") if saved.get("mlflow_uri", uri) == uri else None
        if self.run_id:
            try:
                run = self.client.get_run(self.run_id)
                if run.info.lifecycle_stage != "active":
                    raise MlflowException(f"run {self.run_id} was deleted")
                self.logged = dict(run.data.params)
                self.client.update_run(self.run_id, status="RUNNING")
            except MlflowException:  # deleted, or unknown to this server: a new run
                self.run_id = None
        if not self.run_id:
            experiment_id = self._experiment(info.study or "vtbench")
            self.run_id = self.client.create_run(experiment_id, run_name=info.name, tags=info.tags).info.run_id
            info.save(mlflow_run_id=self.run_id, mlflow_uri=uri)

    def _experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # another cell of the study created it a moment ago
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        # a parameter keeps its first value (MLflow refuses a change): a resumed run may watch with other loggers
        items = [Param(key, value) for key, value in ((mlflow_key(k), str(v)[:6000]) for k, v in params.items())
                 if key not in self.logged]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 parameters a call
            self.client.log_batch(self.run_id, params=items[start:start + 100])
        self.logged.update((p.key, p.value) for p in items)

    def step(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(mlflow_key(k), v, now, step) for k, v in values.items()]
        for start in range(0, len(metrics), 1000):  # and at most 1000 metrics
            self.client.log_batch(self.run_id, metrics=metrics[start:start + 1000])

    def summary(self, values: dict[str, float], step: int) -> None:
        self.step({f"summary.{k}": v for k, v in values.items()}, step)

    def close(self, status: str) -> None:
        self.client.set_tag(self.run_id, "vtbench.status", status)
        ended = {"completed": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED")
        self.client.set_terminated(self.run_id, ended)


class WandB:
    """A W&B run, grouped by study. Its id is the run folder's name and a random suffix, kept in trackers.json: a
    resumed run goes on in it, while the same configuration in another study (the same run folder name) or run
    anew is another W&B run. Metrics are plotted against the run's own `step`, which a resumed run repeats."""

    def __init__(self, info: RunInfo):
        import wandb

        saved = info.saved().get("wandb_run_id")
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "vtbench"), group=info.study, name=info.name,
            id=saved or f"{info.run_id}-{secrets.token_hex(4)}", resume="allow", dir=str(info.run_dir),
            tags=[info.run_id], config=info.tags, reinit="create_new",
            settings=wandb.Settings(console="off", silent=True))
        if saved != self.run.id:
            info.save(wandb_run_id=self.run.id)
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def params(self, params: dict[str, Any]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def step(self, values: dict[str, float], step: int) -> None:
        self.run.log({**values, "step": step})

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


# ---- the threads -----------------------------------------------------------------------------------------------


class _Worker:
    """One tracker, on a thread of its own behind its own bounded queue."""

    def __init__(self, name: str, info: RunInfo):
        self.name, self.info = name, info
        self.queue: queue.Queue = queue.Queue(QUEUE_SIZE)
        self.dropped = False  # events were dropped (said once)
        self.gone = False  # the tracker failed: nothing more is queued for it
        self.thread = threading.Thread(target=self._work, daemon=True, name=f"vtbench-{name}")
        self.thread.start()

    def put(self, kind: str, args: tuple, wait_s: float = 0.0) -> None:
        if self.gone:
            return
        try:
            self.queue.put((kind, args), timeout=wait_s) if wait_s > 0 else self.queue.put_nowait((kind, args))
        except queue.Full:
            if not self.dropped:
                self.dropped = True
                print(f"vtbench: loggers: {QUEUE_SIZE} events wait to be sent to {self.name}; later ones are "
                      "dropped (the run's files keep everything)", file=sys.stderr)

    def _work(self) -> None:
        tracker = self._call(MAKERS[self.name], self.info)
        while tracker is not None:
            kind, args = self.queue.get()
            if kind != "begin" or hasattr(tracker, "begin"):
                if self._call(getattr(tracker, kind), *args) is None:
                    return
            if kind == "close":
                return

    def _call(self, call, *args: Any) -> Any:
        """`call(*args)`, or None after saying once that the tracker failed and is dropped."""
        try:
            result = call(*args)
            return True if result is None else result
        except ImportError as err:
            print(f"vtbench: loggers: {self.name} needs the {EXTRAS.get(self.name, self.name)} package ({err}): "
                  f"pip install 'vtbench[{self.name}]'; the run goes on without it", file=sys.stderr)
        except Exception as err:  # noqa: BLE001 - a tracker never stops the run
            line = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
            print(f"vtbench: loggers: {self.name} failed ({type(err).__name__}: {line}); the run goes on without it",
                  file=sys.stderr)
        self.gone = True
        return None


class Trackers:
    """The run's trackers, fed from its loop through queues and run on threads of their own."""

    def __init__(self, names: list[str], info: RunInfo):
        self.names, self.info = list(names), info
        self.begun = False  # the first step or evaluation of this attempt was sent
        self.workers = [_Worker(name, info) for name in self.names]

    def params(self, config: dict[str, Any]) -> None:
        """The resolved configuration, as flat parameters."""
        self._put("params", flat(config))

    def step(self, row: dict[str, Any]) -> None:
        """A steps.parquet row, once its loss is known."""
        self._begin(int(row["step"]) - int(row.get("steps") or 1))
        self._put("step", numbers(row), int(row["step"]))

    def evaluation(self, row: dict[str, Any]) -> None:
        """An evaluations row: `top1`, `top5` and `eval_loss` of the default setting, `<setting>/top1` of others."""
        scores = {"top1": row.get("top1"), "top5": row.get("top5"), "eval_loss": row.get("loss")}
        if row["setting"] != "default":
            scores = {f"{row['setting']}/{k}": v for k, v in scores.items()}
        self._begin(int(row["step"]))
        self._put("step", numbers({**scores, "progress": row["progress"]}), int(row["step"]))

    def summary(self, summary: dict[str, Any]) -> None:
        self._put("summary", numbers(summary), int(summary.get("steps") or 0))

    def close(self, status: str) -> None:
        deadline = time.monotonic() + CLOSE_S
        for worker in self.workers:  # waits for room only where a queue is full
            worker.put("close", (status,), wait_s=max(0.01, deadline - time.monotonic()))
        for worker in self.workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))
        late = [w.name for w in self.workers if w.thread.is_alive()]
        if late:
            print(f"vtbench: loggers: {', '.join(late)} still sending after {CLOSE_S:.0f} s; the run ends without "
                  "waiting for them", file=sys.stderr)

    def _begin(self, after: int) -> None:
        """Before this attempt's first step or evaluation: the step it follows (a resumed run's checkpoint)."""
        if not self.begun:
            self.begun = True
            self._put("begin", max(0, after))

    def _put(self, kind: str, *args: Any) -> None:
        for worker in self.workers:
            worker.put(kind, args)
