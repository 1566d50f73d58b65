"""Classifier heads. A model classifies its pooled feature with `classify(head, feature, tokens)`, so that a head
may depend on how many tokens the clip was seen with (Flux-Multi trains one head per token budget)."""

import torch
from torch import nn


class TokenBudgetHeads(nn.Module):
    """One linear head per token budget; a clip seen with N tokens is classified by the head trained nearest N
    (the first, largest budget's, on a tie)."""

    def __init__(self, heads: list[nn.Linear], counts: list[int]):
        super().__init__()
        if len(heads) != len(counts):
            raise ValueError(f"{len(heads)} heads for {len(counts)} token budgets")
        self.heads = nn.ModuleList(heads)
        self.counts = list(counts)

    def nearest(self, tokens: int) -> int:
        return min(range(len(self.counts)), key=lambda i: abs(self.counts[i] - tokens))

    def forward(self, feature: torch.Tensor, tokens: int | None = None) -> torch.Tensor:
        return self.heads[0 if tokens is None else self.nearest(tokens)](feature)


def classify(head: nn.Module, feature: torch.Tensor, tokens: int) -> torch.Tensor:
    return head(feature, tokens) if isinstance(head, TokenBudgetHeads) else head(feature)
