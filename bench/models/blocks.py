"""What flows through a VideoViT's blocks, and how methods act inside and between them.

A `Stream` is the sequence the blocks see: the prefix tokens (CLS) first, then the clip's tokens, with the padding
mask of clips that keep different numbers of tokens and, once tokens were merged, how many input tokens each one
stands for. A `BlockPlan` is what the methods attach to the tokens (`Tokens.blocks`): hooks that each wrap the run
of one block, so that a method may run a block on fewer tokens and put the others back (layer-wise token dropping),
or merge tokens between a block's attention and its MLP (ToMe). Without a plan a block is timm's own forward.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Stream:
    x: torch.Tensor  # (B, P + N, D)
    prefix: int  # P: prefix tokens (CLS), never dropped nor merged
    valid: torch.Tensor | None = None  # (B, P + N) bool; None: every token is real
    size: torch.Tensor | None = None  # (B, P + N) float: input tokens each token stands for; None: one each
    proportional: bool = False  # add log(size) to the attention logits (ToMe's proportional attention)
    # (mean real tokens per clip, physical length) of every block run, shared by the stream's copies
    seen: list = field(default_factory=list)

    def note(self) -> None:
        """Record that a block runs on this stream now (whoever runs a block calls it)."""
        self.seen.append((self.real_count(), self.count))

    @property
    def count(self) -> int:
        """Tokens per clip after the prefix, padding included (the physical length)."""
        return self.x.shape[1] - self.prefix

    def real_count(self) -> torch.Tensor | int:
        """Mean real tokens per clip after the prefix (a tensor when clips differ, so that reading it waits)."""
        if self.valid is None:
            return self.count
        return self.valid[:, self.prefix:].sum() / self.valid.shape[0]

    def attn_bias(self) -> torch.Tensor | None:
        """The attention mask of every query, (B, 1, 1, P + N): with proportional attention log(size) added to the
        logits (-inf at padding); else a boolean mask (True: attend) where there is padding; None when neither
        applies (the fast path). Boolean, it suits any autocast dtype; `attend` casts the float one."""
        if self.proportional and self.size is not None:
            bias = self.size.float().log()
            if self.valid is not None:
                bias = bias.masked_fill(~self.valid, float("-inf"))
            return bias[:, None, None, :]
        if self.valid is not None:
            return self.valid[:, None, None, :]
        return None

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of the clip tokens of `x` (B, P + N, D), over real tokens, each weighted by the tokens it stands
        for (so a merged sequence pools as the unmerged one would)."""
        body = x[:, self.prefix:]
        if self.valid is None and self.size is None:
            return body.mean(dim=1)
        weight = torch.ones(body.shape[:2], dtype=body.dtype, device=body.device)
        if self.size is not None:
            weight = self.size[:, self.prefix:].to(body.dtype)
        if self.valid is not None:
            weight = weight * self.valid[:, self.prefix:].to(body.dtype)
        return (body * weight[..., None]).sum(dim=1) / weight.sum(dim=1, keepdim=True)


def run_block(block: nn.Module, stream: Stream) -> Stream:
    """timm's Block forward, with the stream's padding mask and size bias."""
    stream.note()
    return replace(stream, x=block(stream.x, attn_mask=stream.attn_bias()))


def attend(attn: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """timm's Attention forward that also returns the keys averaged over heads (B, N, head_dim), ToMe's
    similarity metric; the same parameters, the same result as `attn(x, attn_mask=bias)`."""
    if getattr(attn, "gate", None) is not None:
        raise ValueError("gated attention is not supported by attend()")
    b, n, _ = x.shape
    qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    if bias is not None and bias.is_floating_point():
        bias = bias.to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                         dropout_p=attn.attn_drop.p if attn.training else 0.0)
    out = attn.proj_drop(attn.proj(attn.norm(out.transpose(1, 2).reshape(b, n, -1))))
    return out, k.mean(dim=1)


def attention_half(block: nn.Module, stream: Stream) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual attention half of a timm Block -> (x after it, keys averaged over heads)."""
    out, keys = attend(block.attn, block.norm1(stream.x), stream.attn_bias())
    return stream.x + block.drop_path1(block.ls1(out)), keys


def mlp_half(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The residual MLP half of a timm Block."""
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


# hook(index, depth, block, stream, run) -> stream; `run` runs the block (and the hooks after this one)
BlockHook = Callable[[int, int, nn.Module, Stream, Callable[[Stream], Stream]], Stream]


@dataclass(frozen=True)
class BlockPlan:
    """Hooks around every block, outermost first."""

    hooks: Sequence[BlockHook]

    def run(self, index: int, depth: int, block: nn.Module, stream: Stream) -> Stream:
        def step(k: int, s: Stream) -> Stream:
            if k == len(self.hooks):
                return run_block(block, s)
            return self.hooks[k](index, depth, block, s, lambda after: step(k + 1, after))

        return step(0, stream)
