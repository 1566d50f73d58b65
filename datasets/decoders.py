"""The two decoders of real videos, chosen by `data_args.decoder`: `pyav` (datasets/decode.py, the default) or
`torchcodec` (datasets/torchcodec_decode.py; `pip install -e '.[torchcodec]'` and FFmpeg's shared libraries from the
system). Both give the same frames for the same indices (tests/test_video_data.py)."""

import functools
from types import ModuleType

from vtbench.errors import ConfigError

NAMES = ("pyav", "torchcodec")


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
        raise ConfigError(f"data_args.decoder must be one of {', '.join(NAMES)}; got {name!r}")
    if name == "torchcodec" and (reason := torchcodec_missing()):
        raise ConfigError(f"data_args.decoder torchcodec cannot load here ({reason}): pip install -e "
                          "'.[torchcodec]', with FFmpeg's shared libraries (Debian: libavcodec59 libavformat59 "
                          "libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8)")
    return name


def module(name: str) -> ModuleType:
    """The decoder's module: `probe(path)` and `read_frames(path, indices, count, short)`."""
    if name == "torchcodec":
        from . import torchcodec_decode

        return torchcodec_decode
    from . import decode

    return decode
