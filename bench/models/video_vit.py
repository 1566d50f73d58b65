"""VideoViT: a joint space-time ViT over tubelets (VideoMAE style), built from timm parts.

The forward pass is split where token methods act: `embed` (tubelets + position embedding -> Tokens),
an optional `select` on those Tokens, then `encode` (CLS, blocks, norm, pooling) and `head`. A CLS token,
when the model has one, is prepended after selection, so no selection can drop it.

Three options make it the VideoMAE encoder exactly (`vtbench.models.videomae` loads its checkpoints): the fixed
sinusoid position table (`pos_embed="sincos"`), LayerNorm after mean pooling instead of before
(`fc_norm=True`), and q and v biases without a k bias (`qkv_bias="qv"`). Their defaults build the model as it was
before they existed: the same parameters, names, initialisation and outputs.
"""

import re
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from .blocks import Stream, run_block
from .counting import record
from .embed import SinCosPosEmbed, SpaceTimePosEmbed, TubeletEmbed, embed_clip
from .heads import classify
from .param_groups import positions_and_class_tokens
from .tokens import Tokens

Select = Callable[[Tokens], Tokens]
POS_EMBEDS = ("separable", "sincos")
QKV_BIASES = ("all", "qv", "none")


class VideoViT(nn.Module):
    def __init__(
        self,
        num_classes: int,
        frames: int,
        size: int,
        tubelet: tuple[int, int, int] = (2, 16, 16),
        dim: int = 768,
        depth: int = 12,
        heads: int = 12,
        mlp_ratio: float = 4.0,
        cls_token: bool = False,
        pool: str = "mean",
        drop_path: float = 0.0,
        pos_embed: str = "separable",
        fc_norm: bool = False,
        qkv_bias: str = "all",
    ):
        super().__init__()
        if pool not in ("mean", "cls"):
            raise ValueError(f"pool must be 'mean' or 'cls', got {pool!r}")
        if pool == "cls" and not cls_token:
            raise ValueError("pool 'cls' needs cls_token=True")
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f"pos_embed must be one of {', '.join(POS_EMBEDS)}, got {pos_embed!r}")
        if fc_norm and pool == "cls":
            raise ValueError("fc_norm normalises the mean-pooled feature; it does not go with pool 'cls'")
        self.dim, self.pool = dim, pool
        self.patch_embed = TubeletEmbed(dim, tubelet)
        grid = self.patch_embed.grid(frames, size)
        self.pos_embed = SpaceTimePosEmbed(dim, grid) if pos_embed == "separable" else SinCosPosEmbed(dim, grid)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cls_token else None
        self.blocks = make_blocks(dim, depth, heads, mlp_ratio, drop_path, qkv_bias)
        # fc_norm: no norm on the tokens, a LayerNorm on the pooled feature (timm's and VideoMAE's mean pooling)
        self.norm = nn.Identity() if fc_norm else layer_norm(dim)
        self.fc_norm = layer_norm(dim) if fc_norm else None
        self.head = nn.Linear(dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        if self.cls_token is not None:
            trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:  # qkv with qkv_bias "none"
                    nn.init.zeros_(m.bias)

    @property
    def tubelet(self) -> tuple[int, int, int]:
        """(frames, height, width) of one token's patch."""
        return self.patch_embed.tubelet

    def no_weight_decay(self) -> set[str]:
        """timm's question: what weight decay leaves out besides the 1-D parameters."""
        return positions_and_class_tokens(self)

    def group_matcher(self, coarse: bool = False) -> Callable[[str], int]:
        """timm's question, for layer-wise learning-rate decay: each parameter's depth from the input. The stem 0,
        block i i + 1, everything else (the final norm, the head, what methods add to the model) at the top."""
        top = len(self.blocks) + 1

        def order(name: str) -> int:
            found = re.match(r"blocks\.(\d+)\.", name)
            if found:
                return 1 + int(found.group(1))
            return 0 if name.startswith(("patch_embed.", "pos_embed.", "cls_token")) else top

        return order

    @property
    def num_prefix_tokens(self) -> int:
        return 0 if self.cls_token is None else 1

    def embed(self, video: torch.Tensor) -> Tokens:
        return embed_clip(self.patch_embed, self.pos_embed, video)

    def encode(self, tokens: Tokens) -> torch.Tensor:
        """Blocks over any token subset -> (B, D) clip feature. Padded clips (`tokens.valid`) are masked out of
        attention and pooling; a plan of the methods (`tokens.blocks`) may change the tokens from block to block."""
        x, valid = tokens.x, tokens.valid
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
            valid = None if valid is None else torch.cat([valid.new_ones(x.shape[0], 1), valid], dim=1)
        stream = Stream(x, self.num_prefix_tokens, valid)
        for index, block in enumerate(self.blocks):
            if tokens.blocks is None:
                stream = run_block(block, stream)
            else:
                stream = tokens.blocks.run(index, len(self.blocks), block, stream)
        self._record([c for c, _ in stream.seen], [n for _, n in stream.seen])
        x = self.norm(stream.x)
        if self.pool == "cls":
            return x[:, 0]
        feature = stream.pool(x)
        return feature if self.fc_norm is None else self.fc_norm(feature)

    def _record(self, counts: list, lengths: list[int]) -> None:
        """Tokens per clip that the blocks saw, averaged over the blocks (real tokens, mean over clips), and the
        blocks' physical lengths (what a step's FLOPs depend on)."""
        if all(isinstance(c, int) for c in counts) and len(set(counts)) == 1:
            mean = counts[0]
        else:
            mean = float(sum(torch.as_tensor(c, dtype=torch.float64) for c in counts) / len(counts))
        record(mean, tuple(lengths) if len(set(lengths)) > 1 else lengths[0])

    def forward(self, video: torch.Tensor, select: Select | None = None) -> torch.Tensor:
        tokens = self.embed(video)
        if select is not None:
            tokens = select(tokens)
        return classify(self.head, self.encode(tokens), tokens.count)


layer_norm = partial(nn.LayerNorm, eps=1e-6)


class QVBiasLinear(nn.Linear):
    """timm's fused qkv projection with VideoMAE's biases: q and v have one, k has none. The state keeps timm's
    `weight` and (3*dim) `bias`, whose k third is zero and multiplied by zero in every forward, so it gets no
    gradient and never moves (a k bias would not change attention anyway: it adds the same q.b to every key's
    logit). Whoever calls `attn.qkv(x)` (blocks.attend among them) gets the biases right."""

    def __init__(self, linear: nn.Linear):
        nn.Module.__init__(self)
        if linear.bias is None or linear.out_features % 3:
            raise ValueError("QVBiasLinear wraps a fused qkv Linear with a bias")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        third = self.out_features // 3
        mask = torch.ones(self.out_features, dtype=self.bias.dtype, device=self.bias.device)
        mask[third:2 * third] = 0
        self.register_buffer("bias_mask", mask, persistent=False)
        with torch.no_grad():
            self.bias.mul_(mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias * self.bias_mask)


def make_blocks(dim: int, depth: int, heads: int, mlp_ratio: float, drop_path: float,
                qkv_bias: str = "all") -> nn.ModuleList:
    """timm ViT blocks with stochastic depth rising linearly to `drop_path`; `qkv_bias` "all" (timm's fused bias),
    "qv" (VideoMAE's q and v biases, no k bias) or "none"."""
    if qkv_bias not in QKV_BIASES:
        raise ValueError(f"qkv_bias must be one of {', '.join(QKV_BIASES)}, got {qkv_bias!r}")
    rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
    blocks = nn.ModuleList(
        Block(dim, heads, mlp_ratio, qkv_bias=qkv_bias != "none", drop_path=r, norm_layer=layer_norm) for r in rates
    )
    if qkv_bias == "qv":
        for block in blocks:
            block.attn.qkv = QVBiasLinear(block.attn.qkv)
    return blocks
