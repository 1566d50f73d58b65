"""Which frames and pixels a clip takes from a video.

Temporal: dense (frames at a stride from a random start in training, centred in evaluation, or evenly spread
starts for several views) or segment-based (stride 0: one frame per equal segment, TSN style: a random place
in its segment in training, the centre in evaluation). Spatial: the frames arrive with their short side at
`short_side(size)`; training takes a random size x size crop and a random horizontal flip (unless the data
set says left and right matter), evaluation the centre crop or, for 3 crops, both ends and the centre of
the long side.
"""

import functools

import numpy as np
import torch
import torch.nn.functional as F

MEAN = (0.45, 0.45, 0.45)  # PySlowFast's Kinetics statistics
STD = (0.225, 0.225, 0.225)


def short_side(size: int) -> int:
    """Resize the short side to this before cropping `size` (the usual 256 -> 224 ratio)."""
    return round(size * 256 / 224)


def dense_indices(count: int, frames: int, stride: int, start: int) -> list[int]:
    return [min(count - 1, start + k * stride) for k in range(frames)]


def dense_starts(count: int, frames: int, stride: int, rng: np.random.Generator | None, views: int = 1) -> list[int]:
    """Start frames: one random start in training (rng given), else `views` starts evenly spread (one: centred)."""
    room = max(0, count - ((frames - 1) * stride + 1))
    if rng is not None:
        return [int(rng.integers(0, room + 1))]
    if views == 1:
        return [room // 2]
    return [round(v * room / (views - 1)) for v in range(views)]


def segment_indices(count: int, frames: int, rng: np.random.Generator | None, view: int = 0,
                    views: int = 1) -> list[int]:
    """One frame per equal segment; in evaluation view v of V takes the point (v + 0.5) / V of each segment."""
    length = count / frames
    if rng is not None:
        offsets = rng.random(frames)
    else:
        offsets = np.full(frames, (view + 0.5) / views)
    return [min(count - 1, int(length * (k + o))) for k, o in enumerate(offsets)]


def crop_offsets(height: int, width: int, size: int, rng: np.random.Generator | None,
                 crops: int = 1) -> list[tuple[int, int]]:
    """(top, left) of each crop."""
    dy, dx = max(0, height - size), max(0, width - size)
    if rng is not None:
        return [(int(rng.integers(0, dy + 1)), int(rng.integers(0, dx + 1)))]
    if crops == 1:
        return [(dy // 2, dx // 2)]
    spread = [round(c * (dy if dy > dx else dx) / (crops - 1)) for c in range(crops)]
    return [(s, dx // 2) if dy > dx else (dy // 2, s) for s in spread]


def crop(frames: np.ndarray, size: int, top: int, left: int, flip: bool) -> np.ndarray:
    """A size x size crop of uint8 (T, H, W, 3) frames whose short side is at least size."""
    out = frames[:, top:top + size, left:left + size]
    return out[:, :, ::-1] if flip else out


def resize_short(frames: np.ndarray, short: int) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 resized (antialiased) so the short side is `short`; unchanged if it already is."""
    if min(frames.shape[1:3]) == short:
        return frames
    return resize_short_tensor(torch.from_numpy(np.ascontiguousarray(frames)), short).numpy()


def resize_short_tensor(frames: torch.Tensor, short: int) -> torch.Tensor:
    """resize_short on a uint8 tensor (T, H, W, 3), on whatever device it lies (decoded on a GPU: resized there)."""
    height, width = frames.shape[1:3]
    if min(height, width) == short:
        return frames
    scale = short / min(height, width)
    target = (max(short, round(height * scale)), max(short, round(width * scale)))
    x = F.interpolate(frames.permute(0, 3, 1, 2).float(), size=target, mode="bilinear", antialias=True,
                      align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def to_tensor(clips: np.ndarray, device: str = "cpu") -> torch.Tensor:
    """uint8 (..., T, H, W, 3) -> normalised float32 (..., 3, T, H, W) on `device`. For CUDA the bytes are copied
    from page-locked memory, queued behind the GPU's work rather than waiting for it, and normalised there: a quarter
    of the float32's transfer, and no normalising on the CPU."""
    x = torch.from_numpy(np.ascontiguousarray(clips))
    if device == "cuda":
        x = x.pin_memory().to(device, non_blocking=True)
    elif device != "cpu":
        x = x.to(device)
    x = x.movedim(-1, -4).contiguous()  # reorder the bytes first
    scale, shift = _normalisation(x.device)
    return torch.addcmul(shift, x.float(), scale)


@functools.cache
def _normalisation(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) per channel, (3, 1, 1, 1), made once per device: a tensor made from Python numbers on a GPU is
    a copy that waits for the GPU, which would make every batch wait for the step before it."""
    std, mean = torch.tensor(STD), torch.tensor(MEAN)
    return (1 / (255 * std)).view(3, 1, 1, 1).to(device), (-mean / std).view(3, 1, 1, 1).to(device)
