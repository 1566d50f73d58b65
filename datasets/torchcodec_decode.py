"""Decoding the frames a clip needs with TorchCodec (`torchcodec.decoders.VideoDecoder`), the same contract as
datasets/decode.py (PyAV): `probe(path)` and `read_frames(path, indices, count, short)` giving uint8 RGB arrays
(frames, height, width, 3) with the short side resized to `short`.

Frames are taken by index with approximate seeking (the container's frame rate and duration place frame k, as PyAV's
presentation-time arithmetic does), decoded by FFmpeg's own threads, and resized by TorchCodec's decoder transform
(FFmpeg's scaler). Indices past the last decodable frame repeat it, as with PyAV.
"""

from pathlib import Path

import numpy as np

from .decode import Unreadable, output_size

THREADS = 0  # FFmpeg picks the number of decoding threads


def _decoder(path: Path, transforms=None):
    from torchcodec.decoders import VideoDecoder

    try:
        return VideoDecoder(str(path), seek_mode="approximate", dimension_order="NHWC", num_ffmpeg_threads=THREADS,
                            transforms=transforms)
    except (RuntimeError, ValueError, OSError) as err:
        raise Unreadable(f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
                         ) from None


def probe(path: Path) -> tuple[int, float]:
    """(frame count, frames per second) from the container's metadata, without decoding."""
    metadata = _decoder(path).metadata
    frames, fps = metadata.num_frames, metadata.average_fps
    if not frames or frames < 1:
        raise Unreadable("no frames")
    return int(frames), float(fps or 25)


def read_frames(path: Path, indices: list[int], count: int, short: int | None = None) -> np.ndarray:
    """Frames `indices` (in [0, count), any order, repeats allowed) of the video, uint8 (len, H, W, 3)."""
    from torchcodec.transforms import Resize

    metadata = _decoder(path).metadata
    width, height = output_size(metadata.width, metadata.height, short)
    transforms = [Resize((height, width))] if (width, height) != (metadata.width, metadata.height) else None
    decoder = _decoder(path, transforms)
    wanted = sorted(set(indices))
    got: dict[int, np.ndarray] = {}
    try:
        frames = decoder.get_frames_at(indices=wanted).data.numpy()
        got = dict(zip(wanted, frames, strict=True))
    except (RuntimeError, IndexError, ValueError):  # an index past what decodes (a count from the duration): one by one
        for k in wanted:
            try:
                got[k] = decoder.get_frame_at(k).data.numpy()
            except (RuntimeError, IndexError, ValueError):
                break
    if not got:
        raise Unreadable(f"no frame decoded at or after frame {wanted[0]}")
    keys = sorted(got)
    out = [got[k] if k in got else got[max([j for j in keys if j <= k] or [keys[0]])] for k in indices]
    return np.stack(out)
