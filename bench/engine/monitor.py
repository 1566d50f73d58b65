"""GPU monitor: NVML (the nvidia-ml-py package, `import pynvml`) sampled on a background thread.

Every `interval` seconds it reads the device's memory in use (this process's own where NVML reports it,
the whole device's otherwise), power and utilisation. It never touches CUDA, so it never synchronises the
training stream. Energy is the difference of NVML's total-energy counter over a window (an evaluation
window, or the run); where the counter is missing it integrates the sampled power instead and says so.
"""

import os
import threading
import time
from typing import Any

import pynvml
import torch


class GpuMonitor:
    def __init__(self, device: int | str = 0, interval: float = 0.1, nvml: Any = None):
        """`device`: NVML's index of the GPU, or its UUID ("GPU-..." or "MIG-...")."""
        nvml = pynvml if nvml is None else nvml
        self.nvml, self.interval = nvml, interval
        nvml.nvmlInit()
        if isinstance(device, str):
            self.handle = nvml.nvmlDeviceGetHandleByUUID(device)
        else:
            self.handle = nvml.nvmlDeviceGetHandleByIndex(device)
        self.energy_source = "counter" if self._energy_mj() is not None else "integrated power"
        self.memory_scope = "process" if self._process_memory() is not None else "device"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._window = self._fresh_window()
        self._run = self._fresh_window()

    # ---- NVML reads, each None where the device does not support it --------------------------------------

    def _read(self, function, *args):
        try:
            return function(self.handle, *args)
        except self.nvml.NVMLError:
            return None

    def _energy_mj(self) -> float | None:
        return self._read(self.nvml.nvmlDeviceGetTotalEnergyConsumption)

    def _process_memory(self) -> int | None:
        processes = self._read(self.nvml.nvmlDeviceGetComputeRunningProcesses) or []
        mine = [p.usedGpuMemory for p in processes if p.pid == os.getpid() and p.usedGpuMemory is not None]
        return sum(mine) if mine else None

    def sample(self) -> dict[str, float | None]:
        memory = self._process_memory() if self.memory_scope == "process" else None
        if memory is None:
            info = self._read(self.nvml.nvmlDeviceGetMemoryInfo)
            memory = info.used if info is not None else None
        power = self._read(self.nvml.nvmlDeviceGetPowerUsage)  # milliwatts
        util = self._read(self.nvml.nvmlDeviceGetUtilizationRates)
        return {"time": time.monotonic(), "mem_device": memory, "power_w": power / 1000 if power is not None else None,
                "util": util.gpu if util is not None else None}

    # ---- windows ---------------------------------------------------------------------------------------------

    def _fresh_window(self) -> dict[str, Any]:
        return {"began": time.monotonic(), "energy_mj": self._energy_mj(), "samples": 0, "mem_device": None,
                "power_sum": 0.0, "power_n": 0, "util_sum": 0.0, "util_n": 0, "integrated_j": 0.0, "last": None}

    def _add(self, window: dict[str, Any], s: dict[str, float | None]) -> None:
        window["samples"] += 1
        if s["mem_device"] is not None:
            window["mem_device"] = max(window["mem_device"] or 0, s["mem_device"])
        if s["power_w"] is not None:
            window["power_sum"] += s["power_w"]
            window["power_n"] += 1
            last = window["last"]
            if last is not None and last["power_w"] is not None:  # trapezoid between samples
                window["integrated_j"] += (s["power_w"] + last["power_w"]) / 2 * (s["time"] - last["time"])
        if s["util"] is not None:
            window["util_sum"] += s["util"]
            window["util_n"] += 1
        window["last"] = s

    def record(self, s: dict[str, float | None] | None = None) -> None:
        s = s or self.sample()
        with self._lock:
            self._add(self._window, s)
            self._add(self._run, s)

    def _summarise(self, window: dict[str, Any]) -> dict[str, Any]:
        energy = None
        now = self._energy_mj() if self.energy_source == "counter" else None
        if now is not None and window["energy_mj"] is not None:
            energy = (now - window["energy_mj"]) / 1000
        elif window["power_n"]:
            energy = window["integrated_j"]
        return {
            "energy_j": energy, "energy_source": self.energy_source if energy is not None else None,
            "power_w": window["power_sum"] / window["power_n"] if window["power_n"] else None,
            "util": window["util_sum"] / window["util_n"] if window["util_n"] else None,
            "mem_device": window["mem_device"], "mem_device_scope": self.memory_scope,
            "samples": window["samples"], "seconds": time.monotonic() - window["began"],
        }

    def window(self) -> dict[str, Any]:
        """Figures since the last call (or the start), and a new window from now."""
        with self._lock:
            figures, self._window = self._summarise(self._window), self._fresh_window()
        return figures

    def total(self) -> dict[str, Any]:
        with self._lock:
            return self._summarise(self._run)

    def latest(self) -> dict[str, float | None] | None:
        with self._lock:
            return self._window["last"]

    # ---- the thread ------------------------------------------------------------------------------------------

    def start(self) -> "GpuMonitor":
        def loop():
            while not self._stop.is_set():
                self.record()
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=loop, name="vtbench-gpu-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError:
            pass


def nvml_device(device) -> int | str:
    """NVML's name for a CUDA device: its UUID where torch knows it (NVML numbers every GPU of the machine, CUDA only
    the visible ones, and CUDA_VISIBLE_DEVICES may list UUIDs), else the visible index mapped back to NVML's."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    uuid = str(getattr(torch.cuda.get_device_properties(index), "uuid", "") or "")
    if uuid:
        return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if not visible:
        return index
    entry = visible[index]
    return int(entry) if entry.isdigit() else entry


def open_monitor(device, interval: float = 0.1) -> tuple[GpuMonitor | None, str | None]:
    """A started monitor for a CUDA device, or None and the reason it could not measure."""
    if device.type != "cuda":
        return None, "no GPU: NVML figures (device memory, power, energy, utilisation) are measured on CUDA devices"
    try:
        return GpuMonitor(nvml_device(device), interval, pynvml).start(), None
    except Exception as err:  # noqa: BLE001 - any NVML failure leaves the run without these figures, said why
        return None, f"NVML unavailable: {type(err).__name__}: {err}"
