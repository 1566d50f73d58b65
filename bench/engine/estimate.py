"""Paper-scale cost without running it: FLOPs and activation memory of one training step per method, computed
on meta tensors (no weights are allocated, nothing is computed).

FLOPs are torch.utils.flop_counter's: one multiply-add is two FLOPs. Papers that say "FLOPs" usually mean
multiply-adds (as fvcore counts), so the table gives both: GMACs = GFLOPs / 2. The activation memory is what
autograd saves for the backward pass of one clip, at float32 (halve it for bf16 autocast, roughly).
"""

from dataclasses import dataclass

import torch
from tabulate import tabulate
from torch.utils.flop_counter import FlopCounterMode

from vtbench.core.shape import BatchShape
from vtbench.engine.config import MethodSpec, RunConfig
from vtbench.methods import RunContext, build_methods
from vtbench.models import build_model
from vtbench.models.counting import counting_tokens


@dataclass
class Estimate:
    setting: str
    clips: int
    frames: int
    size: int
    tokens: float  # per clip, mean over the blocks
    forward_gflops: float  # per clip
    train_gflops: float  # forward + backward, per clip
    activation_mib: float  # saved for backward, per clip

    @property
    def forward_gmacs(self) -> float:
        return self.forward_gflops / 2


def estimate(config: RunConfig, methods: list[MethodSpec], progress: float = 0.5, num_classes: int = 400,
             step: int = 0) -> Estimate:
    """Cost per clip of one training step of `config` with `methods`, at budget `progress` (and `step`, for methods
    whose shape cycles from step to step, as multigrid's short cycle)."""
    return estimate_run(config, methods, [(progress, step)], num_classes)[0]


def estimate_run(config: RunConfig, methods: list[MethodSpec], points: list[tuple[float, int]],
                 num_classes: int = 400) -> list[Estimate]:
    """`estimate` at each (progress, step) of `points`, in increasing progress, with one model and one method
    stack carried through them as a run carries them (a phase that starts at some progress stays started)."""
    config = config.resolve()
    stack = build_methods(methods)
    meta = torch.device("meta")
    with meta:
        model = build_model(config.model, config.arch, num_classes, config.frames, config.size, **config.model_args)
    base = BatchShape(1, config.frames, config.size, config.stride)
    stack.prepare(RunContext(config, model, base, num_classes, meta, None))
    model.to(meta)  # what the methods added to the model (adapters, tables) is made on the CPU
    return [_step(model, stack, base, progress, step, methods) for progress, step in points]


def _step(model, stack, base: BatchShape, progress: float, step: int, methods: list[MethodSpec]) -> Estimate:
    meta = torch.device("meta")
    shape = stack.batch_shape(progress, step, base)
    video = torch.empty(shape.clips, 3, shape.frames, shape.size, shape.size, device=meta)
    labels = torch.zeros(shape.clips, dtype=torch.long, device=meta)
    saved = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    with counting_tokens() as seen, FlopCounterMode(display=False) as forward, \
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = stack.loss(model, (video, labels), progress)
    with FlopCounterMode(display=False) as backward:
        loss.backward()
    model.zero_grad(set_to_none=True)
    clips = shape.clips
    forward_flops = forward.get_total_flops()
    return Estimate(
        setting=" + ".join(str(m) for m in methods) or "baseline", clips=clips, frames=shape.frames,
        size=shape.size, tokens=seen.counts[0], forward_gflops=forward_flops / clips / 1e9,
        train_gflops=(forward_flops + backward.get_total_flops()) / clips / 1e9, activation_mib=saved / clips / 2**20,
    )


def table(rows: list[Estimate]) -> str:
    baseline = rows[0].train_gflops
    data = [[r.setting, f"{r.clips}x{r.frames}x{r.size}^2", f"{r.tokens:g}", f"{r.forward_gmacs:.1f}",
             f"{r.forward_gflops:.1f}", f"{r.train_gflops:.1f}", f"{baseline / r.train_gflops:.2f}",
             f"{r.activation_mib:.0f}"] for r in rows]
    headers = ["setting", "batch shape", "tokens/clip", "fwd GMACs/clip", "fwd GFLOPs/clip", "train GFLOPs/clip",
               "cost ratio", "activations MiB/clip"]
    return tabulate(data, headers=headers, tablefmt="github")
