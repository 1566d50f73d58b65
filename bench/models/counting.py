"""The tokens a model's blocks see, reported to whoever counts them: the caller opens a count around the passes
it wants counted, and each pass of a model records itself in it.

    with counting_tokens() as seen:
        loss = model(video)
    seen.counts   # per pass: real tokens per clip (class tokens excluded), mean over the blocks
    seen.lengths  # per pass: the blocks' sequence lengths (padding included), one int where all are alike

Outside a count a pass records nothing. Counts nest: a pass records in the innermost count open in its context
(a method that opened its own count inside a step would hide its passes from the runner's), and a pass run on
another thread records in none.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass
class TokenCount:
    counts: list[float] = field(default_factory=list)
    lengths: list[int | tuple[int, ...]] = field(default_factory=list)


_open: ContextVar[TokenCount | None] = ContextVar("token_count", default=None)


@contextmanager
def counting_tokens() -> Iterator[TokenCount]:
    seen = TokenCount()
    token = _open.set(seen)
    try:
        yield seen
    finally:
        _open.reset(token)


def record(count: float, length: int | tuple[int, ...]) -> None:
    """One pass of a model: its tokens per clip and its blocks' sequence lengths."""
    seen = _open.get()
    if seen is not None:
        seen.counts.append(count)
        seen.lengths.append(length)
