"""Flux: flexible sampling plus token selection (Wang et al., "Make Your Training Flexible: Towards
Deployment-Efficient Video Models", ICCV 2025, arXiv 2503.14237; reference code OpenGVLab/FluxViT,
single_modality/models/fluxvit.py, single_modality/run_flexible_finetune.py and
single_modality/engines/engine_for_flexible_tuning.py).

Training samples each batch at a random (frames, size), redrawn until the clip's token count lies in a
window, with frames spread TSN-style over the whole video (one per equal segment), and then keeps a fixed
budget of K tokens per clip with the group-dynamic selector (vtbench.methods.selection):

- split the token grid's time axis into G groups of consecutive tubelet frames (as FluxViT: G = 4 when they
  divide by 4, 1 for two frames, else 2; FluxViT never samples an odd count, which the scaled frame set here
  can draw, and which gets G = 1);
- score each token by the L2 distance between its patch embedding and the one at the same (y, x) in the
  previous frame; the first frame of a group takes the second frame's score (where a group holds a single
  tubelet frame, as four tubelet frames with G = 4 do, it keeps its difference to the previous group's frame
  and only the clip's first frame takes the second's: our decision, FluxViT's tubelets are one frame long and
  its groups never hold a single frame);
- keep the top K // G tokens of each group (so G x (K // G) in all: FluxViT truncates each group's count the
  same way). Scores use patch embeddings before the position embedding, without autograd; the kept tokens
  carry their position embedding. Deterministic.

Evaluation samples clips as training does (one frame per segment, the centre of each segment, as FluxViT's
test loader) and runs the same selection at K. The shared evaluation protocol (vtbench.methods.reductions) adds
the token budgets `tokens=<n>,group` (by default 1/2 and 1/4 of the base count), the same settings under which
every other method and the baseline are evaluated. Flux-Multi (`budgets: [1, 0.5, 0.25]`, fractions of K) runs
one pass per budget on the same embedded clip, each with its own linear head on the pooled feature; the loss
is the sum of the cross-entropies plus a SmoothL1 alignment of each smaller budget's normalised feature to the
detached largest-budget one; each pass runs the list's other selections too, and label smoothing applies to
each cross-entropy. At evaluation a clip seen with N tokens is classified by the head trained nearest N
(FluxViT picks its head by hand, `--output_head`, with the advice to take the nearest). Flux scores tokens on
the full grid before any other method of the list selects (motion scores travel with the tokens), so it may
follow another token method.

Departures from the original: runs start from random weights unless the run sets `init` (FluxViT's figures come
from its own pretraining and a short fine-tune). The sampling sets scale with the base shape (frames in [0.75T, 3T]
in steps of the tubelet's length, sizes in [0.5S, 1.5S] in steps of the patch, window [K, 3K]; the original draws
6-24 frames and 112-336 pixels with a [2048, 8192] window); frames and sizes are drawn uniformly among the pairs
that fit the window (the original redraws until one fits, which has the same distribution). Heads are linear on the
shared pooled feature (FluxViT gives each budget its own attention-pooling projector too), and the alignment
compares the pooled features themselves (FluxViT passes the smaller budgets' through a learned linear decoder,
`final_clip_decoder_for_projs`, first). Evaluation uses the base input shape for every budget (no search over
larger inputs, the paper's Token Optimization) and one view. Not ported: RandAugment and mixup recipes, repeated
augmentation, dual patch norm, global-local position embedding (the original's ablations credit them with 1 to 1.5
points).
"""

import random

import torch
import torch.nn.functional as F
from torch import nn

from vtbench.core.shape import BatchShape
from vtbench.errors import ConfigError
from vtbench.models.heads import TokenBudgetHeads
from vtbench.models.tokens import Tokens

from .base import Method
from .card import Claim
from .params import Param
from .registry import register
from .selection import group_dynamic_select

SEGMENTS = 0  # BatchShape.stride 0: one frame per equal segment of the whole video (TSN style)


