"""GPU check: vtbench's GPU paths in one script, with a JSON and a Markdown summary (issue 30).

It measures a real budgeted run (memory columns, power, energy, MFU, data wait), the NVML monitor's overhead,
token methods' step-time speed-ups against their FLOP ratios, RLT's padded against packed attention, compiled
against eager steps (and a token method's recompilations), and token methods' peak memory against `vtbench
estimate`'s activation ratio.

On one CUDA GPU (ViT-B over 16 x 224^2, bf16, compiled blocks) it stays inside `--time-limit` (450 s at full
scale): a section that the time left cannot hold is skipped, one that runs past it is cut short, each saying so.
On a machine without CUDA it runs the same code at a small scale (the default model, a few steps) and records
every GPU-only figure as skipped, with the reason. Each section runs on its own: a failure is recorded with its
error and the others still run. It writes DIR/gpu_check.json (the machine, every section's figures or why it has
none, and the run's summary.json) and DIR/gpu_check.md (the same as Markdown), and nothing else into DIR: the
run's folder is a temporary one unless --run-out names one. On a lent device, from the repository as copied:

    PYTHONPATH=. python benchmarks/gpu_check.py --out $OUT --scale full

(`pip install --no-deps --no-build-isolation -e .` works as well; without it the package-dir mapping of
pyproject.toml is applied here, since `vtbench` is the `bench` folder and PYTHONPATH alone cannot find it.)
"""

import argparse
import functools
import gc
import importlib.abc
import importlib.util
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import tomllib
import traceback
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

STARTED = time.monotonic()  # the time limit holds from here: imports (torch, inductor) take seconds too

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


class PackageDirs(importlib.abc.MetaPathFinder):
    """Finds the packages that pyproject.toml maps to folders (`vtbench` is `bench/`) in an uninstalled checkout."""

    def __init__(self, folders: dict[str, Path]):
        self.folders = folders

    def find_spec(self, name, path=None, target=None):
        folder = self.folders.get(name)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])


def make_vtbench_importable() -> str:
    """How `vtbench` is found: installed, or through pyproject.toml's package-dir mapping of this checkout."""
    if importlib.util.find_spec("vtbench") is not None:  # installed (editable or not)
        return "installed"
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    sys.meta_path.append(PackageDirs({name: ROOT / folder for name, folder in setuptools["package-dir"].items()}))
    return "pyproject package-dir mapping (not installed)"


VTBENCH_IMPORT = make_vtbench_importable()

from vtbench.datasets import build_dataset  # noqa: E402
from vtbench.engine import results  # noqa: E402
from vtbench.engine.compiled import CompileStats, compile_blocks  # noqa: E402
from vtbench.engine.config import MethodSpec, RunConfig, apply  # noqa: E402
from vtbench.engine.estimate import estimate  # noqa: E402
from vtbench.engine.launch import execute_or_launch  # noqa: E402
from vtbench.methods import RunContext, build_methods  # noqa: E402
from vtbench.models import build_model  # noqa: E402
from vtbench.models.counting import counting_tokens  # noqa: E402

ABSENT_ON_DEVICE = ("av", "optuna", "sqlalchemy", "submitit")  # the lent GPU machine lacks these dependencies
NO_CUDA = "no CUDA device"
WRITE_RESERVE_S = 10  # kept back from the last section for writing the files
NUM_CLASSES = 10  # the synthetic data set's


