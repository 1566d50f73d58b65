"""One budgeted training run (docs/design.md, "One run"). The runner calls method hooks; it never names a method.

    run_dir = execute(config, out="results/runs")

A run is resumable: run again with the same configuration and it continues from its last checkpoint, or
returns at once when it has already ended.
"""

import json
import os
import random
import socket
import threading
import time
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vtbench.core.budget import Budget, BudgetClock, lr_factor
from vtbench.core.shape import BatchShape
from vtbench.datasets import build_dataset
from vtbench.engine import cpu, measure, mfu, results
from vtbench.engine.batches import TrainingBatches
from vtbench.engine.checkpoint import Checkpointer, Part, RandomState
from vtbench.engine.compiled import CompileStats, compile_blocks
from vtbench.engine.config import RunConfig, save_yaml
from vtbench.engine.distributed import ParallelLoss, World, rank_device
from vtbench.engine.evaluate import EvalData
from vtbench.engine.evaluation import Evaluation
from vtbench.engine.flops import StepFlops
from vtbench.engine.init import apply_init
from vtbench.engine.steplog import Step, StepLog, data_wait_figures
from vtbench.engine.trackers import RunInfo, Trackers
from vtbench.errors import ConfigError
from vtbench.methods import RunContext, build_methods
from vtbench.models import build_model
from vtbench.models.counting import counting_tokens
from vtbench.models.param_groups import param_groups

FINAL_STATUSES = ("completed", "diverged", "oom", "pruned")
FAILURE_PREFIX = "failure-rank"  # + rank + .json: a rank's own account of how it failed
FLUSH_EVERY = 50  # steps between reading losses back from the device (one synchronisation each)
PROGRESS_EVERY_S = 5.0  # wall seconds between writes of progress.json, at the close of a logging interval


class Diverged(Exception):
    pass


class Pruned(Exception):
    """Raised by an `on_eval` callback to stop a run early (a tuner's pruner); the run ends as `pruned`."""


class Stopped(BaseException):
    """A run asked to stop (`request_stop`, a scheduler's SIGTERM) saved its place and left: not ended, so
    rerunning resumes it. A BaseException, so that no handler of failures records it as one."""


_stop_requested = threading.Event()


def request_stop(signum: int | None = None, frame=None) -> None:
    """Ask the run in this process to checkpoint and stop at its next step (usable as a signal handler)."""
    _stop_requested.set()


def stop_requested() -> bool:
    return _stop_requested.is_set()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but torch sees no CUDA device here")
    return device


def execute(config: RunConfig, out: str | Path, progress_bar: bool = True, on_eval=None) -> Path:
    """Run (or resume, or skip if ended) one configuration under `out/<run_id>/`; returns the run directory.

    `on_eval(point, top1)` is called after each evaluation of the default setting, including those a resumed
    run restored; it may raise `Pruned` to end the run there.
    """
    config = config.resolve()
    run_dir = Path(out) / config.run_id()
    summary = run_dir / results.SUMMARY
    if summary.exists() and results.read_json(summary).get("status") in FINAL_STATUSES:
        return run_dir
    Run(config, run_dir, progress_bar, on_eval).train()
    return run_dir


