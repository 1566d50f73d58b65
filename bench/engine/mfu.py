"""Peak FLOP/s of the device, for model FLOP utilisation (MFU = achieved FLOP/s / peak FLOP/s).

GPUs: the vendors' dense (no sparsity) peaks, by the model in the device name (matched exactly: an L40 is
not an L4) and precision; a GPU without a row has no peak and no MFU. CPUs: no table can know them, so
a float32 matrix multiply is timed once per machine and thread count, and the figure is cached in
~/.cache/vtbench/cpu_peak.json.
"""

import json
import os
import platform
import re
import time
from pathlib import Path

import torch

# {model, as gpu_model names it: {precision: TFLOP/s dense}}. A name matches its own row only: an L40 is not an
# L4, a GH200 not an H200, a V100S not a V100, an A10G not an A10; a name without a row has no peak (MFU is left
# empty and the summary says why) rather than another card's. Bare names (H100, V100) are the SXM parts.
GPU_PEAKS_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989.4, "fp32": 66.9},
    "H200 NVL": {"bf16": 835.5, "fp32": 60.0},
    "GH200": {"bf16": 989.4, "fp32": 66.9},  # the Hopper GPU of a Grace Hopper superchip
    "H100": {"bf16": 989.4, "fp32": 66.9},
    "H100 PCIE": {"bf16": 756.0, "fp32": 51.2},
    "H100 NVL": {"bf16": 835.5, "fp32": 60.0},
    "A100": {"bf16": 312.0, "fp32": 19.5},  # 40GB and 80GB alike
    "A100 PCIE": {"bf16": 312.0, "fp32": 19.5},
    "A10": {"bf16": 125.0, "fp32": 31.2},
    "L40S": {"bf16": 362.0, "fp32": 91.6},
    "L40": {"bf16": 181.0, "fp32": 90.5},
    "L4": {"bf16": 121.0, "fp32": 30.3},
    "RTX 4090": {"bf16": 165.2, "fp32": 82.6},
    "V100": {"bf16": 125.0, "fp32": 15.7},  # no bf16: its fp16 tensor-core peak
    "V100 PCIE": {"bf16": 112.0, "fp32": 14.0},
    "T4": {"bf16": 65.0, "fp32": 8.1},
}
# words of a device name that do not change the peak: the brand, memory size and kind, the SXM form factor
_BRANDS = {"NVIDIA", "TESLA", "GEFORCE"}
_NOT_THE_MODEL = re.compile(r"\d+GB?|HBM\w*|SXM\d*")
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vtbench" / "cpu_peak.json"


def gpu_model(name: str) -> str:
    """The model in a device name as NVML and torch.cuda give it, the key of its row: "NVIDIA A100-SXM4-80GB" is
    "A100", "NVIDIA H100 PCIe" "H100 PCIE", "NVIDIA GeForce RTX 4090" "RTX 4090"."""
    words = re.split(r"[\s_-]+", name.strip().upper())
    return " ".join(w for w in words if w and w not in _BRANDS and not _NOT_THE_MODEL.fullmatch(w))


def gpu_peak(name: str, precision: str) -> float | None:
    """The dense peak of the GPU named, or None where the table has no row for exactly its model."""
    peaks = GPU_PEAKS_TFLOPS.get(gpu_model(name))
    return peaks[precision] * 1e12 if peaks else None


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
        if peak is None:
            return None, f"unknown GPU {name!r} (model {gpu_model(name)!r}): no peak in the table, no MFU"
        return peak, f"table: {name} as {gpu_model(name)}, {precision}"
    return cpu_peak(), "measured: float32 matmul on this CPU"