def load_benchmark(name: str) -> ModuleType:
    """A script of benchmarks/ as a module (the folder is not a package; `compile` would shadow a builtin)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


token_speedup = load_benchmark("token_speedup")
compile_benchmark = load_benchmark("compile")
monitor_overhead = load_benchmark("monitor_overhead")
batch_transfer = load_benchmark("batch_transfer")
writing = load_benchmark("gpu_check_report")


@dataclass(frozen=True)
class Scale:
    model: str
    run_budget: str  # of the real run
    run_batch: int
    eval_clips: int
    batch: int  # of the side-by-side measurements
    compile_batch: int  # the run's batch at full scale, so that inductor's cache holds its blocks already
    steps: int  # per round
    rounds: int
    monitor_steps: int
    monitor_rounds: int
    time_limit_s: float
    needs_s: dict[str, float]  # about how long each section takes: less left than this, it is skipped; twice
    # this, it is cut short, so that one section that hangs (a compilation) leaves time to the others


SCALES = {
    "small": Scale(model="vit_tiny", run_budget="8steps", run_batch=4, eval_clips=16, batch=4, compile_batch=4,
                   steps=2, rounds=2, monitor_steps=2, monitor_rounds=2, time_limit_s=60.0,
                   needs_s={"run": 10, "monitor_overhead": 1, "token_methods": 10, "rlt_packing": 5,
                            "peak_memory": 5, "batch_transfer": 1, "compiled": 15}),
    "full": Scale(model="vit_base", run_budget="60s", run_batch=16, eval_clips=64, batch=8, compile_batch=16,
                  steps=5, rounds=5, monitor_steps=20, monitor_rounds=4, time_limit_s=450.0,
                  needs_s={"run": 150, "monitor_overhead": 30, "token_methods": 40, "rlt_packing": 40,
                           "peak_memory": 30, "batch_transfer": 15, "compiled": 120}),
}
TOKEN_SETTINGS = [
    [],
    [MethodSpec("token_dropout", {"keep": 0.5})],
    [MethodSpec("token_dropout", {"keep": 0.25})],
    [MethodSpec("tome")],
    [MethodSpec("token_dropout", {"keep": 0.5, "layers": "middle"})],  # layer-wise token dropping
]


class Skip(Exception):
    """A section that cannot run here; the message says why."""


class TimeUp(BaseException):
    """The time limit passed inside a section (a BaseException, so that no handler of the library records it)."""


@dataclass
class Plan:
    scale: Scale
    device: torch.device
    run_out: Path  # where the run's folder goes

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else nullcontext()

    def synchronize(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def config(self, **values: Any) -> RunConfig:
        return apply(RunConfig(model=self.scale.model), values).resolve()


def label(specs: list[MethodSpec]) -> str:
    return " + ".join(map(str, specs)) or "baseline"


# ---- shared pieces ------------------------------------------------------------------------------------------


def rendered_batch(config: RunConfig, clips: int) -> tuple[torch.Tensor, torch.Tensor]:
    return rendered_clips(config.frames, config.size, config.stride, clips)


@functools.cache  # rendering is CPU work: at 224^2, seconds a batch
def rendered_clips(frames: int, size: int, stride: int, clips: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = build_dataset("synthetic", "train", 0)
    return data.batch(range(clips), frames, size, stride, training=True)


def model_and_optimizer(plan: Plan, config: RunConfig):
    torch.manual_seed(0)
    model = build_model(config.model, "joint", NUM_CLASSES, config.frames, config.size).to(plan.device)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4)  # as the runner's


def prepared(plan: Plan, config: RunConfig, model, specs: list[MethodSpec]):
    stack = build_methods(specs)
    data = build_dataset("synthetic", "train", 0)
    stack.prepare(RunContext(config, model, None, NUM_CLASSES, plan.device, data))
    return stack


def under_autocast(plan: Plan, step: Callable) -> Callable:
    def wrapped(*args, **kwargs):
        with plan.autocast():
            return step(*args, **kwargs)

    return wrapped


def interleaved_times(plan: Plan, steps: dict[str, Callable]) -> dict[str, list[float]]:
    """Seconds per step of each setting, one list entry per round; settings alternate within every round so
    that drift (clocks, temperature, other load) hits them alike."""
    for step in steps.values():
        step()  # first-call costs
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(plan.scale.rounds):
        for name, step in steps.items():
            plan.synchronize()
            began = time.perf_counter()
            for _ in range(plan.scale.steps):
                step()
            plan.synchronize()
            times[name].append((time.perf_counter() - began) / plan.scale.steps)
    return times


def timing(times: list[float]) -> dict[str, float]:
    return {"ms_per_step": 1000 * statistics.median(times), "min_ms": 1000 * min(times), "max_ms": 1000 * max(times)}


def free_device_memory(plan: Plan) -> None:
    gc.collect()
    if plan.cuda:
        torch.cuda.empty_cache()


# ---- 1. a run through the library -----------------------------------------------------------------------------

RUN_GPU_FIGURES = ("mem_allocated", "mem_reserved", "mem_device", "power_w", "energy_j")


def section_run(plan: Plan) -> dict[str, Any]:
    """`vtbench run` as the command line runs it (execute_or_launch), compiled and bf16 on a GPU. The run's
    summary.json and steps go into the report whole (`run_summary`, `run_steps`)."""
    import pandas as pd

    scale = plan.scale
    config = plan.config(budget=scale.run_budget, batch_size=scale.run_batch, compile=plan.cuda,
                         precision="bf16" if plan.cuda else "auto", eval_clips=scale.eval_clips,
                         eval_subset=scale.eval_clips, eval_batch_size=min(32, scale.eval_clips), eval_sweep=[],
                         eval_every=1.0, log_every=5)
    reused = (plan.run_out / config.run_id() / results.SUMMARY).exists()
    run_dir = execute_or_launch(config, plan.run_out, progress_bar=False)
    summary = results.read_json(run_dir / results.SUMMARY)
    env = results.read_json(run_dir / results.ENV)
    rows = pd.read_parquet(run_dir / results.STEPS)
    compute_s = float((rows["step_s"] - rows["data_s"]).median())
    flops_per_step = summary["total_flops"] / summary["steps"] if summary["steps"] else None
    peak = summary["peak_flops_per_s"]
    figures = {
        "run_dir": str(run_dir), "reused_earlier_run": reused, "status": summary["status"],
        "error": summary.get("error"), "device": env.get("device_name"), "precision": summary["precision"],
        "model": config.model, "clip": f"{config.batch_size} x {config.frames} x {config.size}^2",
        "budget": summary["budget"], "steps": summary["steps"], "train_s": summary["train_s"],
        "step_s": summary["train_s"] / summary["steps"] if summary["steps"] else None,
        "median_row_step_s": float(rows["step_s"].median()), "median_row_compute_s": compute_s,
        "data_wait_share": summary["data_wait_share"], "data_bound": summary["data_bound"],
        **{key: summary.get(key) for key in RUN_GPU_FIGURES},
        "mem_device_scope": summary.get("mem_device_scope"), "energy_source": summary.get("energy_source"),
        "mfu": summary["mfu"],
        "mfu_without_data_wait": flops_per_step / compute_s / peak if peak and flops_per_step else None,
        "achieved_flops_per_s": summary["achieved_flops_per_s"], "peak_source": summary["peak_source"],
        "compile_s": summary.get("compile_s"), "recompiles": summary.get("recompiles"),
        "top1": summary["top1"], "not_measured": summary["not_measured"],
        "run_summary": summary, "run_steps": rows.to_dict("records"),
    }
    if summary.get("load_warning"):
        figures["load_warning"] = summary["load_warning"]
    if not plan.cuda:
        figures["skipped_figures"] = {key: f"{NO_CUDA} (the run: {summary['not_measured'].get(key)})"
                                      for key in RUN_GPU_FIGURES if summary.get(key) is None}
    return figures


# ---- 2. the monitor's overhead ---------------------------------------------------------------------------------


def section_monitor_overhead(plan: Plan) -> dict[str, Any]:
    if not plan.cuda:
        raise Skip(f"{NO_CUDA}: the monitor samples NVML on GPUs only")
    scale = plan.scale
    try:
        return monitor_overhead.measure_overhead(scale.model, scale.batch, scale.monitor_steps, scale.monitor_rounds)
    except monitor_overhead.MonitorUnavailable as err:
        raise Skip(f"NVML unavailable: {err}") from None


# ---- 3. token methods' speed-up against their FLOP ratio ---------------------------------------------------


def token_steps(plan: Plan, config: RunConfig) -> tuple[dict[str, Callable], dict[str, float], dict[str, str]]:
    """Every token setting's training step on one model and one batch, each run once: (steps, tokens per clip,
    errors). A method whose step fails is left out with its error, so that the others are still measured."""
    video, labels = (t.to(plan.device) for t in rendered_batch(config, plan.scale.batch))
    model, optimizer = model_and_optimizer(plan, config)
    steps, tokens, failed = {}, {}, {}
    for specs in TOKEN_SETTINGS:
        try:
            stack = prepared(plan, config, model, specs)
            step = under_autocast(plan, token_speedup.make_step(model, optimizer, stack, video, labels))
            seen = token_speedup.tokens_seen(step)
        except Exception as err:
            if not specs:  # the baseline: nothing to compare with
                raise
            failed[label(specs)] = writing.error_text(err, ROOT)
            continue
        steps[label(specs)], tokens[label(specs)] = step, seen
    return steps, tokens, failed


def section_token_methods(plan: Plan) -> dict[str, Any]:
    """Eager steps (ToMe refuses compiled blocks), bf16 on a GPU, one model and one batch for every setting."""
    config = plan.config()
    steps, tokens, failed = token_steps(plan, config)
    times = interleaved_times(plan, steps)
    costs = {label(specs): estimate(config, specs, num_classes=NUM_CLASSES).train_gflops for specs in TOKEN_SETTINGS}
    base_time, base_cost = statistics.median(times["baseline"]), costs["baseline"]
    settings = {}
    for name, measured in times.items():
        speedup, flop_ratio = base_time / statistics.median(measured), base_cost / costs[name]
        settings[name] = {**timing(measured), "tokens_per_clip": tokens[name], "train_gflops_per_clip": costs[name],
                          "speedup": speedup, "flop_ratio": flop_ratio, "speedup_over_flop_ratio": speedup / flop_ratio}
    return {"model": config.model, "clip": f"{plan.scale.batch} x {config.frames} x {config.size}^2",
            "precision": "bf16" if plan.cuda else "fp32", "rounds": plan.scale.rounds,
            "steps_per_round": plan.scale.steps, "settings": settings, "failed_settings": failed}


# ---- 4. RLT: padded against packed attention ------------------------------------------------------------------


def section_rlt_packing(plan: Plan) -> dict[str, Any]:
    """Half the clips held still, half moving: padding each batch to its longest clip costs most there. Packed:
    the clips RLT keeps in one sequence, nested-tensor scaled_dot_product_attention (token_speedup.packed_step,
    whose bare tensor factories follow the device given by `torch.device(...)` as a context)."""
    warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors is in prototype stage")
    config = plan.config()
    batch = plan.scale.batch
    data = build_dataset("synthetic", "train", 0)
    video = token_speedup.rlt_batches(data, config, batch)["half static"].to(plan.device)
    labels = data.labels(range(batch)).to(plan.device)
    model, optimizer = model_and_optimizer(plan, config)
    rlt = prepared(plan, config, model, [MethodSpec("rlt")])

    def packed(backward: bool = True):
        with torch.device(plan.device):
            return token_speedup.packed_step(model, optimizer, rlt, video, labels)(backward)

    figures = {"model": config.model, "clip": f"{batch} x {config.frames} x {config.size}^2",
               "content": "half the clips held still (no noise), half moving"}
    figures["fp32_loss_difference"] = loss_difference(model, rlt, video, labels, packed, nullcontext)
    figures["bf16_loss_difference"] = loss_difference(model, rlt, video, labels, packed, plan.autocast) \
        if plan.cuda else None
    if figures["fp32_loss_difference"] > 1e-4:
        raise RuntimeError(f"packed and padded clips disagree: fp32 loss differs by "
                           f"{figures['fp32_loss_difference']:.1e}, so their times are not comparable")
    padded = under_autocast(plan, token_speedup.make_step(model, optimizer, rlt, video, labels))
    seen = token_speedup.tokens_seen(padded)
    with torch.no_grad():
        figures["kept"] = seen / model.embed(video[:1]).count
    times = interleaved_times(plan, {"padded": padded, "packed": under_autocast(plan, packed)})
    figures.update(padded=timing(times["padded"]), packed=timing(times["packed"]),
                   packed_over_padded=statistics.median(times["packed"]) / statistics.median(times["padded"]))
    if plan.cuda:
        figures["packed_flash_kernel"] = flash_kernel_runs(plan, packed)
    else:
        figures["skipped_figures"] = {"packed_flash_kernel": f"{NO_CUDA}: flash attention is a CUDA kernel"}
    return figures


def loss_difference(model, rlt, video, labels, packed, precision) -> float:
    """|padded - packed| loss of the same parameters on the same clips, without a step."""
    model.eval()
    try:
        with torch.no_grad(), precision():
            padded_loss = F.cross_entropy(model(video, select=rlt.selector(0.5, training=True)).float(), labels)
            packed_loss = packed(backward=False)
    finally:
        model.train()
    return abs(padded_loss.item() - packed_loss.item())


def flash_kernel_runs(plan: Plan, packed) -> bool | str:
    """Whether the packed forward runs with flash attention alone (True), or why not."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    try:
        with torch.no_grad(), plan.autocast(), sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            packed(backward=False).item()
        return True
    except Exception as err:  # noqa: BLE001 - the answer is the reason
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


