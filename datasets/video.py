"""Real video data sets (`--dataset FORMAT:ROOT`): clips of any (frames, size, stride) from video files,
decoded with PyAV or read from the decoded cache (datasets/cache.py), sampled as in datasets/sampling.py.

data_args: `split` (1, 2 or 3 for ucf101 and hmdb51), `views` ([clips, crops] averaged in evaluation,
default [1, 1]), `workers` (decoding processes beside training, default 0: decode in the training process),
`prefetch` (training batches the workers decode ahead, as the methods plan them, default 2),
`cache` (true: use the cache when one exists, the default; false: always decode), `flip` (a random horizontal
flip in training; default: true for kinetics, ucf101 and hmdb51, whose classes do not depend on left and right,
false for ssv2, folder and list, where they do or may: a flipped pan left is a pan right), `decoder` (auto, the
default, pyav, torchcodec or torchcodec-cuda: datasets/decoders.py), `repeats` (clips taken from each training
video in a row, default 1: repeated sampling, VideoMAE's `--num_sample 2`, MAE-ST's 4; ignored in evaluation).

Training indices count clips drawn so far: with R repeats, index i is video perm_e[j mod N] of epoch e = j div N,
where j = i div R, with a permutation per (seed, epoch): R consecutive clips come from one video (an epoch holds
R x N clips, each a sample for the budget) and differ by their draws. The clips of one video within one batch
(one worker task) are decoded once: the union of the frames they need, each clip cut from it. Evaluation takes
the first `length` videos of one fixed permutation (independent of the run's seed, so that every run is scored on
the same videos). Augmentation draws come from (seed, split, index) alone, so a resumed run sees the same clips.
An unreadable video is skipped with a warning naming it and counted in `skipped_videos()`; in training the next
video stands in for it, in evaluation it is dropped (the batch comes back shorter), so that no video is scored
twice.
"""

import functools
import hashlib
import multiprocessing
import os
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vtbench.core.shape import BatchRequest, consecutive
from vtbench.errors import ConfigError

from . import decoders, sampling
from .cache import Cache, find_cache
from .decode import Unreadable
from .layouts import MIRROR_FREE, read_index

EVAL_ORDER_SEED = 0


@dataclass(frozen=True)
class ClipRequest:
    path: Path
    index: int  # the clip's index in the split (for its draws)
    frames: int
    size: int
    stride: int  # 0: segments
    training: bool
    flip: bool
    views: tuple[int, int]
    seed: int
    cache_folder: Path | None
    root: Path
    decoder: str = "pyav"


def load_clip(request: ClipRequest) -> np.ndarray:
    """uint8 (views, T, S, S, 3) for one clip; raises Unreadable. Runs in a decoding worker or in place."""
    return _load_video([request])[0]


def _video_key(request: ClipRequest) -> tuple:
    """Requests with the same key read the same frames (the same video at the same short side)."""
    return request.path, request.size, request.cache_folder, request.root, request.decoder


def _load_video(requests: list[ClipRequest]) -> list[np.ndarray]:
    """The clips of several requests of one video (one `_video_key`), the union of the frames they need read
    once; each clip's draws come from its own request, in the order a lone request makes them, so a clip is the
    same whether read alone or with others. Raises Unreadable."""
    first = requests[0]
    cache = _open_cache(first.cache_folder, first.root) if first.cache_folder else None
    count = cache.frames(first.path) if cache else None
    if count is None:
        cache = None
        count = _frame_count(first.path, first.decoder)
    plans = []
    for request in requests:
        rng = np.random.default_rng(_seed(request.seed, request.index)) if request.training else None
        clip_views = 1 if request.training else request.views[0]
        if request.stride == 0:
            selections = [sampling.segment_indices(count, request.frames, rng, v, clip_views)
                          for v in range(clip_views)]
        else:
            starts = sampling.dense_starts(count, request.frames, request.stride, rng, clip_views)
            selections = [sampling.dense_indices(count, request.frames, request.stride, s) for s in starts]
        plans.append((selections, rng))
    short = sampling.short_side(first.size)
    needed = sorted({k for selections, _ in plans for s in selections for k in s})
    if cache is not None:
        decoded = sampling.resize_short(cache.read(first.path, needed), short)
    else:
        decoded = decoders.module(first.decoder).read_frames(first.path, needed, count, short)
    position = {k: n for n, k in enumerate(needed)}
    return [_cut(request, decoded, position, selections, rng)
            for request, (selections, rng) in zip(requests, plans, strict=True)]


