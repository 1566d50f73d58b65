"""Evaluation of a model on the validation clips under one setting (a token selection and an input shape)."""

import atexit
import itertools
import math
import shutil
import tempfile
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager
from pathlib import Path

import torch
import torch.nn.functional as F

from vtbench.models.counting import counting_tokens
from vtbench.models.tokens import Tokens


class EvalData:
    """The validation clips, rendered or decoded once per (frames, size, stride). Where they fit in `KEEP_BYTES`
    they are written to a temporary file as they are made and memory-mapped again at each evaluation, so neither
    the training windows nor the evaluation hold them in resident memory between uses. Runs in one process that
    name the same `share` key (the same data set and clips: a grid's cells) share the files.

    A run carried by several processes gives each its `part`, (rank, ranks): rank r makes and scores batches r,
    r + ranks, r + 2 ranks, ... of the set. A batch holds the same clips whatever the number of processes (a
    fixed-seed random selection draws per batch), so the scores add up to those of one process."""

    KEEP_BYTES = 2 * 2**30  # on disk

    def __init__(self, dataset, clips: int, batch_size: int, share: Hashable | None = None,
                 part: tuple[int, int] = (0, 1)):
        self.dataset, self.clips, self.batch_size, self.share = dataset, clips, batch_size, share
        self.rank, self.ranks = part
        self._folder: Path | None = None
        self._kept: dict[tuple[int, int, int], tuple[Path, tuple[int, ...], torch.dtype, torch.Tensor]] = {}
        if share is not None:
            self._kept = _SHARED.setdefault((share, clips, part), self._kept)
        self._asked: set[tuple[int, int, int]] = set()

    def _mine(self, clips: int) -> list[range]:
        """This part's batches among the first `clips` clips of the set."""
        size = self.batch_size
        return [range(start, min(start + size, clips)) for start in range(self.rank * size, clips, self.ranks * size)]

    def batches(self, frames: int, size: int, stride: int, clips: int | None = None):
        """This part's share of the first `clips` (default: all) clips of the set, in batches."""
        clips = self.clips if clips is None else min(clips, self.clips)
        whole, clips = clips == self.clips, sum(map(len, self._mine(clips)))
        key = (frames, size, stride)
        again, self._asked = key in self._asked, self._asked | {key}
        # a shape asked for once, for part of the set, is made for that part only: the sweep's shapes
        if key not in self._kept and not ((again or whole) and self._keep(key)):
            yield from _first(self._made(frames, size, stride), clips)
            return
        path, shape, dtype, labels = self._kept[key]
        video = torch.from_file(str(path), shared=False, size=math.prod(shape), dtype=dtype).view(shape)
        clips = min(clips, shape[0])
        for start in range(0, clips, self.batch_size):
            end = min(start + self.batch_size, clips)
            yield video[start:end], labels[start:end]

    def _made(self, frames: int, size: int, stride: int):
        for indices in self._mine(self.clips):
            yield self.dataset.batch(list(indices), frames, size, stride, training=False)

    def _keep(self, key: tuple[int, int, int]) -> bool:
        """Render the whole set into a memory-mapped file, if it fits; False if it does not."""
        made = self._made(*key)
        first, first_labels = next(made, (None, None))
        if first is None:  # a part with no clip (fewer clips than ranks)
            return False
        count = sum(map(len, self._mine(self.clips)))
        shape = (count, *first.shape[1:])
        if math.prod(shape) * first.element_size() > self.KEEP_BYTES:
            return False
        path = self._new_folder() / "{}-{}x{}s{}.bin".format(len(_SHARED), *key)
        video = torch.from_file(str(path), shared=True, size=math.prod(shape), dtype=first.dtype).view(shape)
        labels = torch.empty(count, dtype=first_labels.dtype)
        start = 0
        for batch, batch_labels in itertools.chain([(first, first_labels)], made):
            video[start:start + len(batch_labels)] = batch
            labels[start:start + len(batch_labels)] = batch_labels
            start += len(batch_labels)
        del video  # written through to the file; unmapped here
        # unreadable videos were dropped: the file holds `start` clips
        self._kept[key] = (path, (start, *shape[1:]), first.dtype, labels[:start])
        return True

    def _new_folder(self) -> Path:
        global _shared_folder
        if self.share is None:
            self._folder = self._folder or Path(tempfile.mkdtemp(prefix="vtbench-eval-"))
            return self._folder
        if _shared_folder is None:
            _shared_folder = Path(tempfile.mkdtemp(prefix="vtbench-eval-shared-"))
            atexit.register(shutil.rmtree, _shared_folder, ignore_errors=True)
        return _shared_folder

    def close(self) -> None:
        """Delete this run's own files (shared ones stay until the process ends)."""
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder, self._kept = None, {}


_SHARED: dict[Hashable, dict] = {}  # (share key, clips) -> the kept files of those clips, by shape
_shared_folder: Path | None = None


def _first(batches, clips: int):
    for video, labels in batches:
        if clips <= 0:
            return
        yield video[:clips], labels[:clips]
        clips -= len(labels)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches,
    select: Callable[[Tokens], Tokens] | None,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """top-1, top-5 (percent), mean cross-entropy over `batches`, the tokens per clip the model saw and the clips
    scored; a batch of (B, V, 3, T, S, S) holds V views of each clip, whose softmax outputs are averaged.
    `reduce` adds up the counts of the processes that share the evaluation set (each scoring its part)."""
    was_training = model.training
    model.eval()
    correct1 = correct5 = loss_sum = count = 0.0
    try:
        with counting_tokens() as seen:
            for video, labels in batches:
                if not len(labels):  # its videos were unreadable: dropped, not scored
                    continue
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
    if reduce is not None:
        totals = torch.tensor([correct1, correct5, loss_sum, count], dtype=torch.float64)
        correct1, correct5, loss_sum, count = reduce(totals).tolist()
    if not count:
        raise RuntimeError("no evaluation clip could be read: every video of the evaluation set was unreadable")
    # mean over the passes (clips may keep different counts); a multi-view pass counts once
    tokens = sum(seen.counts) / len(seen.counts) if seen.counts else None
    return {"top1": 100 * correct1 / count, "top5": 100 * correct5 / count, "loss": loss_sum / count, "tokens": tokens,
            "clips": int(count)}