# ---- 5. compiled against eager, and a token method under compile ----------------------------------------------


def section_compiled(plan: Plan) -> dict[str, Any]:
    """benchmarks/compile.py's side-by-side measurement; then token_dropout keep=0.5 on compiled blocks, its
    compilations counted as a run counts them (CompileStats). Without CUDA: aot_eager (the tests' backend: the
    same tracing and guards, no code generation), whose times say nothing of inductor's."""
    config = plan.config()
    backend = "inductor" if plan.cuda else "aot_eager"
    batch, steps = plan.scale.compile_batch, max(plan.scale.steps * plan.scale.rounds, 3)
    with torch.device(plan.device):
        _, eager_s, compiled_s, compile_s, ratio, low, high = compile_benchmark.measure(
            f"{config.model} blocks", config.model, {}, config.frames, config.size, batch, steps, backend,
            plan.autocast)
    free_device_memory(plan)
    dropout = token_method_compiled(plan, config, batch, steps, backend)
    dropout["speedup_over_compiled_baseline"] = 1000 * compiled_s / dropout["ms_per_step"]
    figures = {"model": config.model, "clip": f"{batch} x {config.frames} x {config.size}^2", "backend": backend,
               "precision": "bf16" if plan.cuda else "fp32", "steps": steps,
               "eager_ms": 1000 * eager_s, "compiled_ms": 1000 * compiled_s, "compile_s": compile_s,
               "compiled_over_eager": ratio, "ratio_quartiles": [low, high], "token_dropout_keep_0.5": dropout}
    if not plan.cuda:
        figures["skipped_figures"] = {"inductor": f"{NO_CUDA}: inductor's kernels are timed on the GPU; here "
                                                  "aot_eager exercises the compiled path only"}
    return figures


