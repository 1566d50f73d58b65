"""FLOPs of training steps, counted with torch.utils.flop_counter once per step signature.

A step's signature is its batch shape plus the token counts the model saw (known only after the step, since
methods choose them inside the forward pass). A step is counted when its signature is new; a step whose
signature turns out new without having been counted waits, pending, until a later step with that signature
is counted: while any step of a batch shape is pending, every step of that shape is counted (signatures that
alternate would otherwise keep predicting the one already known and never count the other).
"""

from contextlib import ExitStack, nullcontext

import torch
from torch.utils.flop_counter import FlopCounterMode


class StepFlops:
    def __init__(self):
        self.known: dict[tuple, float] = {}
        self.last_tokens: dict[tuple, tuple] = {}
        self.pending: dict[tuple, int] = {}
        self._counter: FlopCounterMode | None = None

    def context(self, shape_key: tuple):
        """Wrap a training step: counts it if its predicted signature is not known yet."""
        predicted = (shape_key, self.last_tokens.get(shape_key))
        waiting = any(signature[0] == shape_key for signature in self.pending)
        if predicted[1] is None or predicted not in self.known or waiting:
            self._counter = FlopCounterMode(display=False)
            # a counted step runs eagerly: torch.compile does not trace under a dispatch mode, and torch 2.9 and
            # earlier mark a compiled frame first met under one as skipped, for good (compile would never happen)
            with ExitStack() as counted:
                counted.enter_context(torch.compiler.set_stance("force_eager"))
                counted.enter_context(self._counter)
                return counted.pop_all()
        self._counter = None
        return nullcontext()

    def settle(self, shape_key: tuple, tokens: tuple) -> float:
        """After the step: the FLOPs it (and any pending steps of the same signature) cost."""
        signature = (shape_key, tokens)
        self.last_tokens[shape_key] = tokens
        if self._counter is not None:
            self.known[signature] = float(self._counter.get_total_flops())
            self._counter = None
        if signature not in self.known:
            self.pending[signature] = self.pending.get(signature, 0) + 1
            return 0.0
        return self.known[signature] * (1 + self.pending.pop(signature, 0))

    def state_dict(self) -> dict:
        return {"known": dict(self.known), "last_tokens": dict(self.last_tokens), "pending": dict(self.pending)}

    def load_state_dict(self, state: dict) -> None:
        self.known, self.last_tokens, self.pending = state["known"], state["last_tokens"], state["pending"]
