"""Evaluation of a model on the validation clips under one setting (a token selection and an input shape)."""

import shutil
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import torch
import torch.nn.functional as F

from vtbench.models.tokens import Tokens


class EvalData:
    """The validation clips, rendered or decoded once per (frames, size, stride). Where they are small enough they
    are kept in a temporary file and memory-mapped for each evaluation, not held in memory between evaluations, so
    the training windows' resident memory does not carry them."""

    KEEP_BYTES = 512 * 2**20

    def __init__(self, dataset, clips: int, batch_size: int):
        self.dataset, self.clips, self.batch_size = dataset, clips, batch_size
        self._folder: Path | None = None
        self._kept: dict[tuple[int, int, int], Path] = {}

    def batches(self, frames: int, size: int, stride: int):
        key = (frames, size, stride)
        if key in self._kept:
            yield from torch.load(self._kept[key], mmap=True, weights_only=True)
            return
        views = getattr(self.dataset, "views", (1, 1))
        keep = self.clips * views[0] * views[1] * 3 * frames * size * size * 4 <= self.KEEP_BYTES
        made = []
        for start in range(0, self.clips, self.batch_size):
            indices = list(range(start, min(start + self.batch_size, self.clips)))
            batch = self.dataset.batch(indices, frames, size, stride, training=False)
            if keep:
                made.append(batch)
            yield batch
        if keep:
            self._folder = self._folder or Path(tempfile.mkdtemp(prefix="vtbench-eval-"))
            path = self._folder / f"{frames}x{size}s{stride}.pt"
            torch.save(made, path)
            self._kept[key] = path

    def close(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder, self._kept = None, {}


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches,
    select: Callable[[Tokens], Tokens] | None,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
) -> dict[str, float]:
    """top-1, top-5 (percent), mean cross-entropy over `batches` and the tokens per clip the model saw; a batch of
    (B, V, 3, T, S, S) holds V views of each clip, whose softmax outputs are averaged."""
    was_training = model.training
    model.eval()
    model.token_counts = []
    correct1 = correct5 = loss_sum = count = 0.0
    try:
        for video, labels in batches:
            video, labels = video.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            views = video.shape[1] if video.dim() == 6 else 1  # (B, V, 3, T, S, S): several views of each clip
            with autocast():
                logits = model(video.flatten(0, 1) if views > 1 else video, select=select)
            logits = logits.float()
            if views > 1:  # average the views' probabilities
                logits = logits.view(len(labels), views, -1).softmax(-1).mean(1).log()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hits = top == labels[:, None]
            correct1 += hits[:, 0].sum().item()
            correct5 += hits.any(dim=1).sum().item()
            count += len(labels)
    finally:
        model.train(was_training)
    tokens = model.token_counts[0] if model.token_counts else None
    return {"top1": 100 * correct1 / count, "top5": 100 * correct5 / count, "loss": loss_sum / count, "tokens": tokens}