def _cut(request: ClipRequest, decoded: np.ndarray, position: dict[int, int], selections: list[list[int]],
         rng: np.random.Generator | None) -> np.ndarray:
    """One clip's views from the decoded frames (`position`: where frame k lies in them), cropped and flipped."""
    crop_views = 1 if request.training else request.views[1]
    views = []
    for selection in selections:
        frames = decoded[[position[k] for k in selection]]
        if min(frames.shape[1:3]) < request.size:  # a cached short side below the request
            frames = sampling.resize_short(frames, request.size)
        height, width = frames.shape[1:3]
        for top, left in sampling.crop_offsets(height, width, request.size, rng, crop_views):
            flip = bool(request.flip and rng is not None and rng.random() < 0.5)
            views.append(sampling.crop(frames, request.size, top, left, flip))
    return views[0][None] if len(views) == 1 else np.stack(views)


def group_by_video(requests: list[ClipRequest]) -> list[list[int]]:
    """Positions of the requests, grouped by video (`_video_key`), groups in the order of their first request."""
    groups: dict[tuple, list[int]] = {}
    for n, request in enumerate(requests):
        groups.setdefault(_video_key(request), []).append(n)
    return list(groups.values())


def load_clips(requests: list[ClipRequest]) -> list[np.ndarray | Unreadable]:
    """A decoding worker's task (or the training process's, without workers): several clips, in order, those
    of one video decoded together (once), an unreadable one returned as its error."""
    out: list[np.ndarray | Unreadable | None] = [None] * len(requests)
    for members in group_by_video(requests):
        try:
            clips: list = _load_video([requests[n] for n in members])
        except Unreadable as err:
            clips = [err] * len(members)
        for n, clip in zip(members, clips, strict=True):
            out[n] = clip
    return out


def chunk_groups(groups: list[list[int]], workers: int) -> list[list[int]]:
    """At most `workers` chunks of about equal clip counts, each whole groups (a video's clips in one task)."""
    total = sum(len(g) for g in groups)
    chunks: list[list[int]] = [[]]
    done = 0
    for group in groups:
        chunks[-1].extend(group)
        done += len(group)
        if done * workers >= len(chunks) * total and done < total:  # past this chunk's share of the clips
            chunks.append([])
    return chunks


_caches: dict[Path, Cache] = {}


@functools.lru_cache(maxsize=2**16)
def _frame_count(path: Path, decoder: str = "pyav") -> int:
    """A video's frame count, probed once per process (an unreadable file raises again each time)."""
    return decoders.module(decoder).probe(path)[0]


def _open_cache(folder: Path, root: Path) -> Cache:
    if folder not in _caches:
        _caches[folder] = Cache(folder, root)
    return _caches[folder]


def _key(indices, frames: int, size: int, stride, training: bool) -> tuple:
    """A batch request as the data set keys it: every clip's stride spelt out."""
    indices = tuple(int(i) for i in indices)
    strides = (stride,) * len(indices) if isinstance(stride, int) else tuple(int(s) for s in stride)
    return indices, frames, size, strides, training


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


