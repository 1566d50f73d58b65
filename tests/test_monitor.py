"""The GPU monitor against a stand-in for the pynvml functions it calls (the library boundary only)."""

import os
import time
from types import SimpleNamespace

import pytest
import torch

from vtbench.engine.monitor import GpuMonitor, nvml_device, open_monitor


class FakeNVML:
    """What pynvml offers the monitor, with counters the test moves by hand."""

    class NVMLError(Exception):
        pass

    def __init__(self, energy=True, per_process=True):
        self.energy_mj, self.power_mw, self.util, self.used = 1_000_000, 250_000, 80, 3 * 2**30
        self.process_used = 2 * 2**30
        self.has_energy, self.per_process = energy, per_process
        self.shut = False

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shut = True

    def nvmlDeviceGetHandleByIndex(self, index):
        return f"gpu{index}"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.has_energy:
            raise self.NVMLError("Not Supported")
        return self.energy_mj

    def nvmlDeviceGetPowerUsage(self, handle):
        return self.power_mw

    def nvmlDeviceGetUtilizationRates(self, handle):
        return SimpleNamespace(gpu=self.util, memory=10)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=self.used, total=80 * 2**30, free=77 * 2**30)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        if not self.per_process:
            return []
        return [SimpleNamespace(pid=os.getpid(), usedGpuMemory=self.process_used),
                SimpleNamespace(pid=os.getpid() + 1, usedGpuMemory=5 * 2**30)]


def _sample(monitor, at, power_w=None):
    if power_w is not None:
        monitor.nvml.power_mw = power_w * 1000
    s = monitor.sample()
    s["time"] = at
    monitor.record(s)


def test_energy_is_the_counter_difference_over_each_window():
    nvml = FakeNVML()
    monitor = GpuMonitor(0, nvml=nvml)
    _sample(monitor, 0.0)
    nvml.energy_mj += 5_000_000  # 5 kJ
    first = monitor.window()
    assert first["energy_j"] == pytest.approx(5000) and first["energy_source"] == "counter"
    nvml.energy_mj += 1_500_000
    _sample(monitor, 1.0)
    second = monitor.window()
    assert second["energy_j"] == pytest.approx(1500)
    assert monitor.total()["energy_j"] == pytest.approx(6500)


def test_without_an_energy_counter_power_is_integrated_and_marked():
    nvml = FakeNVML(energy=False)
    monitor = GpuMonitor(0, nvml=nvml)
    for at, watts in [(0.0, 100), (1.0, 200), (3.0, 200)]:
        _sample(monitor, at, watts)
    figures = monitor.window()
    assert figures["energy_source"] == "integrated power"
    assert figures["energy_j"] == pytest.approx(150 + 400)  # trapezoids: 1 s at 150 W mean, 2 s at 200 W
    assert figures["power_w"] == pytest.approx(500 / 3)


def test_process_memory_where_nvml_reports_it_device_memory_otherwise():
    monitor = GpuMonitor(0, nvml=FakeNVML())
    _sample(monitor, 0.0)
    figures = monitor.window()
    assert figures["mem_device"] == 2 * 2**30 and figures["mem_device_scope"] == "process"
    device_only = GpuMonitor(0, nvml=FakeNVML(per_process=False))
    _sample(device_only, 0.0)
    figures = device_only.window()
    assert figures["mem_device"] == 3 * 2**30 and figures["mem_device_scope"] == "device"


def test_windows_keep_peaks_and_means_of_their_own_samples():
    nvml = FakeNVML()
    monitor = GpuMonitor(0, nvml=nvml)
    for used, util in [(1, 50), (4, 70), (2, 90)]:
        nvml.process_used, nvml.util = used * 2**30, util
        _sample(monitor, float(used))
    figures = monitor.window()
    assert figures["mem_device"] == 4 * 2**30 and figures["util"] == pytest.approx(70) and figures["samples"] == 3
    nvml.process_used = 2**30
    _sample(monitor, 9.0)
    assert monitor.window()["mem_device"] == 2**30  # a new window forgets the old peak
    assert monitor.total()["mem_device"] == 4 * 2**30  # the run keeps it


def test_the_thread_samples_until_stopped():
    nvml = FakeNVML()
    monitor = GpuMonitor(0, interval=0.01, nvml=nvml).start()
    deadline = time.monotonic() + 10
    while monitor.total()["samples"] < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    monitor.stop()
    count = monitor.total()["samples"]
    assert count >= 3 and nvml.shut
    time.sleep(0.05)
    assert monitor.total()["samples"] == count


def test_without_a_gpu_the_monitor_says_why():
    monitor, reason = open_monitor(torch.device("cpu"))
    assert monitor is None and "no GPU" in reason


class _Props:
    def __init__(self, uuid):
        self.uuid = uuid


@pytest.mark.parametrize("uuid, visible, expected", [
    ("58e0e3a4-1111-2222-3333-444455556666", "3", "GPU-58e0e3a4-1111-2222-3333-444455556666"),  # torch knows it
    ("MIG-9a1b", "", "MIG-9a1b"),
    ("", "2,5", 5),  # no UUID from torch: the visible index mapped back to NVML's
    ("", "GPU-abc,GPU-def", "GPU-def"),  # a list of UUIDs, not numbers
    ("", "", 1),
])
def test_nvml_is_asked_for_the_gpu_cuda_runs_on(monkeypatch, uuid, visible, expected):
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: _Props(uuid))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert nvml_device(torch.device("cuda", 1)) == expected