def token_method_compiled(plan: Plan, config: RunConfig, batch: int, steps: int, backend: str) -> dict[str, Any]:
    video, labels = (t.to(plan.device) for t in rendered_batch(config, batch))
    model, optimizer = model_and_optimizer(plan, config)
    compile_blocks(model, backend)
    stats = CompileStats()
    stack = prepared(plan, replace(config, compile=True), model, [MethodSpec("token_dropout", {"keep": 0.5})])
    step = under_autocast(plan, token_speedup.make_step(model, optimizer, stack, video, labels))
    times = []
    with counting_tokens() as seen:
        for _ in range(steps + 1):
            plan.synchronize()
            began = time.perf_counter()
            step()
            plan.synchronize()
            times.append(time.perf_counter() - began)
            stats.step_done()
    compiled = stats.summary()
    return {"first_step_s": times[0], **timing(times[1:]), "tokens_per_clip": float(seen.counts[0]),
            "note": "sequential, after the side-by-side pair (not interleaved)",
            **{key: compiled[key] for key in ("compile_s", "compiled_frames", "recompiles")}}


# ---- 6. peak memory against the estimate ---------------------------------------------------------------------


def section_peak_memory(plan: Plan) -> dict[str, Any]:
    """The allocator's peak over one training step less what was allocated before it (weights, gradients, AdamW's
    state): the step's activations and workspace, beside estimate's activations saved for backward (float32)."""
    config = plan.config()
    saved = {label(specs): estimate(config, specs, num_classes=NUM_CLASSES).activation_mib
             for specs in TOKEN_SETTINGS}
    settings = {name: {"estimate_activation_mib_per_clip": mib, "estimate_ratio": saved["baseline"] / mib}
                for name, mib in saved.items()}
    figures = {"model": config.model, "clip": f"{plan.scale.batch} x {config.frames} x {config.size}^2",
               "settings": settings}
    if not plan.cuda:
        figures["skipped_figures"] = {"measured_peak": f"{NO_CUDA}: peaks are read from CUDA's caching allocator"}
        return figures
    steps, _, figures["failed_settings"] = token_steps(plan, config)  # AdamW's state and gradients exist from here
    for name, step_bytes in measured_step_memory(plan, steps).items():
        settings[name].update(step_bytes)
        settings[name]["measured_ratio"] = settings["baseline"]["step_peak_bytes"] / step_bytes["step_peak_bytes"]
    return figures