class VideoDataset:
    pixel_std = sampling.STD  # per channel, pixels over [0, 1] (the normalisation of sampling.to_tensor)

    def __init__(self, layout: str, root: str | Path, part: str, seed: int, length: int | None = None,
                 views: list[int] | tuple[int, int] = (1, 1), workers: int = 0, cache: bool = True,
                 flip: bool | None = None, decoder: str = "auto", repeats: int = 1, prefetch: int = 2,
                 device: str = "cpu", **layout_args: Any):
        """`part` is "train" or "val"; `layout_args` may hold `split` (1, 2 or 3) for ucf101 and hmdb51. `device`: the
        type of device the batches are for (on CUDA they are assembled there, sampling.to_tensor).

        `repeats` R: training indices i with the same i div R are clips of one video (`_video(i)`), so a batch of
        B clips holds B / R videos, each decoded once. A batch size that is not a multiple of R is
        allowed: a video's clips may then straddle two batches (or the parts of a batch that several processes
        take) and that video is decoded twice, once for each. Evaluation ignores repeats (one clip per video)."""
        unknown = sorted(set(layout_args) - {"split"})
        if unknown:
            raise ConfigError(f"data_args for {layout}: unknown key {unknown[0]!r}; allowed: split, views, workers, "
                              "prefetch, cache, flip, decoder, repeats")
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            raise ConfigError(f"data_args.repeats is a whole number >= 1 (clips taken from each training video), "
                              f"got {repeats!r}")
        self.decoder = decoders.resolve(decoder)
        if (not isinstance(views, (list, tuple)) or len(views) != 2
                or not all(isinstance(v, int) and v >= 1 for v in views)):
            raise ConfigError(f"data_args.views is [clips, crops] of whole numbers >= 1, got {views!r}")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ConfigError(f"data_args.workers is a whole number >= 0, got {workers!r}")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
            raise ConfigError(f"data_args.prefetch is a whole number >= 1 (training batches decoded ahead), "
                              f"got {prefetch!r}")
        self.layout, self.root, self.part, self.seed = layout, Path(root).expanduser(), part, seed
        index = read_index(layout, self.root, layout_args.get("split", 1))
        self.classes = index.classes
        self.num_classes = len(index.classes)
        self.views = (int(views[0]), int(views[1]))
        self.flip = layout in MIRROR_FREE if flip is None else bool(flip)
        self.use_cache = bool(cache)
        self.skipped: dict[str, str] = {}
        self.videos: list[tuple[Path, int]] = []
        for path, label in index.videos[part]:
            reason = missing_or_empty(path)
            if reason:
                self.skipped[str(path)] = reason
            else:
                self.videos.append((path, label))
        if not self.videos:
            raise ConfigError(f"{layout}:{self.root} has no readable {part} video (e.g. {next(iter(self.skipped))}: "
                              f"{next(iter(self.skipped.values()))})")
        if self.skipped:
            warnings.warn(f"{layout}:{self.root} {part}: {len(self.skipped)} listed videos are missing or empty, "
                          f"skipped (e.g. {next(iter(self.skipped))})", stacklevel=2)
        self.order = np.random.default_rng(EVAL_ORDER_SEED).permutation(len(self.videos))
        self.length = len(self.videos) if length is None else min(length, len(self.videos))
        self.workers, self.prefetch, self.device = workers, prefetch, device
        self.repeats = repeats if part == "train" else 1
        self._pool: ProcessPoolExecutor | None = None
        self._ahead: dict[tuple, list[tuple[list[int], Future]]] = {}  # batches read ahead: [(positions, task)]
        self._caches: dict[int, Cache | None] = {}  # by clip size
        self._epoch: tuple[int, np.ndarray | None] = (-1, None)  # the training order of the current epoch
        self._draw_seed = _seed(seed, part) % 2**63

    def __len__(self) -> int:
        return self.length

    def skipped_videos(self) -> dict[str, str]:
        return dict(self.skipped)

    @property
    def reads_ahead(self) -> bool:
        """Whether training batches are decoded while the model trains (by workers), so that time spent getting one
        is a wait; without workers they are decoded in line, between steps."""
        return self.workers > 0

    def _video(self, index: int) -> int:
        n = len(self.videos)
        if self.part == "train":
            epoch, k = divmod(index // self.repeats, n)
            if self._epoch[0] != epoch:
                self._epoch = (epoch, np.random.default_rng([self.seed, epoch]).permutation(n))
            return int(self._epoch[1][k])
        return int(self.order[index % n])

    def labels(self, indices) -> torch.Tensor:
        return torch.tensor([self.videos[self._video(int(i))][1] for i in indices], dtype=torch.int64)

    def batch(self, indices, frames: int, size: int, stride, training: bool,
              upcoming: Callable[[int], BatchRequest] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips (B, 3, T, S, S) normalised float32 and labels (B,); in evaluation with several views
        (B, V, 3, T, S, S). stride: one int, one per clip, or 0 for segment sampling. `upcoming(k)`: the k-th
        training batch the caller will ask for after this one, for the decoding workers to read `prefetch` of them
        ahead (default: the batches of this shape that follow this one)."""
        indices = [int(i) for i in indices]
        if not indices:
            raise ValueError("indices is empty")
        key = _key(indices, frames, size, stride, training)
        planned = []
        if self.workers and training:  # the next batches, to decode while the model trains on this one
            upcoming = upcoming or consecutive(BatchRequest(*key[:4]))
            planned = [_key(*upcoming(k), training=True) for k in range(1, self.prefetch + 1)]
            self._drop_ahead(keep={key, *planned})  # before this batch is asked for: it need not wait behind them
        clips, labels = self._take(key)
        for following in planned:
            if following not in self._ahead:
                self._ahead[following] = self._submit(following)
        if not clips:  # every clip of an evaluation batch was unreadable
            views = self.views[0] * self.views[1]
            return torch.empty((0, views, 3, frames, size, size) if views > 1 else (0, 3, frames, size, size)), \
                torch.empty(0, dtype=torch.int64)
        video = sampling.to_tensor(np.stack(clips), self.device)  # (B, V, 3, T, S, S)
        if video.shape[1] == 1:
            video = video[:, 0]
        return video, torch.tensor(labels, dtype=torch.int64)

    # ---- loading, in place or in worker processes ---------------------------------------------------------

    def _request(self, index: int, video: int, frames: int, size: int, stride: int, training: bool) -> ClipRequest:
        if size not in self._caches:
            self._caches[size] = find_cache(self.root, sampling.short_side(size)) if self.use_cache else None
        cache = self._caches[size]
        return ClipRequest(self.videos[video][0], index, frames, size, stride, training, self.flip, self.views,
                           self._draw_seed, cache.folder if cache else None, self.root, self.decoder)

    def _requests(self, key: tuple) -> list[ClipRequest]:
        indices, frames, size, strides, training = key
        return [self._request(i, self._video(i), frames, size, s, training)
                for i, s in zip(indices, strides, strict=True)]

    def _submit(self, key: tuple) -> list[tuple[list[int], Future]]:
        """One task per worker, each a chunk of the batch's clips (one round trip per worker, not per clip) with
        all the clips of a video in one chunk, decoded once; each task with the positions of its clips."""
        if self._pool is None:
            on_gpu = {"initializer": torch.cuda.set_device, "initargs": (torch.cuda.current_device(),)} \
                if self.decoder == "torchcodec-cuda" else {}  # this process's GPU (a rank's under DDP), not GPU 0
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"), **on_gpu)
        requests = self._requests(key)
        return [(chunk, self._pool.submit(load_clips, [requests[n] for n in chunk]))
                for chunk in chunk_groups(group_by_video(requests), self.workers)]

    def _load_in_place(self, key: tuple) -> list[np.ndarray | Unreadable | None]:
        """The batch's clips decoded here, a video's clips once (None for videos already known unreadable)."""
        requests = self._requests(key)
        readable = [n for n, r in enumerate(requests) if str(r.path) not in self.skipped]
        loaded: list[np.ndarray | Unreadable | None] = [None] * len(requests)
        for n, clip in zip(readable, load_clips([requests[n] for n in readable]), strict=True):
            loaded[n] = clip
        return loaded

    def _drop_ahead(self, keep: set[tuple]) -> None:
        """Cancel the batches read ahead that are not among `keep` (a plan that changed)."""
        for key in [k for k in self._ahead if k not in keep]:
            for _, future in self._ahead.pop(key):
                future.cancel()

    def _take(self, key: tuple) -> tuple[list[np.ndarray], list[int]]:
        indices, frames, size, strides, training = key
        futures = self._ahead.pop(key, None)
        if futures is None and self.workers:
            futures = self._submit(key)
        if futures:
            loaded: list = [None] * len(indices)
            for positions, future in futures:
                for n, clip in zip(positions, future.result(), strict=True):
                    loaded[n] = clip
        else:
            loaded = self._load_in_place(key)
        clips, labels = [], []
        for index, stride, clip in zip(indices, strides, loaded, strict=True):
            video = self._video(index)
            first_error = None
            for _ in range(len(self.videos) if training else 1):
                path = str(self.videos[video][0])
                try:
                    if path in self.skipped:
                        raise Unreadable(self.skipped[path])
                    if isinstance(clip, Unreadable):
                        raise clip
                    if clip is None:
                        clip = load_clip(self._request(index, video, frames, size, stride, training))
                    break
                except Unreadable as err:
                    if path not in self.skipped:
                        self.skipped[path] = str(err)
                        warnings.warn(f"skipping unreadable video {path}: {err}", stacklevel=3)
                    first_error = first_error or err
                    video, clip = (video + 1) % len(self.videos), None  # in training the next video stands in
            else:
                if not training:
                    continue  # dropped from the evaluation set, never replaced
                raise RuntimeError(f"no readable video in {self.layout}:{self.root} ({first_error})")
            clips.append(clip)
            labels.append(self.videos[video][1])
        return clips, labels

    def close(self) -> None:
        """Stop the decoding workers (they also stop when the data set is garbage-collected)."""
        self._ahead.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __del__(self):
        if getattr(self, "_pool", None) is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def missing_or_empty(path: Path) -> str | None:
    try:
        return "empty file" if os.path.getsize(path) == 0 else None
    except FileNotFoundError:
        return "missing"
    except OSError as err:
        return f"{type(err).__name__}: {err}"
