"""Synthetic still images for pretraining an image model that video runs then start from (`vtbench pretrain`).

Each image is one frame of the synthetic scene's world (the same textured backgrounds, the same soft-edged
objects, the same pixel statistics as the videos of vtbench.datasets.synthetic), labelled differently from the
video task: by what its objects look like, not by what they do. All the targets of an image share one shape
(diamond, disc or square) and one dominant colour channel (red, green or blue), so there are 9 classes; two
distractors of any shape and colour sit under them. An image model that learns this has learnt to find
objects and tell their shape and colour, which the video task needs (its pair is told by the targets' colour)
without being taught the video task itself.

Deterministic per (seed, split, index), as the videos are; the val split ignores the seed.
"""

import torch

from .synthetic import PIXEL_MEAN, PIXEL_STD, SPLITS, _background, _Draws, _hash, _paint, _Track

SHAPES = ("diamond", "disc", "square")  # the codes 0, 1, 2 of the video scenes' shapes
CHANNELS = ("red", "green", "blue")
CLASS_NAMES = [f"{colour}_{shape}" for shape in SHAPES for colour in CHANNELS]
TARGETS = 4
DISTRACTORS = 2
DRAWS = 40 + (TARGETS + DISTRACTORS) * 8


class SyntheticStills:
    """`batch(indices, size) -> (images (B, 3, size, size) normalised, labels (B,))`; 9 classes (shape x colour)."""

    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES

    def __init__(self, split: str, seed: int = 0, noise: float = 0.02):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.split, self.seed, self.noise = split, seed if split == "train" else 0, noise

    def labels(self, indices: list[int]) -> torch.Tensor:
        return torch.tensor([i % self.num_classes for i in indices], dtype=torch.int64)

    def batch(self, indices: list[int], size: int) -> tuple[torch.Tensor, torch.Tensor]:
        generators = [torch.Generator().manual_seed(_hash(self.seed, self.split, "still", i)) for i in indices]
        draws = _Draws(torch.stack([torch.rand(DRAWS, generator=g) for g in generators]))
        coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
        labels = self.labels(indices)
        shape = (labels // len(CHANNELS)).float()[:, None]
        channel = labels % len(CHANNELS)
        canvas = _background(draws, coords).clone()  # (B, 3, 1, H, W), painted in place
        scratch = torch.empty_like(canvas)
        for k in range(DISTRACTORS + TARGETS):
            target = k >= DISTRACTORS
            colour = draws.take(0.25, 1.0, count=3)
            if target:  # the class's channel bright, the others dimmer
                colour = colour * 0.6
                colour[torch.arange(len(indices)), channel] = draws.take(0.85, 1.0)[:, 0]
            drawn_shape = draws.take(0.0, 3.0).floor().clamp(max=2)
            one = torch.ones(len(indices), 1)
            track = _Track(x=draws.take(0.1, 0.9), y=draws.take(0.1, 0.9), radius=draws.take(0.07, 0.12),
                           opacity=one, gain=one, colour=colour, shape=shape if target else drawn_shape)
            _paint(canvas, track, coords, scratch)
        image = (canvas[:, :, 0] - PIXEL_MEAN) / PIXEL_STD
        if self.noise > 0:
            image = image + (self.noise / PIXEL_STD) * torch.stack(
                [torch.randn((3, size, size), generator=g) for g in generators])
        return image.contiguous(), labels
