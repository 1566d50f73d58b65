"""Memory, power and energy of a run: the CUDA allocator, NVML (through `vtbench.engine.monitor`) and, on any
device, the process's peak resident memory and CPU time. Figures that cannot be measured here are None,
never zero, and `not_measured` says why.
"""

import resource
import sys
from typing import Any

import torch

from vtbench.engine.monitor import open_monitor


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Measurements:
    """Three memory columns (allocated, reserved, device), power and energy, per step, window and run."""

    def __init__(self, device: torch.device, interval: float = 0.1):
        self.device = device
        self.cuda = device.type == "cuda"
        self.monitor, reason = open_monitor(device, interval)
        self.not_measured: dict[str, str] = {}
        if reason:
            self.not_measured.update(mem_device=reason, power_w=reason, energy_j=reason)
        if not self.cuda:
            self.not_measured.update(mem_allocated="no GPU: allocator peaks are read from CUDA's caching allocator",
                                     mem_reserved="no GPU: allocator peaks are read from CUDA's caching allocator")
        self.run_peaks: dict[str, int] = {}

    def step_columns(self) -> dict[str, Any]:
        """Cheap per-step figures: allocator peaks of this window, the latest NVML sample, peak RSS."""
        columns: dict[str, Any] = {"mem_allocated": None, "mem_reserved": None, "mem_device": None, "power_w": None,
                                   "mem_rss": peak_rss_bytes()}
        if self.cuda:
            columns["mem_allocated"] = torch.cuda.max_memory_allocated(self.device)
            columns["mem_reserved"] = torch.cuda.max_memory_reserved(self.device)
        latest = self.monitor.latest() if self.monitor else None
        if latest:
            columns["mem_device"], columns["power_w"] = latest["mem_device"], latest["power_w"]
        return columns

    def _allocator(self) -> dict[str, int]:
        if not self.cuda:
            return {}
        stats = torch.cuda.memory_stats(self.device)
        return {"mem_allocated": torch.cuda.max_memory_allocated(self.device),
                "mem_reserved": torch.cuda.max_memory_reserved(self.device),
                "alloc_retries": stats.get("num_alloc_retries", 0)}

    def window(self) -> dict[str, Any]:
        """Figures of the window since the last call (an evaluation window); allocator peaks start afresh."""
        figures: dict[str, Any] = {"energy_j": None, "power_w": None, "mem_device": None}
        if self.monitor:
            nvml = self.monitor.window()
            figures.update(energy_j=nvml["energy_j"], power_w=nvml["power_w"], mem_device=nvml["mem_device"])
        allocator = self._allocator()
        for key in ("mem_allocated", "mem_reserved"):
            if key in allocator:
                figures[key] = allocator[key]
                self.run_peaks[key] = max(self.run_peaks.get(key, 0), allocator[key])
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        return figures

    def summary(self) -> dict[str, Any]:
        allocator = self._allocator()
        figures: dict[str, Any] = {
            "mem_allocated": max(self.run_peaks.get("mem_allocated", 0), allocator.get("mem_allocated", 0)) or None,
            "mem_reserved": max(self.run_peaks.get("mem_reserved", 0), allocator.get("mem_reserved", 0)) or None,
            "mem_device": None, "alloc_retries": allocator.get("alloc_retries"), "energy_j": None, "power_w": None,
            "mem_rss": peak_rss_bytes(), "cpu_s": cpu_seconds(),
        }
        if self.monitor:
            nvml = self.monitor.total()
            figures.update(mem_device=nvml["mem_device"], mem_device_scope=nvml["mem_device_scope"],
                           energy_j=nvml["energy_j"], energy_source=nvml["energy_source"], power_w=nvml["power_w"],
                           util=nvml["util"])
        figures["not_measured"] = self.not_measured
        return figures

    def close(self) -> None:
        if self.monitor:
            self.monitor.stop()
            self.monitor = None
