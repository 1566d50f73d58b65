"""Memory, power and energy of a run: the CUDA allocator, NVML (through `vtbench.engine.monitor`) and, on any
device, the process's peak resident memory and CPU time. Figures that cannot be measured here are None, never
zero, and `not_measured` says why.

Peaks are kept per window, and a window is either training or evaluation (docs/design.md, "What a run writes":
memory columns describe training only). The runner closes the training window when an evaluation begins and the
evaluation window when it ends; checkpoint writes are left out of both. Resetting a peak: the CUDA allocator's
(`reset_peak_memory_stats`) and, on Linux, the resident-memory high-water mark (`/proc/self/clear_refs`), so
`mem_rss` is a training peak too. A method may begin a named phase (frozen_spatial's stage 2): later training
windows also count towards `<phase>_mem_*`.
"""

import ctypes
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


def release_freed_memory() -> None:
    """Hand memory that was freed back to the OS (glibc keeps freed heap pages resident otherwise), so that a
    window's resident-memory peak starts from what the process holds; nothing where glibc is absent."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _add(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else a + b


def _fresh_window() -> dict[str, Any]:
    return {"energy_j": None, "power_ws": None, "seconds": 0.0}


def _accumulate(window: dict[str, Any], segment: dict[str, Any]) -> None:
    """Energy adds up over a window's segments; power is averaged over their time."""
    window["energy_j"] = _add(window["energy_j"], segment["energy_j"])
    if segment["power_w"] is not None:
        window["power_ws"] = _add(window["power_ws"], segment["power_w"] * segment["seconds"])
        window["seconds"] += segment["seconds"]


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
        self.kind = "train"  # of the segment under way: train, eval or excluded
        self.window = _fresh_window()  # the training since the last evaluation, over however many segments
        self.cpu_began, self.cpu_before = cpu_seconds(), 0.0  # this run's CPU time: from here, plus before a resume
        self._reset()

    # ---- segments and windows ------------------------------------------------------------------------------
    # A segment is a stretch of one kind between two resets of the peaks. A training window (reported on the
    # evaluation rows) is the training segments since the previous evaluation: a phase or a checkpoint write
    # splits it, without its figures leaving out anything but the checkpoint.

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

    def _end_segment(self, next_kind: str) -> dict[str, Any]:
        """Fold the segment under way into its kind's figures (a training one also into its phase's and into the
        training window), start a segment of `next_kind`; returns the ended segment's figures."""
        figures = {**self._read(), "mem_device": None, "energy_j": None, "power_w": None, "seconds": 0.0}
        if self.monitor:
            nvml = self.monitor.window()
            figures.update({k: nvml[k] for k in ("mem_device", "energy_j", "power_w", "seconds")})
        if self.kind != "excluded":
            targets = [self.peaks[self.kind]]
            if self.kind == "train":
                targets += [self.window] + ([self.phase_peaks[self.phase]] if self.phase else [])
                _accumulate(self.window, figures)
            for target in targets:
                for key in (*PEAKS, "mem_device"):
                    target[key] = _max(target.get(key), figures[key])
            self.energy[self.kind] = _add(self.energy[self.kind], figures["energy_j"])
        self._reset()
        self.kind = next_kind
        return figures

    def end_training_window(self) -> dict[str, Any]:
        """At an evaluation: the training window that ends here (peaks, NVML memory, energy, mean power)."""
        self._end_segment("eval")
        window, self.window = self.window, _fresh_window()
        power = window["power_ws"] / window["seconds"] if window["seconds"] and window["power_ws"] is not None \
            else None
        return {**{key: window.get(key) for key in (*PEAKS, "mem_device")}, "energy_j": window["energy_j"],
                "power_w": power}

    def end_eval_window(self) -> dict[str, Any]:
        """After an evaluation: its peaks, as `eval_*` columns."""
        release_freed_memory()
        figures = self._end_segment("train")
        return {f"eval_{key}": figures[key] for key in (*PEAKS, "mem_device", "energy_j")}

    @contextmanager
    def excluded(self):
        """Work inside (a checkpoint write) counts neither as training nor as evaluation."""
        resume = self.kind
        self._end_segment("excluded")
        try:
            yield
        finally:
            self._end_segment(resume)

    def begin_phase(self, name: str) -> None:
        """Training from now on also counts towards `<name>_mem_*` (what came before does not)."""
        self._end_segment(self.kind)
        self.phase = name
        self.phase_peaks.setdefault(name, {})

    def step_columns(self) -> dict[str, Any]:
        """Cheap figures for a log row: the training peaks since the last evaluation, checkpoint or phase (each
        resets them), the latest NVML sample."""
        columns: dict[str, Any] = {**self._read(), "mem_device": None, "power_w": None}
        latest = self.monitor.latest() if self.monitor else None
        if latest:
            columns["mem_device"], columns["power_w"] = latest["mem_device"], latest["power_w"]
        return columns

    # ---- the run ---------------------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Training peaks, evaluation peaks (an evaluation cut short by an error counts as evaluation), phases,
        energy."""
        self._end_segment(self.kind)
        train, evaluation = self.peaks["train"], self.peaks["eval"]
        figures: dict[str, Any] = {key: train.get(key) for key in (*PEAKS, "mem_device")}
        figures.update({f"eval_{key}": evaluation.get(key) for key in (*PEAKS, "mem_device")})
        for phase, peaks in self.phase_peaks.items():
            figures.update({f"{phase}_{key}": peaks.get(key) for key in (*PEAKS, "mem_device")})
        figures.update(energy_j=self.energy["train"], eval_energy_j=self.energy["eval"], power_w=None,
                       cpu_s=self._cpu_s(), alloc_retries=None)
        if self.cuda:
            figures["alloc_retries"] = torch.cuda.memory_stats(self.device).get("num_alloc_retries", 0)
        if self.monitor:
            nvml = self.monitor.total()
            figures.update(mem_device_scope=nvml["mem_device_scope"], energy_source=nvml["energy_source"],
                           power_w=nvml["power_w"], util=nvml["util"])
        figures["not_measured"] = self.not_measured
        return figures

    def _cpu_s(self) -> float:
        """The CPU time of this run in this process (not of runs the process trained before it), with that of the
        attempts before a resume."""
        return self.cpu_before + cpu_seconds() - self.cpu_began

    def state_dict(self) -> dict[str, Any]:
        return {"peaks": self.peaks, "phase": self.phase, "phase_peaks": self.phase_peaks, "energy": self.energy,
                "window": self.window, "cpu_s": self._cpu_s()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.peaks, self.phase = state["peaks"], state["phase"]
        self.phase_peaks, self.energy, self.window = state["phase_peaks"], state["energy"], state["window"]
        self.cpu_began, self.cpu_before = cpu_seconds(), state.get("cpu_s", 0.0)

    def close(self) -> None:
        if self.monitor:
            self.monitor.stop()
            self.monitor = None


SUMMED = ("energy_j", "eval_energy_j", "power_w", "cpu_s", "alloc_retries")


def combine_ranks(ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's figures from each rank's `summary()`: energy, power and CPU time summed over the ranks (a run of
    N GPUs draws N GPUs' power), memory peaks the largest rank's (each rank holds its own device); the rest rank
    0's. A sum that a rank could not measure is not measured."""
    figures = dict(ranks[0])
    for key in ranks[0]:
        values = [rank.get(key) for rank in ranks]
        if key in SUMMED:
            figures[key] = None if any(v is None for v in values) else sum(values)
        elif key.endswith((*PEAKS, "mem_device")) and all(isinstance(v, (int, float)) for v in values):
            figures[key] = max(values)
    figures["measured_on"] = (f"all {len(ranks)} ranks: energy, power and CPU time summed, memory peaks the "
                              "largest rank's; CPU threads and load rank 0's")
    return figures
