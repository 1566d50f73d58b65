"""Compiled training steps (`compile: true`): each transformer block of the model compiled on its own, as
torchtitan does, with static shapes.

The token selections, embeddings, heads and losses run eagerly around the blocks, so a method's Python
decisions (a schedule read at the step's progress, a token count) never become guards of compiled code: a block
compiles once per token count it meets, and the methods' counts are few (PSS rounds its ratio to a quantum,
multigrid and Flux have a handful of shapes). Compilation happens inside the steps that meet a new count, so it
is on the budget's clock, as AlgoPerf counts it; `summary.json` reports it apart: `compile_s` (torch._dynamo's
own timings of the forward compilation and of the backward's, which inductor compiles at the first backward),
`compiled_frames` and `recompiles` (frames compiled after the first step that compiled any), and evaluation's
own compilation apart (`eval_compile_s`, `eval_compiled_frames`: off the clock). The first step of
a new count runs eagerly under the FLOP counter (torch.compile does not trace under a dispatch mode), so a count
compiles at its second step. The blocks share one compiled code (their call), whose cache holds an entry per
token count and grad mode (training, evaluation): past RECOMPILE_LIMIT entries the run fails with torch's error
rather than falling back to eager code silently.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from timm.models.vision_transformer import Block
from torch._dynamo import config as dynamo_config
from torch._dynamo import utils as dynamo_utils

RECOMPILE_LIMIT = 64  # entries of the blocks' compiled code: far above the token counts any method here asks for
_TIMINGS = ("_compile.compile_inner", "compile_fx.<locals>.bw_compiler")


def compile_blocks(model: torch.nn.Module, backend: str, limit: int = RECOMPILE_LIMIT) -> int:
    """Compile every transformer block of `model` in place (its hooks fire once); returns how many."""
    dynamo_config.recompile_limit = limit
    dynamo_config.accumulated_recompile_limit = max(dynamo_config.accumulated_recompile_limit, 4 * limit)
    dynamo_config.fail_on_recompile_limit_hit = True
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    for block in blocks:
        block.compile(backend=backend, dynamic=False)
    return len(blocks)


def _now() -> tuple[float, int]:
    seconds = sum(sum(dynamo_utils.compilation_time_metrics.get(name, [])) for name in _TIMINGS)
    return seconds, int(dynamo_utils.counters["frames"]["ok"])


class CompileStats:
    """What the run compiled, training and evaluation apart, added up over its attempts (a resumed attempt's
    first compilation is not a recompilation)."""

    def __init__(self):
        self.last = _now()
        self.compiled_once = False  # in this process, by a training step
        self.totals = {"compile_s": 0.0, "compiled_frames": 0, "recompiles": 0, "eval_compile_s": 0.0,
                       "eval_compiled_frames": 0}

    def _take(self) -> tuple[float, int]:
        now = _now()
        seconds, frames = now[0] - self.last[0], now[1] - self.last[1]
        self.last = now
        return seconds, frames

    def step_done(self) -> None:
        seconds, frames = self._take()
        self.totals["compile_s"] += seconds
        self.totals["compiled_frames"] += frames
        if self.compiled_once:
            self.totals["recompiles"] += frames
        self.compiled_once = self.compiled_once or frames > 0

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        self._take()  # nothing compiles between the last step and here
        try:
            yield
        finally:
            seconds, frames = self._take()
            self.totals["eval_compile_s"] += seconds
            self.totals["eval_compiled_frames"] += frames

    def summary(self) -> dict[str, Any]:
        return dict(self.totals)

    state_dict = summary  # the totals are the whole state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.totals.update(state)
