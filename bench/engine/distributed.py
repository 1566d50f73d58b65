"""One run carried by several processes: torch.distributed's process group, as the runner sees it.

A process joins the group that its launcher describes in the environment (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
`MASTER_ADDR`, `MASTER_PORT`: torch's elastic launcher, `torchrun`, or SLURM through submitit) and leaves it when
the run ends. Gradients go through DDP on the default group (NCCL on GPUs, gloo on the CPU); what the ranks must
agree on (the budget clock, losses, evaluation counts, random states) goes through a gloo group of small CPU
messages, so it never waits on a GPU stream.

A single process is a `World` of one: every method below is then the identity, with no torch.distributed call.
"""

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vtbench.errors import ConfigError

TIMEOUT = datetime.timedelta(minutes=10)  # a rank that waits longer on the others ends the run as failed
JOB_TIMEOUT = datetime.timedelta(days=7)  # a SLURM job's tasks waiting for rank 0's next run (ended by the job)


def launched_size() -> int:
    """The world size the environment describes (1 when no launcher set one)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable WORLD_SIZE={value!r} is not a whole number") from None


def rank_device(device: torch.device) -> torch.device:
    """A launched process's own GPU: `cuda` becomes `cuda:LOCAL_RANK` (one GPU per process)."""
    if device.type == "cuda" and launched_size() > 1:
        if device.index is not None:
            raise ConfigError(f"device {device} names one GPU, and this run has several processes: give device "
                              "'cuda' or 'auto' (each process takes the GPU of its local rank)")
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        # the launcher left this process every GPU of the node (take the local rank's), or only its own (SLURM's
        # --gpus-per-task binding): then it is the first visible
        device = torch.device("cuda", local_rank if torch.cuda.device_count() > local_rank else 0)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    return device


@dataclass
class World:
    rank: int = 0
    size: int = 1
    control: Any = None  # the gloo group of what ranks agree on
    joined: bool = False  # this World initialised the process group (and destroys it in `leave`)

    @classmethod
    def join(cls, device: torch.device) -> "World":
        """The world of this process: joins the launcher's process group when there is one."""
        size = launched_size()
        if size <= 1:
            return cls()
        joined = not dist.is_initialized()
        if joined:
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, timeout=TIMEOUT,
                                    device_id=device if device.type == "cuda" else None)
        control = dist.new_group(backend="gloo", timeout=TIMEOUT)
        return cls(int(os.environ["RANK"]), size, control, joined)

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes the run's files."""
        return self.rank == 0

    def part(self, count: int) -> slice:
        """This rank's contiguous share of a batch of `count` clips (shares differ by at most one clip)."""
        return slice(count * self.rank // self.size, count * (self.rank + 1) // self.size)

    def for_gradients(self, loss: torch.Tensor, share: float) -> torch.Tensor:
        """The loss of this rank's `share` of the batch, weighted so that DDP's mean of the ranks' gradients is the
        whole batch's where the shares are not equal (a batch that does not divide by the ranks)."""
        return loss if share * self.size == 1 else loss * (share * self.size)

    def for_log(self, loss: torch.Tensor, share: float) -> torch.Tensor:
        """This rank's part of the batch's loss, so that the ranks' parts add up to it when summed (`sum`)."""
        return loss if self.size == 1 else loss * share

    def agree(self, values: list[float]) -> list[float]:
        """Rank 0's `values`, on every rank."""
        if self.size == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64)
        dist.broadcast(tensor, src=0, group=self.control)
        return tensor.tolist()

    def share(self, value: Any) -> Any:
        """Rank 0's `value` (a picklable object), on every rank."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """The elementwise sum of a CPU tensor over the ranks."""
        if self.size == 1:
            return values
        values = values.to(torch.float64)
        dist.all_reduce(values, group=self.control)
        return values

    def total(self, value: float) -> float:
        """The sum of a number over the ranks."""
        return value if self.size == 1 else self.sum(torch.tensor([value])).item()

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value` (a picklable object), in rank order."""
        if self.size == 1:
            return [value]
        gathered: list[Any] = [None] * self.size
        dist.all_gather_object(gathered, value, group=self.control)
        return gathered

    @classmethod
    def join_slurm_job(cls) -> "World":
        """The tasks of the SLURM job this process is one of, as one group for as long as the job lives (a grid
        worker whose cells each run on all its tasks): submitit's environment gives the ranks and the first node's
        address. The default group carries CPU tensors by gloo and CUDA tensors by NCCL, so that each run's
        DDP and control messages can use it."""
        from submitit.helpers import TorchDistributedEnvironment

        environment = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        if environment.world_size <= 1:
            return cls()
        dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo", timeout=TIMEOUT)
        # between runs the other tasks wait on rank 0 for as long as it looks for work (a study's last trials)
        control = dist.new_group(backend="gloo", timeout=JOB_TIMEOUT)
        return cls(environment.rank, environment.world_size, control, True)

    def leave(self) -> None:
        if not dist.is_initialized():
            return
        if self.joined:
            dist.destroy_process_group()
        elif self.control is not None:  # a run inside a longer-lived group: its own messages' group goes
            dist.destroy_process_group(self.control)


class _StepLoss(nn.Module):
    """A step's loss as one module call, so that DDP sees every pass a method makes (Flux makes several)."""

    def __init__(self, model: nn.Module, loss):
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, video: torch.Tensor, labels: torch.Tensor, progress: float, label_smoothing: float):
        return self.loss(self.model, (video, labels), progress, label_smoothing)


class ParallelLoss:
    """`loss(model, (video, labels), progress, label_smoothing)` (the method list's), with DDP averaging the
    gradients over the ranks when there are several. DDP holds the parameters that are trainable when it is made,
    so it is made again when a method freezes some (frozen_spatial's second stage)."""

    def __init__(self, model: nn.Module, loss, world: World, device: torch.device, find_unused: bool = False):
        self.model, self.loss, self.world, self.device = model, loss, world, device
        self.find_unused = find_unused  # some trainable parameters take no part in some steps
        self._trainable: tuple[bool, ...] | None = None
        self._ddp: DistributedDataParallel | None = None

    def __call__(self, video: torch.Tensor, labels: torch.Tensor, progress: float, label_smoothing: float):
        if self.world.size == 1:
            return self.loss(self.model, (video, labels), progress, label_smoothing)
        trainable = tuple(p.requires_grad for p in self.model.parameters())
        if trainable != self._trainable:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = DistributedDataParallel(_StepLoss(self.model, self.loss), device_ids=ids,
                                                find_unused_parameters=self.find_unused)
            self._trainable = trainable
        return self._ddp(video, labels, progress, label_smoothing)
