"""Token dropout: Turbo training (Han, Xie, Zisserman, "Turbo Training with Token Dropout", BMVC 2022,
arXiv 2210.04889).

Each training clip keeps a random fraction `keep` of its tokens, gathered after the patch and position
embedding and before the first block, so attention and MLPs run on physically fewer tokens and every kept
token keeps its own space-time position. All clips of a batch keep the same number K; which tokens is drawn
per clip. A CLS token is prepended by the model after selection, so it is never dropped.

Modes: `random` (an independent subset per clip, the paper's default), `tube` (the same spatial positions in
every frame of a clip: K = T' x round(keep x H'W')), `frame` (whole frame indices: K = round(keep x T') x H'W').
Evaluation uses all tokens, plus the shared reduced-token sweep (vtbench.engine.protocol) that every run gets;
the training ratio is added to it: `keep=<keep>,random` in random mode (the shared setting: a baseline has a
figure beside it where its `eval_sweep` lists that ratio, as a study's base can for all its runs), or a setting of
this method's own, `keep=<keep>,tube` or `keep=<keep>,frame`, with the same fixed-seed draw at every evaluation.

Departures from the paper: tokens are tubelets of a joint space-time ViT (the paper also uses
factorised and video-language models); the keep ratio is one fixed value for the whole budget (the paper's
long-video experiments also vary clip length). On a token set that is already a subset (after another
method), tube and frame modes score whole positions or frames and keep round(keep x count) tokens, which
keeps whole tubes or frames only where the subset holds them whole.
"""

import torch

from vtbench.engine.protocol import RANDOM_SEED, Reduction
from vtbench.models.tokens import Tokens

from . import register
from .base import EvalSetting, Method
from .card import Claim
from .selection import random_subset

MODES = ("random", "tube", "frame")


def kept_count(tokens: Tokens, keep: float, mode: str) -> int:
    """K for a batch: the same for every clip, at least one token (and one whole tube or frame)."""
    t, h, w = tokens.grid
    if tokens.count == tokens.full_count and mode == "tube":
        return t * max(1, round(keep * h * w))
    if tokens.count == tokens.full_count and mode == "frame":
        return max(1, round(keep * t)) * h * w
    return max(1, round(keep * tokens.count))


def drop_tokens(tokens: Tokens, keep: float, mode: str = "random", generator: torch.Generator | None = None) -> Tokens:
    """Keep K tokens per clip, chosen at random per clip (per tube or per frame in those modes)."""
    if keep >= 1:
        return tokens
    k = kept_count(tokens, keep, mode)
    if mode == "random":
        return random_subset(tokens, k, generator)
    b = tokens.x.shape[0]
    t, h, w = tokens.grid
    device = tokens.x.device
    if mode == "tube":
        per_position = torch.rand(b, h * w, device=device, generator=generator)
        score = torch.gather(per_position, 1, tokens.pos[..., 1] * w + tokens.pos[..., 2])
    else:
        per_frame = torch.rand(b, t, device=device, generator=generator)
        score = torch.gather(per_frame, 1, tokens.pos[..., 0])
    index = score.topk(k, dim=1, sorted=False).indices.sort(dim=1).values
    return tokens.gather(index)


@register
class TokenDropout(Method):
    name = "token_dropout"
    claim = Claim("Turbo training (Han et al., BMVC 2022)", "near-baseline accuracy at a fraction of the cost",
                  "close to 4x training speed-up, much less memory", "ViT-B, 16 x 224^2, keep 0.5",
                  params=(("keep", 0.5),))

    def __init__(self, keep: float = 0.5, mode: str = "random"):
        if not isinstance(keep, int | float) or isinstance(keep, bool) or not 0 < keep <= 1:
            raise ValueError(f"keep={keep!r} is outside the allowed range (0, 1]")
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not allowed; choose one of {', '.join(MODES)}")
        self.keep, self.mode = float(keep), mode

    def select_tokens(self, tokens: Tokens, progress: float, training: bool) -> Tokens:
        return drop_tokens(tokens, self.keep, self.mode) if training else tokens

    def eval_settings(self) -> list[EvalSetting]:
        if self.keep >= 1:
            return []
        if self.mode == "random":
            shared = Reduction("random", keep=self.keep)
            return [EvalSetting(shared.name, select=shared)]

        def at_training_ratio(tokens: Tokens) -> Tokens:
            generator = torch.Generator(tokens.x.device).manual_seed(RANDOM_SEED)  # the same draw every time
            return drop_tokens(tokens, self.keep, self.mode, generator)

        return [EvalSetting(f"keep={self.keep:g},{self.mode}", select=at_training_ratio)]

    def __repr__(self) -> str:
        return f"TokenDropout(keep={self.keep}, mode={self.mode!r})"
