"""RLT: run-length tokenization (Choudhury, Zhu, Liu, Kitani, Jeni, "Don't Look Twice: Faster Video Transformers
with Run-Length Tokenization", NeurIPS 2024, arXiv 2411.05222; reference code rccchoudhury/rlt,
`src/models/static_token_utils.py` and `src/models/tokenizer.py`).

Before the model looks at a clip, every tubelet whose pixels barely differ from the same patch one tubelet earlier
is dropped: the mean absolute difference between the last frame of a tubelet and the first frame of the tubelet
before it, pooled over the patch and the channels, against `threshold` (`batched_find_idxs_to_keep`); the first
tubelet of every place always stays. A static region so becomes one token. With `length_embedding`, each kept
token gets a learned embedding of its run length: how many tubelets, itself included, it stands for (up to the
next kept tubelet at the same place, or the clip's end). Clips keep different numbers of tokens; they are padded
to the largest count of the batch and the padding is masked out of attention and pooling. RLT applies in training
and in evaluation alike (it is part of the model's input).

`threshold` is in grey levels of the 0-255 scale, whatever the data set's normalisation (the data set states its
`pixel_std`). Its default, 5.74, is the reference's 0.1 on clips normalised with a standard deviation of 0.225.

Departures from the reference: runs start from random weights unless the run sets `init` (the paper fine-tunes
VideoMAE and VideoMAE-2 checkpoints: `init: {file: ..., format: videomae}` with `model_args` `pos_embed: sincos`,
`fc_norm: true`, `qkv_bias: qv`). The reference packs a batch's tokens into one sequence with xformers' block-diagonal
mask (a variable-length kernel); we pad to the batch's largest count, rounded up to a multiple of 16
(scaled_dot_product_attention with a padding mask), which gives every clip the attention it would get alone but
saves compute only when every clip of the batch drops tokens. Packing was measured against it
(`benchmarks/token_speedup.py`: one sequence per batch, nested-tensor scaled_dot_product_attention, the same loss)
and was about twice as slow on this project's 2-core CPU (the demo model, batch 16 x 16 x 32^2) on every content it
tried, half-static batches included (packed / padded 1.5 to 2.3 in two runs; torch runs nested-tensor attention on
the CPU through its math kernel on a per-clip nested layout); a GPU's variable-length kernels may differ and were
not measured. The threshold applies to the channel mean of the grey-level differences; the reference's applies to
the channel mean of normalised differences, the same where the channels share one standard deviation (both data sets
here). RLT is refused with `compile: true` (one compiled shape per padded length). The reference computes run
lengths in (place, time) order and adds them to tokens in (time, place) order, which misaligns them (its own
training config leaves the length embedding off, "fix true"); here each token gets its own run length. The length
table is learned per tubelet frame of the model's nominal grid and linearly resampled (align_corners=False) for
other clip lengths (the reference's is sized for one clip length). The tubelet embedding still runs on every tubelet
(a small share of a step: one linear map per tubelet); the drop happens right after it, before any other method's
selection.
"""

from dataclasses import replace

import torch
import torch.nn.functional as F

from vtbench.errors import ConfigError
from vtbench.models import VideoViT
from vtbench.models.embed import TemporalTable
from vtbench.models.tokens import Tokens

from .base import Method, RunContext
from .card import Claim
from .params import Param
from .registry import register
from .selection import PAD_MULTIPLE, keep_per_clip

DEFAULT_THRESHOLD = 5.74  # the reference's 0.1 in units of a normalisation with std 0.225: 0.1 x 0.225 x 255


def changed_tubelets(video: torch.Tensor, grid: tuple[int, int, int], threshold: float,
                     pixel_std: torch.Tensor) -> torch.Tensor:
    """(B, T', H', W') bool: the tubelets RLT keeps. `video` (B, C, T, H, W) is normalised with per-channel
    `pixel_std` (pixels over [0, 1]); `threshold` is in grey levels (0-255)."""
    t, h, w = grid
    frames, height = video.shape[2], video.shape[3]
    tt, p = frames // t, height // h
    last = video[:, :, 2 * tt - 1 :: tt]  # the last frame of tubelets 1 .. T'-1
    first = video[:, :, 0 : frames - tt : tt]  # the first frame of tubelets 0 .. T'-2
    scale = (255 * pixel_std.to(video.device, torch.float32)).view(1, -1, 1, 1, 1)
    change = F.avg_pool3d((last.float() - first.float()).abs() * scale, (1, p, p)).mean(dim=1)  # (B, T'-1, H', W')
    keep = torch.ones(video.shape[0], t, h, w, dtype=torch.bool, device=video.device)
    keep[:, 1:] = change > threshold
    return keep


