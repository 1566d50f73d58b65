"""Memory, power and energy of a run: the CUDA allocator, NVML (through `vtbench.engine.monitor`) and, on any
device, the process's peak resident memory and CPU time. Figures that cannot be measured here are None, never
zero, and `not_measured` says why.

Peaks are kept per window, and a window is either training or evaluation (DESIGN.md: memory columns describe
training only). The runner closes the training window when an evaluation begins and the evaluation window when
it ends; checkpoint writes are left out of both. Resetting a peak: the CUDA allocator's
(`reset_peak_memory_stats`) and, on Linux, the resident-memory high-water mark (`/proc/self/clear_refs`), so
`mem_rss` is a training peak too. A method may begin a named phase (frozen_spatial's stage 2): later training
windows also count towards `<phase>_mem_*`.
"""

import resource
import sys
from contextlib import contextmanager
from typing import Any

import torch

from .monitor import open_monitor

PEAKS = ("mem_allocated", "mem_reserved", "mem_rss")
STATUS = "/proc/self/status"
CLEAR_REFS = "/proc/self/clear_refs"


def peak_rss_bytes() -> int:
    """Peak resident memory of this process since the last reset (VmHWM on Linux, ru_maxrss elsewhere)."""
    try:
        with open(STATUS) as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def reset_peak_rss() -> bool:
    """Start the resident-memory high-water mark afresh (Linux 4.0+); False where that cannot be done."""
    try:
        with open(CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _add(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else a + b


class Measurements:
    """Three memory columns (allocated, reserved, device), peak RSS, power and energy, per step, window and run,
    kept apart for training and evaluation."""

    def __init__(self, device: torch.device, interval: float = 0.1):
        self.device = device
        self.cuda = device.type == "cuda"
        self.monitor, reason = open_monitor(device, interval)
        self.not_measured: dict[str, str] = {}
        if reason:
            self.not_measured.update(mem_device=reason, power_w=reason, energy_j=reason)
        if not self.cuda:
            why = "no GPU: allocator peaks are read from CUDA's caching allocator"
            self.not_measured.update(mem_allocated=why, mem_reserved=why)
        self.rss_windows = reset_peak_rss()
        if not self.rss_windows:
            self.not_measured["mem_rss"] = ("the resident-memory peak cannot be reset here (/proc/self/clear_refs): "
                                            "mem_rss is the process's peak and includes evaluation")
        self.peaks: dict[str, dict[str, Any]] = {"train": {}, "eval": {}}  # running maxima
        self.phase: str | None = None
        self.phase_peaks: dict[str, dict[str, Any]] = {}
        self.energy: dict[str, float | None] = {"train": None, "eval": None}
        self._reset()

    # ---- windows -------------------------------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        """Peaks since the last reset."""
        figures: dict[str, Any] = {"mem_allocated": None, "mem_reserved": None, "mem_rss": peak_rss_bytes()}
        if self.cuda:
            figures["mem_allocated"] = torch.cuda.max_memory_allocated(self.device)
            figures["mem_reserved"] = torch.cuda.max_memory_reserved(self.device)
        return figures

    def _reset(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        if self.rss_windows:
            reset_peak_rss()

    def _close(self, kind: str) -> dict[str, Any]:
        """Fold this window's peaks (and NVML figures) into `kind`'s, start a new window, return its figures."""
        figures = self._read()
        if self.monitor:
            nvml = self.monitor.window()
            figures.update(mem_device=nvml["mem_device"], energy_j=nvml["energy_j"], power_w=nvml["power_w"])
            self.energy[kind] = _add(self.energy[kind], nvml["energy_j"])
        else:
            figures.update(mem_device=None, energy_j=None, power_w=None)
        targets = [self.peaks[kind]]
        if kind == "train" and self.phase is not None:
            targets.append(self.phase_peaks.setdefault(self.phase, {}))
        for target in targets:
            for key in (*PEAKS, "mem_device"):
                target[key] = _max(target.get(key), figures[key])
        self._reset()
        return figures

    def end_training_window(self) -> dict[str, Any]:
        """At an evaluation: the training window that ends here (peaks, NVML memory, energy, power)."""
        return self._close("train")

    def end_eval_window(self) -> dict[str, Any]:
        """After an evaluation: its peaks, as `eval_*` columns."""
        figures = self._close("eval")
        return {f"eval_{key}": figures[key] for key in (*PEAKS, "mem_device", "energy_j")}

    def _split_training(self) -> None:
        """Fold the training window so far into the training peaks (and its phase's) and start afresh, leaving
        NVML's window open."""
        figures = self._read()
        for target in [self.peaks["train"]] + ([self.phase_peaks[self.phase]] if self.phase else []):
            for key in PEAKS:
                target[key] = _max(target.get(key), figures[key])
        self._reset()

    @contextmanager
    def excluded(self):
        """Work inside (a checkpoint write) counts neither as training nor as evaluation."""
        self._split_training()
        try:
            yield
        finally:
            self._reset()

    def begin_phase(self, name: str) -> None:
        """Training windows from now on also count towards `<name>_mem_*` (the window so far does not)."""
        self._split_training()
        self.phase = name
        self.phase_peaks.setdefault(name, {})

    def step_columns(self) -> dict[str, Any]:
        """Cheap per-step figures: this training window's peaks so far, the latest NVML sample."""
        columns: dict[str, Any] = {**self._read(), "mem_device": None, "power_w": None}
        latest = self.monitor.latest() if self.monitor else None
        if latest:
            columns["mem_device"], columns["power_w"] = latest["mem_device"], latest["power_w"]
        return columns

    # ---- the run ---------------------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Training peaks (the window still open counts as training), evaluation peaks, phases, energy."""
        self._close("train")
        train, evaluation = self.peaks["train"], self.peaks["eval"]
        figures: dict[str, Any] = {key: train.get(key) for key in (*PEAKS, "mem_device")}
        figures.update({f"eval_{key}": evaluation.get(key) for key in (*PEAKS, "mem_device")})
        for phase, peaks in self.phase_peaks.items():
            figures.update({f"{phase}_{key}": peaks.get(key) for key in (*PEAKS, "mem_device")})
        figures.update(energy_j=self.energy["train"], eval_energy_j=self.energy["eval"], power_w=None,
                       cpu_s=cpu_seconds(), alloc_retries=None)
        if self.cuda:
            figures["alloc_retries"] = torch.cuda.memory_stats(self.device).get("num_alloc_retries", 0)
        if self.monitor:
            nvml = self.monitor.total()
            figures.update(mem_device_scope=nvml["mem_device_scope"], energy_source=nvml["energy_source"],
                           power_w=nvml["power_w"], util=nvml["util"])
        figures["not_measured"] = self.not_measured
        return figures

    def state_dict(self) -> dict[str, Any]:
        return {"peaks": self.peaks, "phase": self.phase, "phase_peaks": self.phase_peaks, "energy": self.energy}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.peaks, self.phase = state["peaks"], state["phase"]
        self.phase_peaks, self.energy = state["phase_peaks"], state["energy"]

    def close(self) -> None:
        if self.monitor:
            self.monitor.stop()
            self.monitor = None
