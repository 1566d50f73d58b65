"""Real-image clips for checking that the default recipe carries beyond the synthetic generator.

No camera footage can be downloaded here, so the clips are made from the real photographs and terrain data that
matplotlib ships (`mpl-data/sample_data`): a virtual camera pans (left, right, up, down) or zooms (in, out) over a
random crop of one image, with a random speed, and the frames are encoded as H.264 (crf 23) with PyAV, so
training reads them through the real-video path (decoding, resizing, clip sampling). Like the synthetic task, the
classes come in time-reversed pairs: one frame cannot tell them apart, only the order of frames can.

    python benchmarks/camera_clips.py ROOT [--train 60] [--val 40]      # clips per class
    vtbench run --dataset folder:ROOT --budget 60s
"""

import argparse
from pathlib import Path

import av
import matplotlib
import matplotlib.image
import numpy as np
from matplotlib import cbook

CLASSES = ("pan_left", "pan_right", "pan_up", "pan_down", "zoom_in", "zoom_out")
FRAMES, SIZE, FPS = 48, 64, 16


def images() -> list[np.ndarray]:
    """The sample data's photographs and terrain maps as RGB float arrays in [0, 1]."""
    photo = matplotlib.image.imread(cbook.get_sample_data("grace_hopper.jpg")) / 255.0
    terrain = []
    for name, key in (("jacksboro_fault_dem.npz", "elevation"), ("topobathy.npz", "topo")):
        height = cbook.get_sample_data(name)[key].astype(float)  # an npz file, opened by matplotlib
        terrain.append(matplotlib.colormaps["gist_earth"]((height - height.min()) / np.ptp(height))[..., :3])
    return [photo[..., :3], *terrain]


def sample(image: np.ndarray, centre: np.ndarray, half: float, out: int) -> np.ndarray:
    """An out x out view of `image` centred at `centre` (row, col) with half-width `half` pixels, bilinear."""
    grid = np.linspace(-half, half, out)
    rows = np.clip(centre[0] + grid, 0, image.shape[0] - 1.001)
    cols = np.clip(centre[1] + grid, 0, image.shape[1] - 1.001)
    r0, c0 = rows.astype(int), cols.astype(int)
    fr, fc = (rows - r0)[:, None, None], (cols - c0)[None, :, None]
    top = image[r0][:, c0] * (1 - fc) + image[r0][:, c0 + 1] * fc
    bottom = image[r0 + 1][:, c0] * (1 - fc) + image[r0 + 1][:, c0 + 1] * fc
    return top * (1 - fr) + bottom * fr


def clip(image: np.ndarray, label: str, rng: np.random.Generator) -> list[np.ndarray]:
    height, width = image.shape[:2]
    half = rng.uniform(0.1, 0.18) * min(height, width)
    travel = rng.uniform(0.15, 0.3) * min(height, width)  # pixels over the clip, for pans
    zoom = rng.uniform(1.3, 1.6)  # half-width ratio over the clip, for zooms
    margin = half * zoom + travel / 2 + 2
    centre = np.array([rng.uniform(margin, height - margin), rng.uniform(margin, width - margin)])
    frames = []
    for k in range(FRAMES):
        q = k / (FRAMES - 1) - 0.5  # -0.5 .. 0.5
        step = {"pan_left": (0, -1), "pan_right": (0, 1), "pan_up": (-1, 0), "pan_down": (1, 0)}.get(label, (0, 0))
        at = centre + travel * q * np.array(step)
        scale = zoom ** (-q if label == "zoom_in" else q) if label.startswith("zoom") else 1.0
        frames.append(sample(image, at, half * scale, SIZE))
    return frames


def encode(path: Path, frames: list[np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width = stream.height = SIZE
        stream.pix_fmt, stream.options = "yuv420p", {"crf": "23"}
        for frame in frames:
            pixels = (np.clip(frame, 0, 1) * 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--train", type=int, default=60, help="clips per class in the train split")
    parser.add_argument("--val", type=int, default=40, help="clips per class in the val split")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    sources = images()
    for split, count in (("train", args.train), ("val", args.val)):
        for label in CLASSES:
            for n in range(count):
                image = sources[rng.integers(len(sources))]
                if rng.random() < 0.5:  # mirrored sources: more distinct views
                    image = image[:, ::-1]
                encode(args.root / split / label / f"{label}_{n:04d}.mp4", clip(image, label, rng))
    print(f"{len(CLASSES) * (args.train + args.val)} clips in {args.root} (folder layout)")


if __name__ == "__main__":
    main()
