"""The decoded cache: every video decoded once to a uint8 array (frames, H, W, 3) at one short side, stored
as .npy files read memory-mapped, so that training reads frames without decoding.

    vtbench data cache --dataset FORMAT:ROOT --size S

writes ROOT/.vtbench-cache/short<N>/ with N = short_side(S) (the short side a crop of S is taken from):
index.json (the videos, their frame counts and the unreadable ones) and arrays/<k>.npy. Caching is
resumable: videos already cached are kept. A data set uses the cache of its short side when there is one,
else the smallest larger one (frames resized on read), else decodes.
"""

import hashlib
import multiprocessing
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vtbench.core import files

from . import decoders
from .decode import Unreadable
from .layouts import SPLITS, read_index
from .sampling import short_side

FORMAT = 1
FOLDER = ".vtbench-cache"
OPEN_MAX = 256  # memory-mapped files kept open per process


class Cache:
    def __init__(self, folder: Path, root: Path):
        self.folder, self.root = folder, root
        index = files.read_json(folder / "index.json")
        self.short = index["short"]
        self.videos: dict[str, dict] = index["videos"]
        self._open: dict[str, np.ndarray] = {}  # memory maps kept open, oldest closed first

    def _entry(self, path: Path) -> dict | None:
        return self.videos.get(_key(path, self.root))

    def frames(self, path: Path) -> int | None:
        entry = self._entry(path)
        return entry["frames"] if entry else None

    def read(self, path: Path, indices: list[int]) -> np.ndarray:
        file = self._entry(path)["file"]
        if file not in self._open:
            if len(self._open) >= OPEN_MAX:
                self._open.pop(next(iter(self._open)))
            self._open[file] = np.load(self.folder / "arrays" / file, mmap_mode="r")
        return np.asarray(self._open[file][indices])


def _key(path: Path, root: Path) -> str:
    text, prefix = str(path), str(root).rstrip("/") + "/"
    return text[len(prefix):] if text.startswith(prefix) else text


def find_cache(root: Path, short: int) -> Cache | None:
    """The cache at this short side, else the smallest larger one, else None."""
    base = root / FOLDER
    if not base.is_dir():
        return None
    sizes = []
    for folder in base.glob("short*"):
        try:
            if (folder / "index.json").exists() and files.read_json(folder / "index.json").get("format") == FORMAT:
                sizes.append(int(folder.name[5:]))
        except (ValueError, OSError):
            continue
    fitting = sorted(s for s in sizes if s >= short)
    return Cache(base / f"short{fitting[0]}", root) if fitting else None


def build_cache(layout: str, root: str | Path, size: int, split: int = 1, progress: bool = True,
                workers: int = 0, decoder: str = "auto") -> dict:
    """Decode every video of both splits once (in `workers` processes, 0: in this one; with `decoder`, as
    datasets/decoders.py chooses); returns counts (newly cached, cached in all, unreadable), the folder and its size
    in bytes."""
    decoder = decoders.resolve(decoder)
    root = Path(root).expanduser()
    index = read_index(layout, root, split)
    short = short_side(size)
    folder = root / FOLDER / f"short{short}"
    (folder / "arrays").mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, "short": short, "videos": {}, "skipped": {}}
    if (folder / "index.json").exists():
        state = files.read_json(folder / "index.json")
    paths = sorted({p for name in SPLITS for p, _ in index.videos[name]})
    todo = [(p, _key(p, root)) for p in paths if _key(p, root) not in state["videos"]]
    jobs = [(path, key, folder, short, decoder) for path, key in todo]
    new = 0
    bar = tqdm(total=len(paths), initial=len(paths) - len(todo), desc=f"caching {layout}:{root} at short side "
               f"{short}", unit="video", disable=not progress)
    pool = None
    if workers:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        done = pool.map(_cache_one, jobs, chunksize=4) if pool else map(_cache_one, jobs)
        for number, (key, entry, reason) in enumerate(done):
            bar.update(1)
            if entry is None:
                state["skipped"][key] = reason
                warnings.warn(f"skipping unreadable video {root / key}: {reason}", stacklevel=2)
                continue
            state["skipped"].pop(key, None)
            state["videos"][key] = entry
            new += 1
            if number % 100 == 99:  # an interrupted caching run keeps what it did
                files.write_json(folder / "index.json", state)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
        bar.close()
        files.write_json(folder / "index.json", state)
    total = sum((folder / "arrays" / v["file"]).stat().st_size for v in state["videos"].values())
    if state["skipped"]:
        print(f"{len(state['skipped'])} unreadable videos skipped (listed in {folder / 'index.json'})", file=sys.stderr)
    return {"folder": str(folder), "short": short, "cached": new, "videos": len(state["videos"]),
            "unreadable": len(state["skipped"]), "bytes": total}


def _cache_one(job: tuple[Path, str, Path, int, str]) -> tuple[str, dict | None, str | None]:
    """Decode one video to arrays/<hash of its key>.npy: (key, its index entry or None, why it is unreadable)."""
    path, key, folder, short, decoder = job
    decode = decoders.module(decoder)
    try:
        count, fps = decode.probe(path)
        frames = decode.read_frames(path, list(range(count)), count, short)
    except Unreadable as err:
        return key, None, str(err)
    file = hashlib.blake2b(key.encode(), digest_size=10).hexdigest() + ".npy"
    target = folder / "arrays" / file
    with open(target.with_suffix(".tmp"), "wb") as f:
        np.save(f, frames)
    target.with_suffix(".tmp").replace(target)
    return key, {"file": file, "frames": len(frames), "fps": fps, "shape": list(frames.shape)}, None