def measured_step_memory(plan: Plan, steps: dict[str, Callable]) -> dict[str, dict[str, int]]:
    measured = {}
    for name, step in steps.items():
        free_device_memory(plan)
        torch.cuda.reset_peak_memory_stats(plan.device)
        before = torch.cuda.memory_allocated(plan.device)
        step()
        plan.synchronize()
        peak = torch.cuda.max_memory_allocated(plan.device)
        measured[name] = {"allocated_before_bytes": before, "peak_bytes": peak, "step_peak_bytes": peak - before}
    return measured


def section_batch_transfer(plan: Plan) -> dict[str, Any]:
    if not plan.cuda:
        raise Skip(f"{NO_CUDA}: page-locked copies and normalising on the GPU are timed on CUDA")
    return batch_transfer.measure(plan.scale.batch, rounds=plan.scale.rounds)


# ---- the script ---------------------------------------------------------------------------------------------

SECTIONS: dict[str, tuple[str, Callable[[Plan], dict[str, Any]]]] = {
    "run": ("A run through the library (vtbench run)", section_run),
    "monitor_overhead": ("NVML monitor overhead", section_monitor_overhead),
    "token_methods": ("Token methods: step-time speed-up against FLOP ratio", section_token_methods),
    "rlt_packing": ("RLT on half-static clips: padded against packed attention", section_rlt_packing),
    "compiled": ("Compiled against eager steps; a token method under compile", section_compiled),
    "peak_memory": ("Peak memory of token methods against the estimate", section_peak_memory),
    "batch_transfer": ("A decoded batch to the GPU: uint8 page-locked against float32", section_batch_transfer),
}
ORDER = ("run", "monitor_overhead", "token_methods", "rlt_packing", "peak_memory", "batch_transfer",
         "compiled")  # the longest last