def run_lengths(keep: torch.Tensor) -> torch.Tensor:
    """(B, T', H', W') long: for each kept tubelet, the tubelets from it up to the next kept one at the same place
    (or the clip's end); the lengths of one place add up to T'."""
    t = keep.shape[1]
    steps = torch.arange(t, device=keep.device).view(1, t, 1, 1)
    at = torch.where(keep, steps, t)
    later = torch.cat([at[:, 1:], torch.full_like(at[:, :1], t)], dim=1)  # the next kept one strictly after
    next_kept = later.flip(1).cummin(dim=1).values.flip(1)
    return next_kept - steps


@register
class RunLengthTokenization(Method):
    name = "rlt"
    claim = Claim("RLT (Choudhury et al., NeurIPS 2024)", "fewer tokens where the video stands still, same accuracy",
                  "30% less fine-tuning wall-clock at matched accuracy; up to 80% fewer tokens on long videos",
                  "ViT-B, 16 x 224^2", estimable=False)
    params = {
        "threshold": Param(float, DEFAULT_THRESHOLD, low=0, high=255, note="(grey levels)",
                           help="a tubelet is dropped when its mean change from the one before is at most this"),
        "length_embedding": Param(bool, False, help="add a learned embedding of each kept token's run length"),
    }

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, length_embedding: bool = False):
        self.threshold, self.length_embedding = float(threshold), length_embedding
        self.pixel_std: torch.Tensor | None = None
        self.lengths: TemporalTable | None = None

    def prepare(self, run: RunContext) -> None:
        if not isinstance(run.model, VideoViT):
            raise ConfigError("method 'rlt' pads clips of different token counts, which the joint ViT takes; "
                              "set arch: joint")
        if run.config is not None and run.config.compile:
            raise ConfigError("method 'rlt' gives every batch its own token count, and the compiled blocks are "
                              "compiled for fixed shapes; set compile: false")
        std = getattr(run.train_data, "pixel_std", None)
        if run.train_data is not None and std is None:
            raise ConfigError(f"method 'rlt': data set {type(run.train_data).__name__} does not state its pixel "
                              "normalisation (pixel_std), so a threshold in grey levels cannot be applied")
        self.pixel_std = torch.tensor(std if std is not None else (0.225,) * 3)
        if self.length_embedding:
            self.lengths = TemporalTable(run.model.pos_embed.grid[0], run.model.dim).to(run.device)
            run.model.rlt_lengths = self.lengths  # a part of the model: trained, checkpointed, moved with it

    def read_pixels(self, tokens: Tokens, training: bool) -> Tokens:
        if tokens.pixels is None or tokens.pixels.is_meta:  # `vtbench estimate`: no pixels, so every token
            return tokens
        if tokens.count != tokens.full_count:
            raise ValueError("rlt needs the full token grid")
        with torch.no_grad():
            keep = changed_tubelets(tokens.pixels, tokens.grid, self.threshold, self.pixel_std)
        if self.lengths is not None:
            lengths = run_lengths(keep).flatten(1)  # (B, N)
            table = self.lengths(tokens.grid[0]).to(tokens.x.dtype)
            tokens = replace(tokens, x=tokens.x + table[lengths.clamp(min=1) - 1])
        keep = keep.flatten(1)
        return keep_per_clip(tokens, keep.float(), keep.sum(dim=1), multiple=PAD_MULTIPLE)

    def conflict(self, other: Method) -> str | None:
        if other.name == "flux":
            return "Flux samples and selects tokens by their change itself, at fixed budgets"
        return None

    def __repr__(self) -> str:
        return f"RunLengthTokenization(threshold={self.threshold:g}, length_embedding={self.length_embedding})"
