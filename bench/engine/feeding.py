"""How many decoding cores feed a model training on a GPU: the GPU's clips/s from its bf16 peak (vtbench.engine.mfu),
an assumed MFU and the model's training FLOPs per clip (vtbench.engine.estimate), against the clips/s per core that
`vtbench data check` measured (vtbench.datasets.check).

    GPU clips/s = peak bf16 FLOP/s x MFU / training FLOPs per clip;  cores = GPU clips/s / clips/s per core
"""

import os
import platform

from tabulate import tabulate

from vtbench.errors import ConfigError

from .config import RunConfig
from .estimate import estimate
from .mfu import GPU_PEAKS_TFLOPS, gpu_model
from .mfu import gpu_peak as peak_of


def gpu_peak(gpu: str) -> float:
    """The GPU's dense bf16 peak FLOP/s from bench/engine/mfu.py's table, or one error listing the known names."""
    peak = peak_of(gpu, "bf16")
    if peak is None:
        raise ConfigError(f"unknown GPU {gpu!r} (model {gpu_model(gpu)!r}); known: {', '.join(GPU_PEAKS_TFLOPS)} "
                          "(as NVML names them, e.g. 'NVIDIA H100 80GB HBM3')")
    return peak


def feeding(report: dict, model: str, gpu: str, mfu: float = 0.35, repeats: int = 2) -> dict:
    """The cores it takes to feed `model` training on `gpu` at `mfu`, from each speed the check measured."""
    if not 0 < mfu <= 1:
        raise ConfigError(f"--mfu is a fraction in (0, 1], got {mfu}")
    if repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, got {repeats}")
    peak = gpu_peak(gpu)
    config = RunConfig(model=model, frames=report["frames"], size=report["size"], stride=report["stride"],
                       eval_sweep=[])  # the training cost only: no evaluation settings to check against the shape
    train_flops = estimate(config, [], 0.5, max(1, report["classes"])).train_gflops * 1e9
    gpu_clips = peak * mfu / train_flops
    rows = []
    for source, speed in report["speeds"].items():
        per_core = speed.get("clips_per_core_s")
        cores = gpu_clips / per_core if per_core else None
        rows.append({"source": source, "clips_per_core_s": per_core, "cores": cores,
                     "cores_repeats": cores / repeats if cores is not None else None})
    return {"model": model, "gpu": gpu, "gpu_model": gpu_model(gpu), "peak": peak, "mfu": mfu, "repeats": repeats,
            "train_flops": train_flops, "gpu_clips_per_s": gpu_clips, "rows": rows}


SOURCES = {"originals": "decoding the originals", "re-encoded copy": "decoding the re-encoded copy",
           "decoded cache": "reading the decoded cache"}


def feeding_lines(feed: dict) -> list[str]:
    n = feed["repeats"]
    rows = [[SOURCES.get(r["source"], r["source"]),
             f"{r['clips_per_core_s']:.1f}" if r["clips_per_core_s"] else "-",
             f"{r['cores']:.1f}" if r["cores"] is not None else "-",
             f"{r['cores_repeats']:.1f}" if r["cores_repeats"] is not None else "-"] for r in feed["rows"]]
    cpu = platform.processor() or platform.machine()
    return [
        f"feeding {feed['model']} on {feed['gpu']} ({feed['gpu_model']}: {feed['peak'] / 1e12:.1f} bf16 TFLOP/s "
        f"dense) at MFU {feed['mfu']:g}: {feed['train_flops'] / 1e9:.1f} training GFLOPs per clip, so "
        f"{feed['gpu_clips_per_s']:.1f} clips/s",
        tabulate(rows, headers=["clips from", "clips/s per core", "cores", f"cores, data_args.repeats {n}"],
                 disable_numparse=True, colalign=("left", "right", "right", "right")),
        f"cores are this machine's ({cpu}, {os.cpu_count()} logical cores here): decoding and resizing only, "
        "without cropping, collation and transfer, so a loader needs at least this many of them",
        f"data_args.repeats {n}: one decode serves {n} clips, so {n} times fewer cores; an upper bound of the gain "
        "(each clip still costs its crop, flip and transfer)",
    ]
