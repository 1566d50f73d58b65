"""The decoders of real videos, chosen by `data_args.decoder`: `pyav` (datasets/decode.py), `torchcodec`
(datasets/torchcodec_decode.py; `pip install -e '.[torchcodec]'` and FFmpeg's shared libraries from the system) and
`torchcodec-cuda` (TorchCodec decoding on the GPU with NVDEC, where torch sees a CUDA device). They give the same
frames for the same indices (tests/test_video_data.py; NVDEC's within a few grey levels, tests/test_gpu_decoding.py).
`auto`, the default, takes the one that `benchmarks/video_loading.py` measured fastest on this machine among those that
can decode here (it records its measurement), PyAV where it measured nothing, and PyAV, saying so once, where
TorchCodec cannot load."""

import functools
import json
import os
import socket
import time
import warnings
from importlib.metadata import version
from pathlib import Path
from types import ModuleType

import torch

from vtbench.errors import ConfigError

from . import decode, torchcodec_decode

NAMES = ("pyav", "torchcodec", "torchcodec-cuda")
CHOICES = ("auto", *NAMES)


def measurement_file() -> Path:
    """Where the benchmark records which decoder is faster here."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "vtbench" / "decoders.json"


def _versions() -> dict[str, str]:
    import av

    return {"host": socket.gethostname(), "av": av.__version__, "torchcodec": version("torchcodec")}


def record_measurement(clips_per_s: dict[str, float]) -> Path:
    """Store the benchmark's medians (clips/s by decoder) for `auto`."""
    path = measurement_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    faster = max(clips_per_s, key=clips_per_s.get)
    path.write_text(json.dumps({**_versions(), "clips_per_s": clips_per_s, "faster": faster, "time": time.time()}))
    return path


def measured_faster() -> str | None:
    """The decoder the benchmark measured fastest with this machine's versions, of those that can decode here now."""
    try:
        measured = json.loads(measurement_file().read_text())
        if {k: measured.get(k) for k in _versions()} != _versions():
            return None
        rates = {name: float(rate) for name, rate in measured["clips_per_s"].items() if not unavailable(name)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError):
        return None
    return max(rates, key=rates.get) if rates else None


def resolve(name: str) -> str:
    """The decoder a data set uses for `data_args.decoder` `name` (auto chosen here)."""
    if name != "auto":
        return check(name)
    if reason := torchcodec_missing():
        _say_once(f"data_args.decoder auto: decoding with PyAV; TorchCodec cannot load here ({reason})")
        return "pyav"
    return measured_faster() or "pyav"


@functools.cache
def _say_once(message: str) -> None:
    warnings.warn(message, stacklevel=3)


@functools.cache
def torchcodec_missing() -> str | None:
    """Why TorchCodec cannot decode here (the package, or the FFmpeg libraries it loads), or None."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401 - loads FFmpeg's libraries
    except Exception as err:  # noqa: BLE001 - ImportError, or the OSError/RuntimeError of a library it cannot load
        return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    return None


def unavailable(name: str) -> str | None:
    """Why decoder `name` cannot decode here, or None."""
    if name == "pyav":
        return None
    if reason := torchcodec_missing():
        return f"TorchCodec cannot load here ({reason})"
    if name == "torchcodec-cuda" and not torch.cuda.is_available():
        return "torch sees no CUDA device here"
    return None


def check(name: str) -> str:
    """The decoder `name`, refused with a line saying what is allowed or what is missing."""
    if name not in NAMES:
        raise ConfigError(f"data_args.decoder must be one of {', '.join(CHOICES)}; got {name!r}")
    if name.startswith("torchcodec") and (reason := torchcodec_missing()):
        raise ConfigError(f"data_args.decoder {name} cannot load here ({reason}): pip install -e "
                          "'.[torchcodec]', with FFmpeg's shared libraries (Debian: libavcodec59 libavformat59 "
                          "libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8)")
    if reason := unavailable(name):
        raise ConfigError(f"data_args.decoder {name} decodes on a CUDA GPU, and {reason}: use torchcodec or pyav")
    return name


class _OnCuda:
    """TorchCodec decoding on the GPU: the container read as on the CPU, the frames decoded by NVDEC."""

    probe = staticmethod(torchcodec_decode.probe)

    @staticmethod
    def read_frames(path: Path, indices: list[int], count: int, short: int | None = None):
        return torchcodec_decode.read_frames(path, indices, count, short, device="cuda")


def module(name: str) -> ModuleType | type[_OnCuda]:
    """The decoder's module: `probe(path)` and `read_frames(path, indices, count, short)`."""
    return {"torchcodec": torchcodec_decode, "torchcodec-cuda": _OnCuda}.get(name, decode)
