"""Token dropout: Turbo training (Han, Xie, Zisserman, "Turbo Training with Token Dropout", BMVC 2022,
arXiv 2210.04889).

Each training clip keeps a random fraction `keep` of its tokens, gathered after the patch and position
embedding and before the first block, so attention and MLPs run on physically fewer tokens and every kept
token keeps its own space-time position. All clips of a batch keep the same number K; which tokens is drawn
per clip. A CLS token is prepended by the model after selection, so it is never dropped.

Modes: `random` (an independent subset per clip, the paper's default), `tube` (the same spatial positions in
every frame of a clip: K = T' x round(keep x H'W')), `frame` (whole frame indices: K = round(keep x T') x H'W').
Evaluation uses all tokens, plus the shared reduced-token sweep (vtbench.methods.reductions) that every run gets;
the training ratio is added to it: `keep=<keep>,random` in random mode (the shared setting: a baseline has a
figure beside it where its `eval_sweep` lists that ratio, as a study's base can for all its runs), or a setting of
this method's own, `keep=<keep>,tube` or `keep=<keep>,frame`, with the same fixed-seed draw at every evaluation.

Layer-wise dropping (`layers`), as random-LTD (Yao et al., "Random-LTD: Random and Layerwise Token Dropping Brings
Efficient Training for Large-scale Transformers", arXiv 2211.11586; DeepSpeed's `random_ltd`): instead of before the
first block, each block named by `layers` runs on its own random subset of keep x N tokens per clip, and the tokens
it left out skip that block and rejoin unchanged after it. `layers: middle` (every block but the first and the last,
which see all tokens, as random-LTD) or `a-b` (blocks a to b, counted from 0); `input` is Turbo training's dropping
before the first block (the default). Layer-wise dropping applies in training only and draws in `random` mode;
random-LTD's growing schedule of kept tokens (MSLG) and its layer-token learning-rate schedule are not applied:
keep is fixed. On padded clips (after rlt) each clip keeps keep x its real tokens (DeepSpeed samples over all
places, padding included).

Departures from the paper: tokens are tubelets of a joint space-time ViT (the paper also uses
factorised and video-language models); the keep ratio is one fixed value for the whole budget (the paper's
long-video experiments also vary clip length). On a token set that is already a subset (after another
method), tube and frame modes score whole positions or frames and keep round(keep x count) tokens, which
keeps whole tubes or frames only where the subset holds them whole.
"""

from dataclasses import replace

import torch

from vtbench.errors import ConfigError
from vtbench.models import VideoViT
from vtbench.models.blocks import Stream
from vtbench.models.tokens import Tokens

from .base import EvalSetting, Method
from .card import Claim
from .params import Param
from .reductions import RANDOM_SEED, Reduction
from .registry import register
from .selection import PAD_MULTIPLE, choose_per_clip, keep_per_clip, random_subset

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
    if tokens.valid is None and mode == "random":
        return random_subset(tokens, kept_count(tokens, keep, mode), generator)
    b = tokens.x.shape[0]
    t, h, w = tokens.grid
    device = tokens.x.device
    if mode == "random":
        score = torch.rand(b, tokens.count, device=device, generator=generator)
    elif mode == "tube":
        per_position = torch.rand(b, h * w, device=device, generator=generator)
        score = torch.gather(per_position, 1, tokens.pos[..., 1] * w + tokens.pos[..., 2])
    else:
        per_frame = torch.rand(b, t, device=device, generator=generator)
        score = torch.gather(per_frame, 1, tokens.pos[..., 0])
    if tokens.valid is not None:  # clips of different counts (after RLT): each keeps its own share
        counts = (keep * tokens.clip_counts()).round().long().clamp(min=1)
        return keep_per_clip(tokens, score, counts, multiple=PAD_MULTIPLE)
    index = score.topk(kept_count(tokens, keep, mode), dim=1, sorted=False).indices.sort(dim=1).values
    return tokens.gather(index)


def parse_layers(layers: str) -> str | tuple[int, int]:
    """'input', 'middle' or (first, last) block of 'a-b'."""
    if layers in ("input", "middle"):
        return layers
    first, dash, last = str(layers).partition("-")
    if dash and first.strip().isdigit() and last.strip().isdigit() and int(first) <= int(last):
        return int(first), int(last)
    raise ValueError(f"layers={layers!r} is not allowed; choose input, middle, or a-b (blocks a to b, from 0)")


def _is_layers(layers: str) -> bool:
    try:
        parse_layers(layers)
    except ValueError:
        return False
    return True


def dropped_blocks(layers: str | tuple[int, int], depth: int) -> range:
    if layers == "input":
        return range(0)
    if layers == "middle":
        return range(1, depth - 1)
    first, last = layers
    if last >= depth:
        raise ValueError(f"layers={first}-{last} names block {last} of a model of {depth} blocks (0 to {depth - 1})")
    return range(first, last + 1)