class Run:
    def __init__(self, config: RunConfig, run_dir: Path, progress_bar: bool = True, on_eval=None):
        self.config, self.dir, self.show_progress, self.on_eval = config, run_dir, progress_bar, on_eval
        self.budget = Budget.parse(config.budget)
        self.threads = cpu.set_threads()
        self.cpu = cpu.CpuShare(self.threads, adapt_threads=self.budget.unit == "s")
        self.methods = build_methods(config.methods)
        self.device = rank_device(resolve_device(config.device))
        self.world = World.join(self.device)
        if self.world.size != config.nproc:
            raise ConfigError(f"nproc is {config.nproc} but this process is one of {self.world.size}: start a run of "
                              f"nproc {config.nproc} with `vtbench run --nproc {config.nproc}` or torchrun")
        self.base = BatchShape(config.batch_size, config.frames, config.size, config.stride)
        self.seeds = self.methods.random_seeds(config.seed)
        self.batches = TrainingBatches(self.methods, self.base, self.seeds.data, self.world.part)
        _seed_everything(self.seeds.weights)
        self.train_data = build_dataset(config.dataset, "train", self.seeds.data, device=self.device.type,
                                        **config.data_args)
        val_data = build_dataset(config.dataset, "val", 0, length=config.eval_clips, **config.data_args)
        # a data set whose evaluation clips depend on nothing but its arguments lets one process's runs share them
        # (decoded videos are not shared: a run reports the videos it could not read)
        share = json.dumps(config.data_args, sort_keys=True) if getattr(val_data, "shareable", False) else None
        self.eval_data = EvalData(val_data, min(config.eval_clips, len(val_data)), config.eval_batch_size, share,
                                  part=(self.world.rank, self.world.size))
        model = build_model(config.model, config.arch, self.train_data.num_classes, config.frames, config.size,
                            **config.model_args)
        self.init = apply_init(model, config.init, after_methods=False)  # an image or video model's weights
        self.clock = BudgetClock(self.budget, device=self.device, devices=self.world.size,
                                 charge=self.methods.cost_share())
        self.measure: measure.Measurements | None = None
        self.phase: str | None = None  # a phase a method began before measurement started
        context = RunContext(config, model, self.base, self.train_data.num_classes, self.device, self.train_data,
                             self.clock, begin_phase=self._begin_phase)
        self.methods.prepare(context)
        self.init = self.init or apply_init(context.model, config.init, after_methods=True)  # a finished run's
        self.model = context.model.to(self.device)
        self.compiled = CompileStats() if config.compile else None
        if config.compile:
            compile_blocks(self.model, config.compile_backend)
        self.loss = ParallelLoss(self.model, self.methods.loss, self.world, self.device,
                                 find_unused=self.methods.leaves_parameters_unused)
        if self.world.size > 1:  # every rank built the same model; now each draws its own random numbers
            _seed_everything(int(np.random.SeedSequence([self.seeds.weights, self.world.rank]).generate_state(1)[0]))
        self.evaluation = Evaluation(config, self.eval_data, self.methods.eval_shape(self.base),
                                     self.methods.eval_settings(), self._tubelet)
        groups = param_groups(self.model, config.weight_decay, config.layer_decay)
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr)
        self._parameters = list(self.model.parameters())
        bf16 = config.precision == "bf16" or (config.precision == "auto" and self.device.type == "cuda")
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)) if bf16 else nullcontext
        self.precision = "bf16" if bf16 else "fp32"
        self.flops = StepFlops()
        self.log = StepLog(config.log_every, run_dir / results.STEPS_JOURNAL, run_dir / results.STEPS)
        self.steps_since_read = 0
        self.checkpoints: Checkpointer | None = None  # once the measurements, one of its parts, have begun
        self.last_checkpoint = time.monotonic()
        self.progress_written = time.monotonic()
        self.last_shape: BatchShape | None = None  # of the last batch asked for, training or evaluation
        self.activity = "training"
        self.resumed_at: list[int] = []  # the step each resume started from
        self.trackers: Trackers | None = None  # live experiment tracking (`loggers`), rank 0's
        self.tracked = 0  # steps.parquet rows the trackers were sent
        self.status = "interrupted"  # how the run ended, once it has
        self.skipped_before: dict[str, str] = {}  # unreadable videos met before a resume
        self.data_wait_s = 0.0  # training time this process spent waiting for its batches (on the clock)

    def _begin_phase(self, name: str) -> None:
        if self.measure is None:
            self.phase = name
        else:
            self._drop_frozen_state()  # what a method froze as it began the phase is not the phase's memory
            self.measure.begin_phase(name)

    # ---- the loop -------------------------------------------------------------------------------------

    def train(self) -> None:
        self.measure = measure.Measurements(self.device, self.config.monitor_interval)
        if self.phase:
            self.measure.begin_phase(self.phase)
        self.checkpoints = self._checkpointer()
        try:
            self._train()
        finally:
            if self.trackers is not None:
                self.trackers.close(self.status)
            self.measure.close()
            if torch.get_num_threads() != self.threads:  # a crowded run gave threads up: the process gets them back
                torch.set_num_threads(self.threads)
            for data in (self.train_data, self.eval_data.dataset, self.eval_data):  # decoding workers, files
                getattr(data, "close", lambda: None)()
            self.world.leave()

    def _train(self) -> None:
        self._write_start()
        if self.config.loggers and self.world.main:
            self.trackers = Trackers(self.config.loggers, RunInfo(self.dir, self.config.label(), self.config.to_dict()))
            self.trackers.params(self.config.to_dict())
            self.tracked = len(self.log.rows)  # a resumed run's earlier rows were sent by the attempt that made them
        status, error = "completed", None
        bar = tqdm(total=1000, desc=self.dir.name, unit="‰", disable=not (self.show_progress and self.world.main),
                   leave=False)
        try:
            self._loop(bar)
        except Diverged as err:
            status, error = "diverged", str(err)
        except Pruned as err:
            status, error = "pruned", str(err) or None
        except torch.OutOfMemoryError as err:
            status, error = "oom", str(err).splitlines()[0]
            self.optimizer.zero_grad(set_to_none=True)  # free what the failed step held before measuring
            if self.world.size > 1:  # the other ranks wait on this one: the launcher ends the run
                self._rank_failed(status, error, traceback.format_exc())
                raise
        except Exception as err:
            status, error = "failed", "".join(traceback.format_exception_only(err)).strip()
            if self.world.size > 1:
                self._rank_failed(status, error, traceback.format_exc())
                error = f"rank {self.world.rank} of {self.world.size}: {error}"
            self._finish(status, error, traceback.format_exc())
            raise
        finally:
            bar.close()
        self._finish(status, error)

    def _loop(self, bar: tqdm) -> None:
        """Train to the end of the budget, evaluating at its points and checkpointing on time."""
        for row in self.evaluation.rows:  # restored by a resume: the caller sees every point once
            self._report(row)
        bar.update(int(self.clock.fraction() * 1000))
        self.cpu.restart()
        self.clock.start()
        while True:
            progress, checkpoint_due, stop = self._agreed_state()
            if progress >= 1:
                break
            if stop:
                self._checkpoint()
                raise Stopped(f"stopped at step {self.clock.used.steps} as asked; rerun to resume")
            if not self._evaluate_due(progress) and checkpoint_due:  # an evaluation writes a checkpoint
                self._checkpoint()
            self._step(progress)
            self.cpu.adapt()
            bar.update(int(self.clock.fraction() * 1000) - bar.n)
            if self.steps_since_read >= FLUSH_EVERY:
                self._read_losses()
        self.clock.stop()
        self._flush()
        self._evaluate_due(1.0)

    def _rank_failed(self, status: str, error: str, trace: str) -> None:
        """This rank's own account of its failure, for the launcher to find the rank that failed first."""
        failure = {"rank": self.world.rank, "status": status, "error": error, "time": time.time(), "traceback": trace}
        if status == "oom" and self.last_shape is not None:
            failure.update(oom_shape=dict(self.last_shape._asdict()), oom_during=self.activity)
        self.dir.mkdir(parents=True, exist_ok=True)
        results.write_json(self.dir / f"{FAILURE_PREFIX}{self.world.rank}.json", failure)

    def _agreed_state(self) -> tuple[float, bool, bool]:
        """Progress now, whether a checkpoint is due and whether the run was asked to stop, rank 0's on every rank
        (one small message a step), so that every rank takes the same decisions. On CUDA synchronised only where it
        matters: near the end of a time budget."""
        if self.clock.progress() > 0.98 and self.budget.unit == "s":
            self.clock.read(sync=True)
        due = time.monotonic() - self.last_checkpoint > self.config.checkpoint_every
        self.clock.used.s, due, stop = self.world.agree([self.clock.used.s, float(due), float(stop_requested())])
        return self.clock.fraction(), due > 0, stop > 0

    def _set_learning_rate(self, progress: float, shape: BatchShape) -> float:
        """The schedule's rate times the methods' factor (returned), times each group's own scale (layer-wise
        decay)."""
        config = self.config
        lr = config.lr * lr_factor(progress, config.warmup, config.lr_decay) * self.methods.lr_scale(progress, shape)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def _step(self, progress: float) -> None:
        config, used = self.config, self.clock.used
        shape = self.methods.batch_shape(progress, used.steps, self.base)
        self._drop_frozen_state()
        self.last_shape = shape
        lr = self._set_learning_rate(progress, shape)
        began = time.perf_counter()
        video, labels = self._train_batch(shape, progress)  # this rank's share of the batch
        data_s = time.perf_counter() - began
        self.data_wait_s += data_s
        share = len(labels) / shape.clips
        shape_key = (len(labels), *video.shape[2:])
        with self.flops.context(shape_key), counting_tokens() as seen:
            with self.autocast():
                loss = self.loss(video, labels, progress, config.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            self.world.for_gradients(loss, share).backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self._parameters, config.grad_clip)
        self.optimizer.step()
        # of this rank's share; the ranks' add up to the batch's
        flops = self.flops.settle(shape_key, tuple(seen.lengths))
        self.clock.add_step(shape.clips, self.world.total(flops))
        if self.compiled:
            self.compiled.step_done()
        self.clock.read()
        step_s = time.perf_counter() - began
        full = video.shape[2] // self._tubelet[0] * (video.shape[3] // self._tubelet[1]) ** 2
        kept = seen.counts[0] if seen.counts else full
        self.steps_since_read += 1
        loss = self.world.for_log(loss, share)
        if self.log.add(Step(loss.detach(), lr, len(labels), video.shape[2], video.shape[3], kept, kept / full, step_s,
                             data_s)):
            self._close_log_interval(progress)

    def _close_log_interval(self, progress: float) -> None:
        used = self.clock.used
        self.log.close_interval({
            "step": used.steps, "progress": self.clock.fraction(), "used_s": used.s, "used_flops": used.flops,
            "used_samples": used.samples, "trainable_params": _trainable(self.model), **self.measure.step_columns(),
            **self.methods.log_columns(progress),
        })
        if time.monotonic() - self.progress_written > PROGRESS_EVERY_S:
            self._write_progress()

    def _write_progress(self) -> None:
        """Where the run stands (`progress.json`), for `vtbench status` while it trains."""
        self.progress_written = time.monotonic()
        if self.world.main:
            used = self.clock.used
            results.write_json(self.dir / results.PROGRESS, {
                "progress": self.clock.fraction(), "step": used.steps, "used_s": used.s, "budget": str(self.budget),
                "time": time.time(), "host": socket.gethostname(), "pid": os.getpid(), "world_size": self.world.size})

    def _drop_frozen_state(self) -> None:
        """A parameter a method froze keeps no optimizer state (AdamW's moments would hold its memory)."""
        state = self.optimizer.state
        for p in self._parameters:
            if not p.requires_grad and p in state:
                del state[p]

    @property
    def _tubelet(self) -> tuple[int, int, int]:
        return self.model.tubelet

    def _train_batch(self, shape: BatchShape, progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        used = self.clock.used
        request = self.batches.request(shape, used.samples)
        video, labels = self.train_data.batch(request.indices, request.frames, request.size, request.stride,
                                              training=True,
                                              upcoming=self.batches.upcoming(progress, used.steps, shape, used.samples))
        return video.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    def _flush(self) -> None:
        """Close the log interval (an evaluation, a checkpoint or the end falls here) and read losses back."""
        self.clock.read(sync=True)
        self._close_log_interval(self.clock.fraction())
        self._read_losses()

    def _read_losses(self) -> None:
        """Read the losses of closed log rows back (one synchronisation, which also brings the clock up to date)
        and stop on a non-finite one."""
        self.clock.read(sync=True)
        self.steps_since_read = 0
        bad = self.log.read_losses(self.world.sum)
        if self.trackers is not None:
            for row in self.log.rows[self.tracked:self.log.read]:
                self.trackers.step(row)
            self.tracked = self.log.read
        if bad is not None:
            first = bad["step"] - bad["steps"] + 1
            where = f"step {bad['step']}" if bad["steps"] == 1 else f"steps {first}-{bad['step']}"
            raise Diverged(f"loss became {bad['loss']} at {where} (progress {bad['progress']:.3f})")

    # ---- evaluation and checkpoints, off the clock -----------------------------------------------------

    def _evaluate_due(self, progress: float) -> bool:
        """Evaluate at every point reached; whether any was."""
        evaluated = False
        while (point := self.evaluation.due(progress)) is not None:
            with self.clock.off_clock("eval"), self.compiled.evaluating() if self.compiled else nullcontext():
                self._flush()
                window = {**self.measure.end_training_window(), **self.cpu.mark()}  # the window that ends here
                self._evaluate(point, progress, window)
            self.evaluation.next += 1
            self._checkpoint()
            self.cpu.restart()
            self._report(self.evaluation.default_row(point))
            evaluated = True
        return evaluated

    def _report(self, row: dict[str, Any]) -> None:
        """Tell `on_eval` of an evaluation of the default setting. Of several ranks only rank 0 tells (a tuner's
        trial), and whether it pruned the run reaches the others, so that all of them end it together."""
        if row["setting"] != "default":
            return
        pruned = None
        if self.on_eval is not None and self.world.main:
            try:
                self.on_eval(row["point"], row["top1"])
            except Pruned as err:
                pruned = err
        if self.world.agree([float(pruned is not None)])[0] and pruned is None:
            pruned = Pruned("pruned by rank 0's trial")
        if pruned is not None:
            raise pruned

    def _evaluate(self, point: float, progress: float, window: dict[str, Any]) -> None:
        used = self.clock.read()
        progress = progress if self.world.size > 1 else self.clock.fraction()  # several ranks: the agreed one
        self.activity = "evaluation"
        rows = self.evaluation.run(self.model, self.methods.selector(progress, training=False), point, progress,
                                   used, window, self.device, self.autocast, self.world.sum,
                                   on_shape=lambda shape: setattr(self, "last_shape", shape))
        evaluation = self.measure.end_eval_window()
        self.evaluation.rows += [{**row, **evaluation} for row in rows]
        if self.trackers is not None:
            for row in rows:
                self.trackers.evaluation(row)
        self.activity = "training"

    def _checkpointer(self) -> Checkpointer:
        """The run's parts that a checkpoint holds, each saving its own state: shared ones, and each rank's own."""
        shared = {"model": self.model, "optimizer": self.optimizer, "methods": self.methods, "clock": self.clock,
                  "flops": self.flops, "evaluation": self.evaluation, "steps": self.log, "cpu": self.cpu,
                  "run": Part(self._record, self._take_record)}
        if self.compiled:
            shared["compiled"] = self.compiled
        return Checkpointer(self.dir / results.CHECKPOINT, self.world, shared,
                            own={"rng": RandomState(), "measure": self.measure})

    def _record(self) -> dict[str, Any]:
        return {"resumed_at": self.resumed_at, "skipped_videos": self._skipped_videos(),
                "data_wait_s": self.data_wait_s}

    def _take_record(self, state: dict[str, Any]) -> None:
        self.resumed_at, self.skipped_before, self.data_wait_s = (
            state["resumed_at"], state["skipped_videos"], state["data_wait_s"])

    def _checkpoint(self) -> None:
        with self.clock.off_clock("checkpoint"):
            self._flush()  # before the write, so the row's memory is its training's
        with self.clock.off_clock("checkpoint"), self.measure.excluded():
            if self.world.main:  # the tables first: the checkpoint names the journal's rows
                self.log.save()
                self._write_evals()
            self.checkpoints.save(self.dir.name)
            self._write_progress()
        self.last_checkpoint = time.monotonic()

    def _skipped_videos(self) -> dict[str, str]:
        """Unreadable videos skipped so far (path: reason), training and evaluation."""
        return {**self.skipped_before, **self.train_data.skipped_videos(), **self.eval_data.dataset.skipped_videos()}

    # ---- files ------------------------------------------------------------------------------------------

    def _write_start(self) -> None:
        """Rank 0 writes the run's first files; every rank resumes from the checkpoint, if there is one."""
        if self.world.main:
            self.dir.mkdir(parents=True, exist_ok=True)
            results.write_text(self.dir / results.CONFIG, save_yaml(self.config.to_dict()))
            env = results.environment(self.device)
            env["precision"] = self.precision
            env["not_measured"] = self.measure.not_measured
            results.write_json(self.dir / results.ENV, env)
        if self.checkpoints.restore():
            self.resumed_at.append(self.clock.used.steps)

    def _write_evals(self) -> None:
        if self.evaluation.rows:
            results.write_parquet(self.dir / results.EVALS, self.evaluation.rows)

    def _finish(self, status: str, error: str | None, trace: str | None = None) -> None:
        if self.world.size == 1 or status not in ("failed", "oom"):  # a rank that fails alone waits on no other
            try:
                self._flush()
            except Diverged:
                pass
        figures = self.measure.summary()
        if self.world.size > 1 and status not in ("failed", "oom"):  # every rank ends here together
            figures = measure.combine_ranks(self.world.gather(figures))
        if not self.world.main:
            return
        if status != "failed":
            self.log.finish()
            self._write_evals()
        used = self.clock.used
        default = [r for r in self.evaluation.rows if r["setting"] == "default"]
        final = default[-1] if default and default[-1]["point"] == 1.0 else None
        summary = {
            "status": status, "error": error, "run_id": self.dir.name, "budget": str(self.budget),
            "methods": [str(m) for m in self.config.methods] or ["baseline"],
            "top1": final["top1"] if final else None, "top5": final["top5"] if final else None,
            "final_eval": {r["setting"]: r["top1"] for r in self.evaluation.rows if r["point"] == 1.0},
            "train_s": used.s, "world_size": self.world.size, "train_wall_s": used.s / self.world.size,
            "eval_s": self.clock.off_clock_s.get("eval", 0.0),
            "checkpoint_s": self.clock.off_clock_s.get("checkpoint", 0.0),
            "steps": used.steps, "samples": used.samples, "total_flops": used.flops,
            "clips_per_s": used.samples / used.s if used.s else None,
            **data_wait_figures(self.data_wait_s, used.s / self.world.size, self.train_data.reads_ahead),
            "trainable_params": _trainable(self.model), "params": sum(p.numel() for p in self.model.parameters()),
            "resumed_at": self.resumed_at, "skipped_videos": self._skipped_videos(), "init": self.init,
            **figures, **self.cpu.summary(), "precision": self.precision,
            **({"measured_on": figures.get("measured_on", f"rank 0 of {self.world.size}")}
               if self.world.size > 1 else {}),
            **self.methods.summary(), **(self.compiled.summary() if self.compiled else {}),
        }
        peak, source = mfu.device_peak(self.device, self.precision)
        achieved = used.flops / used.s if used.s else None
        summary.update(achieved_flops_per_s=achieved, peak_flops_per_s=peak, peak_source=source,
                       mfu=achieved / peak if achieved and peak else None)
        if status == "oom" and self.last_shape is not None:
            summary["oom_shape"] = dict(self.last_shape._asdict())
            summary["oom_during"] = self.activity
        if trace:
            summary["traceback"] = trace
        results.write_json(self.dir / results.SUMMARY, summary)
        self.status = status
        if self.trackers is not None:
            self.trackers.summary(summary)


def _trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