def flexible_shapes(base: BatchShape, tubelet: tuple[int, int, int], budget: int) -> list[tuple[int, int]]:
    """Every (frames, size) of the scaled sets whose token count lies in [budget, 3 x budget]."""
    tt, p, _ = tubelet
    frames = range(max(tt, _up(0.75 * base.frames, tt)), int(3 * base.frames) + 1, tt)
    sizes = range(max(p, _up(0.5 * base.size, p)), int(1.5 * base.size) + 1, p)
    return [(f, s) for f in frames for s in sizes if budget <= (f // tt) * (s // p) ** 2 <= 3 * budget]


def _fractions(budgets: list) -> bool:
    return len(budgets) >= 2 and all(isinstance(b, int | float) and not isinstance(b, bool) and 0 < b <= 1
                                     for b in budgets)


def _up(value: float, step: int) -> int:
    return -(-int(round(value)) // step) * step


@register
class Flux(Method):
    name = "flux"
    # its claim is about inference at a fraction of the tokens: the forward pass at a quarter of them
    claim = Claim("Flux (Wang et al., ICCV 2025)", "equal accuracy at a fraction of the tokens",
                  "84.7 top-1 at 49 GFLOPs against 440 without Token Optimization (87.4 with it, not implemented "
                  "here)", "ViT-B, 16 x 224^2, 1/4 of the tokens",
                  estimated=(("token_dropout", (("keep", 0.25),)),), cost="forward", setting="fewest tokens")
    uses_motion = True
    params = {
        "tokens": Param(int, None, low=1, rule="a positive whole number of tokens", unset="the base count",
                        help="the token budget K kept per clip"),
        "flexible": Param(bool, True, help="sample each batch at a random (frames, size) whose token count lies in "
                                           "[K, 3K]"),
        "budgets": Param(list, None, rule="a list of at least two fractions in (0, 1]", check=_fractions,
                         unset="one budget", help="Flux-Multi: one pass and one head per budget, fractions of K"),
        "align_weight": Param(float, 1.0, low=0, help="weight of the smaller budgets' feature alignment loss"),
    }

    def __init__(self, tokens: int | None = None, flexible: bool = True, budgets: list[float] | None = None,
                 align_weight: float = 1.0):
        self.tokens, self.flexible, self.align_weight = tokens, flexible, align_weight
        self.budgets = sorted(budgets, reverse=True) if budgets else None
        self.shapes: list[tuple[int, int]] = []
        self.seed = 0

    def prepare(self, run) -> None:
        model, base = run.model, run.base_shape
        tubelet = model.patch_embed.tubelet
        grid = model.patch_embed.grid(base.frames, base.size)
        self.tokens = self.tokens or grid[0] * grid[1] * grid[2]
        self.seed = run.config.seed
        try:
            for budget in self._budget_counts():
                group_dynamic_select(_empty_tokens(grid), budget)
        except ValueError as err:
            raise ConfigError(f"method 'flux': {err}") from None
        if self.flexible:
            self.shapes = flexible_shapes(base, tubelet, self.tokens)
            if not self.shapes:
                raise ConfigError(f"method 'flux': no (frames, size) around {base.frames}x{base.size} gives between "
                                  f"{self.tokens} and {3 * self.tokens} tokens; lower `tokens`")
        if self.budgets:
            head = model.head
            heads = [head] + [nn.Linear(head.in_features, head.out_features) for _ in self.budgets[1:]]
            model.head = TokenBudgetHeads(heads, self._budget_counts())

    def _budget_counts(self) -> list[int]:
        return [max(1, round(self.tokens * b)) for b in self.budgets] if self.budgets else [self.tokens]

    def owns(self, hook: str) -> bool:
        if hook == "training_loss":
            return self.budgets is not None  # a single budget leaves the loss to the runner
        if hook in ("batch_shape", "eval_shape"):
            return self.flexible
        return super().owns(hook)

    def batch_shape(self, progress: float, step: int, base: BatchShape) -> BatchShape:
        if not self.flexible:
            return base
        frames, size = random.Random(self.seed * 1_000_003 + step).choice(self.shapes)
        return BatchShape(base.clips, frames, size, SEGMENTS)

    def planned_shape(self, progress: float, step: int, base: BatchShape) -> BatchShape:
        return self.batch_shape(progress, step, base)  # a function of its arguments alone

    def eval_shape(self, base: BatchShape) -> BatchShape:
        return base._replace(stride=SEGMENTS) if self.flexible else base

    def select_tokens(self, tokens: Tokens, progress: float, training: bool) -> Tokens:
        return group_dynamic_select(tokens, min(self.tokens, tokens.full_count))

    def training_loss(self, model: nn.Module, batch, progress: float, select, label_smoothing: float) -> torch.Tensor:
        """One pass per budget on the same clip, each through the list's selections (this one's at the largest
        budget), then the group-dynamic selector at the budget."""
        video, labels = batch
        tokens = select(model.embed(video))
        features = [model.encode(group_dynamic_select(tokens, count)) for count in self._budget_counts()]
        return flux_multi_loss(features, list(model.head.heads), labels, self.align_weight, label_smoothing)


def flux_multi_loss(features: list[torch.Tensor], heads: list[nn.Module], labels: torch.Tensor,
                    align_weight: float = 1.0, label_smoothing: float = 0.0) -> torch.Tensor:
    """Sum of each budget's cross-entropy plus SmoothL1 of smaller budgets' normalised features to the largest's."""
    classification = sum(F.cross_entropy(head(f).float(), labels, label_smoothing=label_smoothing)
                         for f, head in zip(features, heads, strict=True))
    teacher = F.normalize(features[0].detach().float(), dim=-1)
    alignment = sum(F.smooth_l1_loss(F.normalize(f.float(), dim=-1), teacher) for f in features[1:])
    return classification + align_weight * alignment


def _empty_tokens(grid: tuple[int, int, int]) -> Tokens:
    n = grid[0] * grid[1] * grid[2]
    x = torch.zeros(1, n, 1)
    pos = torch.zeros(1, n, 3, dtype=torch.long)
    return Tokens(x=x, pos=pos, grid=grid, raw=x)
