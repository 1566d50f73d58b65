"""The two decoders of real videos, chosen by `data_args.decoder`: `pyav` (datasets/decode.py) or `torchcodec`
(datasets/torchcodec_decode.py; `pip install -e '.[torchcodec]'` and FFmpeg's shared libraries from the system).
Both give the same frames for the same indices (tests/test_video_data.py). `auto`, the default, takes the one that
`benchmarks/video_loading.py` measured faster on this machine (it records its measurement), PyAV where it measured
nothing, and PyAV, saying so once, where TorchCodec cannot load."""

import functools
import json
import os
import socket
import time
import warnings
from importlib.metadata import version
from pathlib import Path
from types import ModuleType

from vtbench.errors import ConfigError

from . import decode, torchcodec_decode

NAMES = ("pyav", "torchcodec")
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
    """The decoder the benchmark measured faster with this machine's versions, if it did."""
    try:
        measured = json.loads(measurement_file().read_text())
        return measured["faster"] if {k: measured.get(k) for k in _versions()} == _versions() else None
    except (OSError, ValueError, KeyError, TypeError, ImportError):
        return None


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


def check(name: str) -> str:
    """The decoder `name`, refused with a line saying what is allowed or what is missing."""
    if name not in NAMES:
        raise ConfigError(f"data_args.decoder must be one of {', '.join(CHOICES)}; got {name!r}")
    if name == "torchcodec" and (reason := torchcodec_missing()):
        raise ConfigError(f"data_args.decoder torchcodec cannot load here ({reason}): pip install -e "
                          "'.[torchcodec]', with FFmpeg's shared libraries (Debian: libavcodec59 libavformat59 "
                          "libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8)")
    return name


def module(name: str) -> ModuleType:
    """The decoder's module: `probe(path)` and `read_frames(path, indices, count, short)`."""
    if name == "torchcodec":
        return torchcodec_decode
    return decode