def _time_up(signum, frame):
    raise TimeUp()


def run_section(name: str, plan: Plan, deadline: float) -> dict[str, Any]:
    """One section's figures, or why it has none: skipped (here, or for lack of time) or failed (its error)."""
    left, needs = deadline - WRITE_RESERVE_S - time.monotonic(), plan.scale.needs_s[name]
    if left < needs:
        return {"status": "skipped", "wall_s": 0.0,
                "skipped": f"time: {max(left, 0):.0f} s left of the limit, the section needs about {needs:.0f} s"}
    began = time.monotonic()
    allowed = min(left, 2 * needs)
    signal.signal(signal.SIGALRM, _time_up)
    signal.setitimer(signal.ITIMER_REAL, allowed)
    try:
        result = {"status": "ok", "figures": SECTIONS[name][1](plan)}
    except Skip as reason:
        result = {"status": "skipped", "skipped": str(reason)}
    except TimeUp:
        why = "the script's time limit" if allowed == left else f"twice the {needs:.0f} s it usually needs"
        result = {"status": "failed", "error": f"cut short after {time.monotonic() - began:.0f} s: {why}"}
    except (Exception, SystemExit) as err:  # noqa: BLE001 - recorded; the other sections still run
        result = {"status": "failed", "error": traceback.format_exception_only(err)[-1].strip(),
                  "where": writing.error_place(err, ROOT), "traceback": traceback.format_exc()}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    result["wall_s"] = time.monotonic() - began
    free_device_memory(plan)
    return result