def layer_drop_hook(keep: float, layers: str | tuple[int, int]):
    """A block hook (vtbench.models.blocks): blocks of `layers` run on a random keep share of the tokens per clip
    (the prefix always), the others skip the block and are put back unchanged."""

    def hook(index: int, depth: int, block, stream: Stream, run) -> Stream:
        if index not in dropped_blocks(layers, depth):
            return run(stream)
        p = stream.prefix
        body = stream.x[:, p:]
        score = torch.rand(body.shape[:2], device=body.device)
        valid = stream.valid
        if valid is None:
            index_k = score.topk(max(1, round(keep * body.shape[1])), dim=1).indices.sort(dim=1).values
        else:  # padded clips (after rlt): each keeps its own share of its real tokens, padded to the largest
            real = valid[:, p:]
            counts = (keep * real.sum(dim=1)).round().long().clamp(min=1)
            index_k, chosen = choose_per_clip(score, counts, real, PAD_MULTIPLE)
            valid = None if chosen is None else torch.cat([valid[:, :p], chosen], dim=1)
        spread = index_k[..., None].expand(-1, -1, body.shape[-1])
        subset = body.gather(1, spread)
        out = run(replace(stream, x=torch.cat([stream.x[:, :p], subset], 1), valid=valid))
        ran = out.x[:, p:]
        if valid is not None:  # places that pad a clip's share to the batch's length ran as queries: undo them
            ran = torch.where(valid[:, p:, None], ran, subset)
        return replace(stream, x=torch.cat([out.x[:, :p], body.scatter(1, spread, ran)], 1))

    return hook


@register
class TokenDropout(Method):
    name = "token_dropout"
    claim = Claim("Turbo training (Han et al., BMVC 2022)", "near-baseline accuracy at a fraction of the cost",
                  "almost 4x training speed-up, much less memory", "ViT-B, 16 x 224^2, keep 0.25 (a FLOP ratio of 4.8; "
                  "keep 0.5 gives 2.3)", params=(("keep", 0.25),))
    params = {
        "keep": Param(float, 0.5, low=0, high=1, low_open=True, help="the share of each training clip's tokens kept"),
        "mode": Param(str, "random", choices=MODES, help="which tokens: an independent subset per clip, whole tubes "
                                                          "(the same places in every frame) or whole frames"),
        "layers": Param(str, "input", rule="input, middle, or a-b (blocks a to b, from 0)", check=_is_layers,
                        help="where tokens are dropped: before the first block (Turbo), or per block (random-LTD)"),
    }

    @classmethod
    def check_together(cls, values) -> None:
        """mode tube or frame applies to dropping before the first block (layers: input); layer-wise dropping
        draws at random."""
        if values["layers"] != "input" and values["mode"] != "random":
            raise ValueError(f"mode={values['mode']!r} applies to dropping before the first block; "
                             f"layers={values['layers']!r} draws at random")

    def __init__(self, keep: float = 0.5, mode: str = "random", layers: str = "input"):
        self.layers = parse_layers(layers)
        self.keep, self.mode = float(keep), mode

    def prepare(self, run) -> None:
        if self.layers == "input":
            return
        if not isinstance(run.model, VideoViT):
            raise ConfigError("token_dropout with layers drops tokens inside the blocks of the joint ViT; "
                              "set arch: joint")
        try:
            blocks = dropped_blocks(self.layers, len(run.model.blocks))
        except ValueError as err:
            raise ConfigError(f"method 'token_dropout': {err}") from None
        if not blocks:
            raise ConfigError(f"method 'token_dropout': layers=middle drops nothing in a model of "
                              f"{len(run.model.blocks)} blocks (the first and the last see every token)")

    def select_tokens(self, tokens: Tokens, progress: float, training: bool) -> Tokens:
        if not training or self.layers != "input":
            return tokens
        return drop_tokens(tokens, self.keep, self.mode)

    def block_hook(self, progress: float, training: bool):
        if not training or self.layers == "input" or self.keep >= 1:
            return None
        return layer_drop_hook(self.keep, self.layers)

    def eval_settings(self) -> list[EvalSetting]:
        if self.keep >= 1 or self.layers != "input":
            return []
        if self.mode == "random":
            shared = Reduction("random", keep=self.keep)
            return [EvalSetting(shared.name, select=shared)]

        def at_training_ratio(tokens: Tokens) -> Tokens:
            generator = torch.Generator(tokens.x.device).manual_seed(RANDOM_SEED)  # the same draw every time
            return drop_tokens(tokens, self.keep, self.mode, generator)

        return [EvalSetting(f"keep={self.keep:g},{self.mode}", select=at_training_ratio)]

    def __repr__(self) -> str:
        layers = self.layers if isinstance(self.layers, str) else "-".join(map(str, self.layers))
        layers = "" if layers == "input" else f", layers={layers!r}"
        return f"TokenDropout(keep={self.keep}, mode={self.mode!r}{layers})"
