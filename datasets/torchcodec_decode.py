"""Decoding the frames a clip needs with TorchCodec (`torchcodec.decoders.VideoDecoder`), the same contract as
datasets/decode.py (PyAV): `probe(path)` and `read_frames(path, indices, count, short)` giving uint8 RGB arrays
(frames, height, width, 3) with the short side resized to `short`.

Frames are taken by index with approximate seeking (the container's frame rate and duration place frame k, as PyAV's
presentation-time arithmetic does), decoded by FFmpeg's own threads, and resized by TorchCodec's decoder transform
(FFmpeg's scaler). Indices past the last decodable frame repeat it, as with PyAV. A file whose container does not
say its duration or frame count (a Matroska or WebM file written as a stream, as browsers and live recorders write
them) is read in exact mode, which scans it first, as PyAV counts its frames by decoding.

`read_frames(..., device="cuda")` decodes on the GPU instead (NVIDIA's NVDEC, TorchCodec's default CUDA backend):
the frames are resized there (torch's antialiased bilinear, as the decoded cache is) and come back as the same uint8
arrays, so the rest of the loader is unchanged and the CPU only crops and normalises. A file NVDEC cannot take is
decoded on the CPU by TorchCodec itself; the first such fallback is named in a warning.
"""

import functools
import warnings
from pathlib import Path

import numpy as np
import torch

from .decode import Unreadable, output_size
from .sampling import resize_short_tensor

THREADS = 0  # FFmpeg picks the number of decoding threads
_SIZES: dict[tuple[str, int, int], tuple[int, int]] = {}  # (path, mtime, bytes): (width, height), saving an open
_EXACT: set[tuple[str, int, int]] = set()  # files whose header cannot place frames


def _decoder(path: Path, transforms=None, device: str = "cpu"):
    from torchcodec.decoders import VideoDecoder

    key, error = _key(path), None
    if len(_SIZES) > 100_000:
        _SIZES.clear()
    for seek_mode in ("exact",) if key in _EXACT else ("approximate", "exact"):
        try:
            decoder = VideoDecoder(str(path), seek_mode=seek_mode, dimension_order="NHWC",
                                   num_ffmpeg_threads=THREADS, transforms=transforms, device=device)
        except ValueError as err:  # approximate mode: "The number of frames is unknown", "The maximum pts value ..."
            error = err
            continue
        except (RuntimeError, OSError) as err:
            error = err
            break
        if seek_mode == "exact":
            _EXACT.add(key)
        if transforms is None:
            _SIZES[key] = (decoder.metadata.width, decoder.metadata.height)
        return decoder
    text = str(error).strip()
    raise Unreadable(f"{type(error).__name__}: {text.splitlines()[0] if text else ''}") from None


def _key(path: Path) -> tuple[str, int, int]:
    try:
        stat = Path(path).stat()
    except OSError:
        return str(path), 0, 0
    return str(path), stat.st_mtime_ns, stat.st_size


def probe(path: Path) -> tuple[int, float]:
    """(frame count, frames per second) from the container's metadata, without decoding."""
    metadata = _decoder(path).metadata
    frames, fps = metadata.num_frames, metadata.average_fps
    if not frames or frames < 1:
        raise Unreadable("no frames")
    return int(frames), float(fps or 25)


def _size(path: Path) -> tuple[int, int]:
    metadata = _decoder(path).metadata
    return metadata.width, metadata.height


def read_frames(path: Path, indices: list[int], count: int, short: int | None = None,
                device: str | None = None) -> np.ndarray:
    """Frames `indices` (in [0, count), any order, repeats allowed) of the video, uint8 (len, H, W, 3). `device`:
    None decodes on the CPU and resizes with FFmpeg's scaler; a device decodes there and resizes with torch there."""
    from torchcodec.transforms import Resize

    if device is None:
        source = _SIZES.get(_key(path)) or _size(path)
        width, height = output_size(*source, short)
        decoder = _decoder(path, [Resize((height, width))] if (width, height) != source else None)
    else:
        try:
            decoder = _decoder(path, device=device)
        except Unreadable as err:
            _decoder(path)  # unreadable on the CPU too: the file's fault, skipped as with the other decoders
            raise RuntimeError(f"data_args.decoder torchcodec-cuda cannot open {path} on {device}, which the CPU can "
                               f"decode ({err})") from None

    def arrays(frames: torch.Tensor) -> np.ndarray:
        if device is not None and short is not None:
            frames = resize_short_tensor(frames, short)
        return frames.cpu().numpy()

    wanted = sorted(set(indices))
    got: dict[int, np.ndarray] = {}
    try:
        frames = arrays(decoder.get_frames_at(indices=wanted).data)
        got = dict(zip(wanted, frames, strict=True))
    except torch.OutOfMemoryError:
        raise  # the GPU's memory, not the file: never a skipped video
    except (RuntimeError, IndexError, ValueError):  # an index past what decodes (a count from the duration): one by one
        for k in wanted:
            try:
                got[k] = arrays(decoder.get_frame_at(k).data[None])[0]
            except torch.OutOfMemoryError:
                raise
            except (RuntimeError, IndexError, ValueError):
                break
    if device is not None and (fallback := getattr(decoder, "cpu_fallback", None)):  # known once a frame decoded
        _fell_back(str(fallback))
    if not got:
        raise Unreadable(f"no frame decoded at or after frame {wanted[0]}")
    keys = sorted(got)
    out = [got[k] if k in got else got[max([j for j in keys if j <= k] or [keys[0]])] for k in indices]
    return np.stack(out)


@functools.cache
def _fell_back(status: str) -> None:
    warnings.warn(f"data_args.decoder torchcodec-cuda: TorchCodec decodes on the CPU instead ({status})", stacklevel=3)
