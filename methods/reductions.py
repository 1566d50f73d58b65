"""The evaluation protocol every run shares, the baseline included (docs/design.md,
"Comparisons": evaluation settings are shared, not per method). It lives beside the selections it runs
(vtbench.methods.selection); the engine evaluates a run under it.

Besides the default evaluation (full clips through the methods' own evaluation-time selections), a run is
evaluated under reduced-token settings named by what they do:

    keep=<k>,random      a fixed-seed random subset of round(k x N) tokens per clip
    keep=<k>,magnitude   the round(k x N) tokens with the largest L1 norm of their embedding (PSS's selection)
    tokens=<n>,group     Flux's group-dynamic selector at a budget of n tokens

N being the clip's full token count. A setting runs after the methods' own evaluation selections, so it composes
with every method of the list, and does nothing where they already kept no more tokens. The settings are shared;
the evaluation clips follow each run's own sampling (a method's `eval_shape`: Flux samples one frame per segment,
as it trains), recorded in evals.parquet (frames, size, stride) and in the report's `eval_input` column. The run setting
`eval_sweep` lists them (`tokens=1/2,group` asks for a fraction of the base count and is resolved to a number
when the configuration resolves); `eval_sweep_at` evaluates them at the final point only (`final`, the default)
or at every evaluation point (`every`).
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import torch

from vtbench.errors import ConfigError
from vtbench.models.tokens import Tokens

from .selection import group_count, group_dynamic_select, random_subset, top_magnitude, with_motion

SELECTIONS = ("random", "magnitude", "group")
DEFAULT_SWEEP = [f"keep={k},{s}" for k in (0.8, 0.6, 0.4, 0.2) for s in ("random", "magnitude")] + [
    "tokens=1/2,group", "tokens=1/4,group"]
WHEN = ("final", "every")
FORMS = ("keep=<k>,random or keep=<k>,magnitude with 0 < k < 1; tokens=<n>,group with n a number of tokens or "
         "a fraction of the base count such as 1/4")
_PATTERN = re.compile(r"^\s*(keep|tokens)\s*=\s*([0-9./eE+-]+)\s*,\s*(\w+)\s*$")
RANDOM_SEED = 0  # the same random subsets at every evaluation, in every run


@dataclass(frozen=True)
class Reduction:
    """One reduced-token setting: `keep` (a fraction of the full grid) for random and magnitude, `tokens` (a budget)
    for group."""

    selection: str
    keep: float | None = None
    tokens: int | None = None

    @property
    def name(self) -> str:
        if self.selection == "group":
            return f"tokens={self.tokens},group"
        return f"keep={self.keep:g},{self.selection}"

    def __call__(self, tokens: Tokens) -> Tokens:
        if self.selection == "group":
            return group_dynamic_select(tokens, self.tokens)
        k = max(1, round(self.keep * tokens.full_count))
        if self.selection == "magnitude":
            return top_magnitude(tokens, k)
        generator = torch.Generator(tokens.x.device).manual_seed(RANDOM_SEED)
        return random_subset(tokens, k, generator)

    def after(self, chain: Callable[[Tokens], Tokens] | None) -> Callable[[Tokens], Tokens]:
        """This reduction applied after the methods' own evaluation selections `chain`."""
        def select(tokens: Tokens) -> Tokens:
            if self.selection == "group":  # scored on the full grid, before any other selection
                tokens = with_motion(tokens)
            return self(chain(tokens) if chain is not None else tokens)

        return select


def parse(text: str, base_tokens: int | None = None) -> Reduction:
    """A setting name as written in `eval_sweep`; fractions of the base count need `base_tokens`."""
    match = _PATTERN.match(str(text))
    if not match or match.group(3) not in SELECTIONS or (match.group(1) == "tokens") != (match.group(3) == "group"):
        raise ConfigError(f"eval_sweep: {text!r} is not an evaluation setting; allowed: {FORMS}")
    kind, amount, selection = match.groups()
    try:
        value = Fraction(amount)
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"eval_sweep: {text!r}: {amount!r} is not a number; allowed: {FORMS}") from None
    if kind == "keep":
        if not 0 < value < 1:
            raise ConfigError(f"eval_sweep: {text!r}: keep must lie in (0, 1) (1 is the default evaluation)")
        return Reduction(selection, keep=float(value))
    if value.denominator != 1 or "." in amount:  # a fraction of the base count
        if base_tokens is None or not 0 < value < 1:
            raise ConfigError(f"eval_sweep: {text!r}: a fraction of the base count must lie in (0, 1)")
        value = Fraction(int(base_tokens * value))
    if base_tokens is not None and not 1 <= value <= base_tokens:
        raise ConfigError(f"eval_sweep: {text!r}: the budget must lie between 1 and the base count {base_tokens}")
    return Reduction(selection, tokens=int(value))


def resolve_sweep(entries: list, grid: tuple[int, int, int]) -> list[str]:
    """Canonical names of `entries` for a base token grid (T, H, W): checked, fractions resolved, no repeats."""
    if not isinstance(entries, list):
        raise ConfigError(f"eval_sweep must be a list of settings ({FORMS}); got {entries!r}")
    base = grid[0] * grid[1] * grid[2]
    names = []
    for entry in entries:
        reduction = parse(entry, base)
        if reduction.selection == "group" and reduction.tokens < group_count(grid[0]):
            raise ConfigError(f"eval_sweep: {entry!r}: the group selector keeps budget // {group_count(grid[0])} "
                              f"tokens per frame group of the {'x'.join(map(str, grid))} grid, none at this budget")
        if reduction.name in names:
            raise ConfigError(f"eval_sweep: {entry!r} is listed twice (as {reduction.name})")
        names.append(reduction.name)
    return names
