"""Peak FLOP/s of the device, for model FLOP utilisation (MFU = achieved FLOP/s / peak FLOP/s).

GPUs: the vendors' dense (no sparsity) peaks, by device name and precision. CPUs: no table can know them, so
a float32 matrix multiply is timed once per machine and thread count, and the figure is cached in
~/.cache/vtbench/cpu_peak.json.
"""

import json
import os
import platform
import time
from pathlib import Path

import torch

# (substring of torch.cuda.get_device_name, {precision: TFLOP/s dense})
GPU_PEAKS_TFLOPS: list[tuple[str, dict[str, float]]] = [
    ("H200", {"bf16": 989.4, "fp32": 66.9}),
    ("H100 PCIe", {"bf16": 756.0, "fp32": 51.2}),
    ("H100", {"bf16": 989.4, "fp32": 66.9}),
    ("A100", {"bf16": 312.0, "fp32": 19.5}),
    ("A10", {"bf16": 125.0, "fp32": 31.2}),
    ("L40S", {"bf16": 362.0, "fp32": 91.6}),
    ("L4", {"bf16": 121.0, "fp32": 30.3}),
    ("RTX 4090", {"bf16": 165.2, "fp32": 82.6}),
    ("V100", {"bf16": 125.0, "fp32": 15.7}),  # no bf16: its fp16 tensor-core peak
    ("T4", {"bf16": 65.0, "fp32": 8.1}),
]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vtbench" / "cpu_peak.json"


def gpu_peak(name: str, precision: str) -> float | None:
    for key, peaks in GPU_PEAKS_TFLOPS:
        if key in name:
            return peaks[precision] * 1e12
    return None


def measure_cpu_peak(size: int = 1024, seconds: float = 0.5) -> float:
    """float32 FLOP/s of a square matrix multiply on this CPU, best of a few timed batches."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        began = time.perf_counter()
        for _ in range(4):
            a @ b
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - began))
    return best


def cpu_peak() -> float:
    key = f"{platform.processor() or platform.machine()}|{os.cpu_count()} cores|{torch.get_num_threads()} threads"
    try:
        cached = json.loads(CACHE.read_text())
    except (OSError, ValueError):
        cached = {}
    if key not in cached:
        cached[key] = measure_cpu_peak()
        try:
            CACHE.parent.mkdir(parents=True, exist_ok=True)
            CACHE.write_text(json.dumps(cached, indent=2))
        except OSError:
            pass  # a read-only home: measure again next time
    return cached[key]


def device_peak(device: torch.device, precision: str) -> tuple[float | None, str]:
    """(peak FLOP/s, where the figure comes from)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = gpu_peak(name, precision)
        return peak, f"table: {name}, {precision}" if peak else f"unknown GPU {name!r}: no peak in the table"
    return cpu_peak(), "measured: float32 matmul on this CPU"
