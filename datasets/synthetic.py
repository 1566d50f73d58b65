"""Synthetic video classification data, generated on the fly.

Each video shows a few objects (the *targets*, ten by default) acting alike over a static, smoothly
textured background, with optional *distractor* objects that wander at random and mild per-pixel noise.
The class is what the targets do (each target with its own position, phase, colour and shape). Classes
come in pairs whose members are the same process run forwards and backwards in time:

    move_left / move_right                  the target slides horizontally (wrapping round the frame)
    move_up / move_down                     the target slides vertically (wrapping round the frame)
    grow / shrink                           the target's size follows a sawtooth: slow growth, sudden reset
    orbit_clockwise / orbit_counterclockwise  the target circles a fixed centre
    fade_in / fade_out                      the target's opacity follows a sawtooth
    brighten / darken                       the target's luminance follows a sawtooth

The first `num_classes` (default 10) of these are used, in this order.

Why the classes need frame order: every process above is stationary (its phase at time zero is drawn
uniformly), so the target's state in any single frame (position, size, opacity, luminance) has the same
distribution at every time, in both members of a pair. Time reversal maps one member onto the other: a clip
of one class played backwards is distributed exactly as a clip of the other (the distractors' paths, the
static background and the noise are time-reversible too). A single frame, or the bag of a clip's frames
with their order thrown away, is therefore at chance within a pair; only the order of frames tells the
members apart. Colour, shape (disc, diamond or square) and the background are drawn independently of the
class; distractors look like targets but follow a smooth random path.

Graded cues (on by default, 0 turns each off). Order-only classes give a model no first-order signal to
start from (a linear function of the pixels has the same mean in both members of a pair), so a transformer
trained from scratch sat on a chance plateau that some seeds left within a minute and others did not. Two
cues grade the task without letting one frame solve it:

    appearance   the targets' colour is mixed with a colour of the class's *pair* (weight drawn per video up to
                 `appearance`): one frame tells the pair, never the member within it.
    drift        every target also drifts sideways in its class's direction (+1 or -1, speed drawn per video up to
                 `drift` frame widths per video, from a uniformly drawn start): an order cue, the same in
                 every frame's distribution, that is shared by all processes and easier than each one.
    grading      how the two cues' strengths are drawn per video: log-uniformly over `grading` decades below their
                 maximum (default 1: from a tenth of it to all of it), or uniformly in [0, max) with 0. Graded
                 difficulty spreads learning over budgets: strong cues are learnt first, weaker ones with more
                 compute, so accuracy keeps rising over a doubling ladder of budgets and seeds agree on where it is
                 (README, docs/calibration.md).

Learning curves then rise from the first evaluations (the pair), and the members follow as motion is learnt.
Other difficulty knobs (see `SyntheticVideos`): `noise`, `distractors`, `motion` and `targets`. The
defaults are the calibrated workload (docs/calibration.md): measured, not chosen by hand.

Continuous time and space: a video is a scene defined for every time tau and every point of [0, 1]^2; one
video of `NATIVE_FRAMES` native frames covers tau in [0, 1). A request for a clip of F frames at stride s
renders frame k at native frame `start + k * s`, tau = that / NATIVE_FRAMES, sampling the scene at pixel
centres, so the same video asked at two sizes or strides shows the same scene. Clips start at a position
drawn per (index, frames, stride) when training and are centred otherwise; a clip longer than the video
is centred and its time runs before 0 and past 1, where the (periodic) motion simply carries on.

Determinism: everything random about video `index` comes from a `torch.Generator` seeded by a hash of
(seed, split, index), so the same request gives bitwise the same tensors whatever else is in the batch,
and the train and val splits are unrelated streams. The val split ignores the seed: every run is scored on the
same evaluation set, as with real videos. The global RNG is never touched. Labels cycle through
the classes (`index % num_classes`), so a validation set is balanced.
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch

from vtbench.core.shape import BatchRequest

# (name, process the target follows, direction in which the process runs)
CLASSES: tuple[tuple[str, str, int], ...] = (
    ("move_left", "shift_x", -1),
    ("move_right", "shift_x", +1),
    ("move_up", "shift_y", -1),  # image rows grow downwards
    ("move_down", "shift_y", +1),
    ("grow", "scale", +1),
    ("shrink", "scale", -1),
    ("orbit_clockwise", "orbit", +1),  # clockwise on screen, since y points down
    ("orbit_counterclockwise", "orbit", -1),
    ("fade_in", "opacity", +1),
    ("fade_out", "opacity", -1),
    ("brighten", "luminance", +1),
    ("darken", "luminance", -1),
)
PROCESSES = ("shift_x", "shift_y", "scale", "orbit", "opacity", "luminance")
SPLITS = ("train", "val")
VAL_LENGTH = 512
UNBOUNDED_LENGTH = 2**31 - 1  # len() of the train split: every index is a fresh video

# Scene constants, in scene units (the frame is [0, 1]^2) and pixel values in [0, 1].
BACKGROUND_WAVES = 6
BACKGROUND_MAX_FREQUENCY = 4.0  # cycles across the frame
BACKGROUND_CONTRAST = 0.12
EDGE_WIDTH = 0.025  # objects have soft edges, so renders at different sizes agree
SPEED_RANGE = (1.0, 2.0)  # of the class processes at motion=1: sweeps, turns or cycles per video
SCALE_RANGE = (0.05, 0.2)  # radius range swept by grow / shrink
DARKEST = 0.15  # luminance at the dark end of brighten / darken
DRAWS_PER_VIDEO = 40  # uniforms for the background and the first target
DRAWS_PER_TARGET = 12
DRAWS_PER_DISTRACTOR = 13

# The appearance cue: one colour per pair of classes (never per class: it tells the pair, not the direction).
PAIR_COLOURS = torch.tensor([[1.0, 0.25, 0.25], [0.25, 1.0, 0.25], [0.25, 0.25, 1.0], [1.0, 1.0, 0.25],
                             [0.25, 1.0, 1.0], [1.0, 0.25, 1.0]])

# Pixel statistics of the rendered scenes at the default knobs, used to normalise them.
PIXEL_MEAN = 0.51
PIXEL_STD = 0.16


class SyntheticVideos:
    """Videos whose classes can only be told apart by the order of their frames; see the module docstring.

    `split` is "train" or "val". `len()` is `length`, by default 512 for val; the train split without a
    `length` is an endless stream of fresh videos and reports 2**31 - 1 (draw indices from it at random;
    do not build a permutation of it). Difficulty knobs:

    - `noise`: std of the Gaussian pixel noise, pixels ranging over [0, 1] (default 0.02);
    - `distractors`: how many look-alike objects wander at random over the scene (default 0);
    - `motion`: speed of every class process, 1 meaning 1 to 2 sweeps, turns or sawtooth cycles per video
      (default 1.0); smaller is subtler, so harder;
    - `targets`: how many objects act out the class (default 6); fewer is harder.
    """

    NATIVE_FRAMES = 32

    shareable = True  # its val split is fixed by the data arguments alone: runs may share the rendered set
    pixel_std = (PIXEL_STD,) * 3  # per channel, pixels over [0, 1]: normalised 1 is 255 x this in grey levels

    def __init__(
        self,
        split: str,
        seed: int = 0,
        num_classes: int = 10,
        length: int | None = None,
        noise: float = 0.02,
        distractors: int = 0,
        motion: float = 1.0,
        targets: int = 10,
        appearance: float = 1.0,
        drift: float = 1.0,
        grading: float = 1.0,
        ahead: bool = False,
        pin: bool = False,
    ):
        if targets < 1:
            raise ValueError(f"targets must be at least 1, got {targets}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not 2 <= num_classes <= len(CLASSES):
            raise ValueError(f"num_classes must be between 2 and {len(CLASSES)}, got {num_classes}")
        if length is not None and length < 1:
            raise ValueError(f"length must be positive, got {length}")
        if not 0 <= appearance <= 1:
            raise ValueError(f"appearance must lie in [0, 1], got {appearance}")
        if drift < 0:
            raise ValueError(f"drift must be non-negative, got {drift}")
        if not 0 <= grading <= 6:
            raise ValueError(f"grading must lie in [0, 6] decades, got {grading}")
        if noise < 0 or distractors < 0 or motion < 0:
            raise ValueError(
                f"noise, distractors and motion must be non-negative, got {noise}, {distractors}, {motion}"
            )
        self.split = split
        self.seed = seed if split == "train" else 0  # one evaluation set, whatever the run's seed
        self.num_classes = num_classes
        self.class_names = [name for name, _, _ in CLASSES[:num_classes]]
        default_length = UNBOUNDED_LENGTH if split == "train" else VAL_LENGTH
        self.length = default_length if length is None else length
        self.noise = noise
        self.distractors = distractors
        self.targets = targets
        self.motion = motion
        self.appearance = appearance
        self.drift = drift
        self.grading = grading
        self.ahead = ahead  # render the next training batch in the background (build_dataset says where)
        self.pin = pin  # ... into page-locked memory, for a copy to a CUDA device that does not wait
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: tuple[tuple, Future] | None = None

    def close(self) -> None:
        """Stop rendering ahead (the run has ended)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool, self._ahead = None, None

    def __len__(self) -> int:
        """`length`; the train split without one is unbounded and says so with 2**31 - 1."""
        return self.length

    def skipped_videos(self) -> dict[str, str]:
        return {}  # nothing to read, nothing to skip

    @property
    def reads_ahead(self) -> bool:
        """Whether training batches are prepared while the model trains (so that time spent getting one is a wait)."""
        return self.ahead

    def labels(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """The class of each index (int64), without rendering anything."""
        return torch.tensor([i % self.num_classes for i in self._checked(indices)], dtype=torch.int64)

    def batch(
        self,
        indices: Sequence[int] | torch.Tensor,
        frames: int,
        size: int,
        stride: int | Sequence[int],
        training: bool,
        upcoming: Callable[[int], BatchRequest] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Render clips of the given videos: video float32 (B, 3, frames, size, size), normalised to roughly
        zero mean and unit variance, and labels int64 (B,). `stride` is one int or one per clip; stride 0 asks
        for segment (TSN-style) sampling: one frame per equal segment of the whole video, at a random place in
        its segment in training and at its centre otherwise. `upcoming(1)`: the batch the caller will ask for next;
        a set made with `ahead` renders it in a background thread while the caller trains on this one (rendering
        is torch work, which leaves the interpreter free)."""
        indices = self._checked(indices)
        if not self.ahead:
            return self._render(indices, frames, size, stride, training)
        key = _key(indices, frames, size, stride, training)
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] != key:
            ahead[1].cancel()
        result = ahead[1].result() if ahead is not None and ahead[0] == key else None
        following = upcoming(1) if upcoming is not None else None
        if following is not None and max(following.indices) < self.length:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="render")
            request = (list(following.indices), following.frames, following.size, following.stride, training)
            self._ahead = (_key(*request), self._pool.submit(self._render_ahead, *request))
        return result if result is not None else self._render(indices, frames, size, stride, training)

    def _render_ahead(self, *request) -> tuple[torch.Tensor, torch.Tensor]:
        video, labels = self._render(*request)
        return (video.pin_memory(), labels.pin_memory()) if self.pin else (video, labels)

    def _render(self, indices: list[int], frames: int, size: int, stride: int | Sequence[int],
                training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if not indices:
            raise ValueError("indices is empty")
        if frames < 1 or size < 1:
            raise ValueError(f"frames and size must be positive, got {frames} and {size}")
        segments = isinstance(stride, int) and stride == 0
        strides = [1] * len(indices) if segments else _per_clip_strides(stride, len(indices))
        generators = [torch.Generator().manual_seed(_hash(self.seed, self.split, i)) for i in indices]
        draw_count = DRAWS_PER_VIDEO + (self.targets - 1) * DRAWS_PER_TARGET + self.distractors * DRAWS_PER_DISTRACTOR
        draws = _Draws(torch.stack([torch.rand(draw_count, generator=g) for g in generators]))
        tau = self._segment_times(indices, frames, training) if segments else self._clip_times(
            indices, frames, strides, training)
        coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size  # pixel centres

        labels = self.labels(indices)
        canvas = _background(draws, coords).expand(-1, -1, tau.shape[1], -1, -1).clone()  # painted in place
        # the target draws first, so that its scene does not depend on the number of distractors
        targets = [_target_track(draws, labels, tau, self.motion) for _ in range(self.targets)]
        if self.appearance > 0:  # the pair's colour, mixed in by a weight drawn per video (graded)
            weight = self.appearance * self._strength(indices, "appearance")
            pair_colour = PAIR_COLOURS[labels // 2]
            for track in targets:
                track.colour = (1 - weight) * track.colour + weight * pair_colour
        if self.drift > 0:  # every target drifts sideways in its class's direction, at a speed drawn per video (graded)
            speed = self.drift * self._strength(indices, "drift")
            direction = torch.tensor([float(CLASSES[c][2]) for c in labels.tolist()])[:, None]
            for k, track in enumerate(targets):  # from anywhere on the (wrapping) frame: stationary in time
                track.x = _fraction(track.x + self._uniform(indices, "drift start", k) + direction * speed * tau)
        distractors = [_distractor_track(draws, tau) for _ in range(self.distractors)]
        scratch = torch.empty_like(canvas)
        for track in [*distractors, *targets]:  # the targets on top
            _paint(canvas, track, coords, scratch)
        video = canvas.sub_(PIXEL_MEAN).div_(PIXEL_STD)
        if self.noise > 0:
            pixel_noise = torch.empty_like(video)
            for clip, g in zip(pixel_noise, generators, strict=True):
                torch.randn(clip.shape, generator=g, out=clip)
            video.add_(pixel_noise.mul_(self.noise / PIXEL_STD))
        return video, labels

    def _strength(self, indices: list[int], what: str) -> torch.Tensor:
        """(B, 1) strengths of a graded cue: uniform in [0, 1), or log-uniform in [10**-grading, 1]."""
        u = self._uniform(indices, what)
        return u if self.grading == 0 else 10 ** (-self.grading * u)

    def _uniform(self, indices: list[int], *what: object) -> torch.Tensor:
        """(B, 1) uniforms in [0, 1), one per video, from a stream of their own (the scene's draws stay as they are)."""
        return torch.tensor([[_hash(self.seed, self.split, i, *what) % 1_000_000 / 1_000_000] for i in indices])

    def _checked(self, indices: Sequence[int] | torch.Tensor) -> list[int]:
        if isinstance(indices, torch.Tensor):
            indices = indices.tolist()
        indices = [operator.index(i) for i in indices]
        for i in indices:
            if not 0 <= i < self.length:
                raise IndexError(f"index {i} out of range for a {self.split} set of length {self.length}")
        return indices

    def _clip_start(self, index: int, frames: int, stride: int, training: bool) -> int:
        room = self.NATIVE_FRAMES - frames * stride
        if training and room >= 0:
            return _hash(self.seed, self.split, index, "start", frames, stride) % (room + 1)
        return room // 2  # centred; negative when the clip is longer than the video

    def _segment_times(self, indices: list[int], frames: int, training: bool) -> torch.Tensor:
        """tau of one frame per equal segment of the video, (B, frames)."""
        offsets = _segment_offsets(self.seed, self.split, indices, frames, training)
        return (torch.arange(frames, dtype=torch.float32) + offsets) / frames

    def _clip_times(self, indices: list[int], frames: int, strides: list[int], training: bool) -> torch.Tensor:
        """tau of every frame of every clip, (B, frames)."""
        starts = [self._clip_start(i, frames, s, training) for i, s in zip(indices, strides, strict=True)]
        native = (
            torch.tensor(starts, dtype=torch.float32)[:, None]
            + torch.arange(frames, dtype=torch.float32) * torch.tensor(strides, dtype=torch.float32)[:, None]
        )
        return native / self.NATIVE_FRAMES


def _segment_offsets(seed: int, split: str, indices: list[int], frames: int, training: bool) -> torch.Tensor:
    if not training:
        return torch.full((len(indices), 1), 0.5)
    return torch.tensor([[_hash(seed, split, i, "segment", frames) % 1000 / 1000] for i in indices])


def _key(indices: Sequence[int], frames: int, size: int, stride: int | Sequence[int], training: bool) -> tuple:
    return tuple(indices), frames, size, stride if isinstance(stride, int) else tuple(stride), training


def _hash(*parts: object) -> int:
    """A stable 63-bit hash (Python's hash() is salted per process)."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _per_clip_strides(stride: int | Sequence[int], clips: int) -> list[int]:
    try:
        strides = [operator.index(stride)] * clips
    except TypeError:
        strides = [operator.index(s) for s in stride]
    if len(strides) != clips:
        raise ValueError(f"got {len(strides)} strides for {clips} clips")
    if min(strides) < 1:
        raise ValueError(f"strides must be positive, got {strides}")
    return strides


class _Draws:
    """Hands out consecutive columns of per-video uniforms: each scene parameter gets its own column,
    so a parameter's value depends only on its video, never on the rest of the batch."""

    def __init__(self, uniforms: torch.Tensor):
        self.uniforms = uniforms  # (B, draws)
        self.used = 0

    def take(self, low: float = 0.0, high: float = 1.0, count: int = 1) -> torch.Tensor:
        """(B, count) uniforms in [low, high)."""
        if self.used + count > self.uniforms.shape[1]:
            raise RuntimeError("scene needs more random draws than were made; raise DRAWS_PER_*")
        columns = self.uniforms[:, self.used : self.used + count]
        self.used += count
        return low + (high - low) * columns


@dataclass
class _Track:
    """One object over a clip; per-frame quantities are (B, F) or (B, 1) when constant."""

    x: torch.Tensor
    y: torch.Tensor
    radius: torch.Tensor
    opacity: torch.Tensor
    gain: torch.Tensor  # multiplies the colour
    colour: torch.Tensor  # (B, 3)
    shape: torch.Tensor  # (B, 1): 0 diamond, 1 disc, 2 square


def _background(draws: _Draws, coords: torch.Tensor) -> torch.Tensor:
    """A smooth random texture (a sum of plane waves), (B, 3, 1, H, W): the same in every frame."""
    base = draws.take(0.3, 0.7, count=3)
    tint = draws.take(0.5, 1.0, count=3)
    texture = torch.zeros(())
    power = torch.zeros(())
    for _ in range(BACKGROUND_WAVES):
        freq_x = draws.take(-BACKGROUND_MAX_FREQUENCY, BACKGROUND_MAX_FREQUENCY)
        freq_y = draws.take(-BACKGROUND_MAX_FREQUENCY, BACKGROUND_MAX_FREQUENCY)
        phase = draws.take(0.0, 2 * math.pi)
        amplitude = draws.take(0.2, 1.0)
        # cos(a + b) = cos a cos b - sin a sin b: trig on (B, W) and (B, H) instead of (B, H, W)
        along_x = 2 * math.pi * freq_x * coords + phase
        along_y = 2 * math.pi * freq_y * coords
        wave = along_y.cos()[:, :, None] * along_x.cos()[:, None, :] - (
            along_y.sin()[:, :, None] * along_x.sin()[:, None, :]
        )
        texture = texture + amplitude[:, :, None] * wave
        power = power + amplitude**2 / 2
    texture = texture / power.sqrt()[:, :, None]  # unit spatial variance
    background = base[:, :, None, None] + BACKGROUND_CONTRAST * tint[:, :, None, None] * texture[:, None]
    return background[:, :, None]


def _appearance(draws: _Draws) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Colour (B, 3), shape (B, 1) and radius (B, 1), drawn alike for targets and distractors."""
    colour = draws.take(0.25, 1.0, count=3)
    shape = draws.take(0.0, 3.0).floor().clamp(max=2)
    radius = draws.take(0.08, 0.15)
    return colour, shape, radius


def _target_track(draws: _Draws, labels: torch.Tensor, tau: torch.Tensor, motion: float) -> _Track:
    colour, shape, radius = _appearance(draws)
    x = draws.take(0.25, 0.75)
    y = draws.take(0.25, 0.75)
    orbit_radius = draws.take(0.12, 0.2)
    phase_at_zero = draws.take()
    speed = draws.take(*SPEED_RANGE) * motion

    process = torch.tensor([PROCESSES.index(CLASSES[c][1]) for c in labels.tolist()])[:, None]
    direction = torch.tensor([float(CLASSES[c][2]) for c in labels.tolist()])[:, None]
    progress = _fraction(phase_at_zero + direction * speed * tau)  # a sawtooth in [0, 1), (B, F)

    def follows(name: str) -> torch.Tensor:
        return process == PROCESSES.index(name)

    angle = 2 * math.pi * progress
    orbit = follows("orbit")
    x = torch.where(orbit, x + orbit_radius * angle.cos(), x)
    y = torch.where(orbit, y + orbit_radius * angle.sin(), y)
    smallest, largest = SCALE_RANGE
    one = torch.ones(())
    return _Track(
        x=torch.where(follows("shift_x"), progress, x),
        y=torch.where(follows("shift_y"), progress, y),
        radius=torch.where(follows("scale"), smallest + (largest - smallest) * progress, radius),
        opacity=torch.where(follows("opacity"), progress, one),
        gain=torch.where(follows("luminance"), DARKEST + (1 - DARKEST) * progress, one),
        colour=colour,
        shape=shape,
    )


def _distractor_track(draws: _Draws, tau: torch.Tensor) -> _Track:
    """A look-alike object on a smooth random path, a sinusoid per axis (time-reversible in distribution)."""
    colour, shape, radius = _appearance(draws)
    coordinates = []
    for _ in range(2):
        centre = draws.take(0.25, 0.75)
        amplitude = draws.take(0.08, 0.2)
        frequency = draws.take(0.5, 1.5)  # oscillations per video
        phase = draws.take(0.0, 2 * math.pi)
        coordinates.append(centre + amplitude * (2 * math.pi * frequency * tau + phase).sin())
    one = torch.ones_like(radius)
    return _Track(coordinates[0], coordinates[1], radius, one, one, colour, shape)


def _paint(canvas: torch.Tensor, track: _Track, coords: torch.Tensor, scratch: torch.Tensor) -> None:
    """Blend an object over the canvas (B, 3, F, H, W), in place (`scratch`: a tensor of the canvas's shape to
    work in, reused from object to object rather than allocated for each).

    Distances use only exactly rounded ops (abs, sqrt, max), so each pixel's value is independent of the
    batch it is rendered in; the frame wraps round, as the sliding classes cross its edges. Each clip computes
    only its own shape's distance, and the arithmetic runs in place: the same operations on each pixel, in the same
    order, as blending every shape's distance into new tensors (bitwise the same clips, tested).
    """
    dx = _wrapped(coords - track.x[..., None]).abs()[:, :, None, :]  # (B, F, 1, W)
    dy = _wrapped(coords - track.y[..., None]).abs()[:, :, :, None]  # (B, F, H, 1)
    batch, frames = canvas.shape[0], canvas.shape[2]
    dx, dy = dx.expand(batch, frames, -1, -1), dy.expand(batch, frames, -1, -1)
    distance = torch.empty(batch, frames, dy.shape[2], dx.shape[3])
    shape = track.shape[:, 0]
    for kind, measure in ((0, _diamond), (1, _disc), (2, _square)):
        clips = (shape == kind).nonzero()[:, 0]
        if len(clips):
            distance[clips] = measure(dx[clips], dy[clips])
    coverage = track.radius[..., None, None] - distance
    coverage.div_(EDGE_WIDTH).add_(0.5).clamp_(0, 1).mul_(track.opacity[..., None, None])
    colour = (track.colour[:, :, None] * track.gain[:, None, :])[..., None, None]  # (B, 3, F, 1, 1)
    change = torch.sub(colour, canvas, out=scratch)
    canvas.add_(change.mul_(coverage[:, None]))


def _diamond(dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    return dx + dy


def _disc(dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    return (dx * dx + dy * dy).sqrt_()


def _square(dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    return torch.maximum(dx, dy)


def _fraction(x: torch.Tensor) -> torch.Tensor:
    return x - x.floor()


def _wrapped(offset: torch.Tensor) -> torch.Tensor:
    """An offset on the unit torus, in [-0.5, 0.5]."""
    return offset - offset.round()
