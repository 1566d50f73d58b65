"""Memory and CPU figures of this process, and the CUDA allocator peaks where there is a GPU."""

import resource
import sys

import torch


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def memory(device: torch.device) -> dict[str, float | None]:
    """The three memory columns (None where not measurable here) plus the process's peak resident memory."""
    figures: dict[str, float | None] = {
        "mem_allocated": None, "mem_reserved": None, "mem_device": None, "mem_rss": peak_rss_bytes()
    }
    if device.type == "cuda":
        figures["mem_allocated"] = torch.cuda.max_memory_allocated(device)
        figures["mem_reserved"] = torch.cuda.max_memory_reserved(device)
        free, total = torch.cuda.mem_get_info(device)
        figures["mem_device"] = total - free
    return figures