def machine(device: torch.device) -> dict[str, Any]:
    env = results.environment(device)
    env.update(date=datetime.now(UTC).isoformat(timespec="seconds"), cudnn=torch.backends.cudnn.version(),
               cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"), vtbench_import=VTBENCH_IMPORT)
    if device.type != "cuda":
        env["gpu"] = f"none ({NO_CUDA})"
    return env


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--scale", choices=SCALES, help="full: ViT-B at 16 x 224^2 (a GPU's); small: the default "
                                                        "model (default: full on CUDA, small elsewhere)")
    parser.add_argument("--time-limit", type=float, help="seconds for the whole script (default: 450 at full scale, "
                                                         "60 at small)")
    parser.add_argument("--run-out", type=Path, help="results folder of the run (default: a temporary one)")
    return parser.parse_args()


def run_sections(plan: Plan, deadline: float) -> dict[str, dict[str, Any]]:
    done = {}
    for name in ORDER:
        section = done[name] = run_section(name, plan, deadline)
        why = section.get("skipped") or " ".join(filter(None, (section.get("error"), section.get("where"))))
        print(f"gpu_check: {name}: {section['status']} ({section['wall_s']:.1f} s) {why}", flush=True)
    return {name: done[name] for name in SECTIONS}


def main() -> None:
    args = parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    scale_name = args.scale or ("full" if device.type == "cuda" else "small")
    limit = args.time_limit or SCALES[scale_name].time_limit_s
    report: dict[str, Any] = {"machine": machine(device), "scale": scale_name, "time_limit_s": limit}
    print(f"gpu_check: {report['machine']['device_name']}, scale {scale_name}, limit {limit:.0f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu_check_run_") as temporary:
        plan = Plan(SCALES[scale_name], device, args.run_out or Path(temporary))
        report["sections"] = run_sections(plan, STARTED + limit)
    report["imported_absent_on_device"] = sorted(p for p in ABSENT_ON_DEVICE if p in sys.modules)
    report["wall_s"] = time.monotonic() - STARTED
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(writing.json_ready(report), indent=2, default=str) + "\n")
    (args.out / "gpu_check.md").write_text(writing.markdown(report, {name: SECTIONS[name][0] for name in SECTIONS}))
    print(f"gpu_check: wrote {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.md'} "
          f"in {report['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
