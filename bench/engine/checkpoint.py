"""A run's checkpoint: one file holding the state of each of the run's parts, each saved and restored by the part
itself through `state_dict()` and `load_state_dict(state)`, torch's convention.

Shared parts (the model, the optimizer, the clock, the logs) are the same on every rank and saved once, by rank 0;
a rank's own parts (its random state, its measurements) are gathered from every rank, so that each resumes its own.
The file holds tensors and plain values only (`results.save_checkpoint`).
"""

import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from vtbench.engine import results
from vtbench.engine.distributed import World
from vtbench.errors import VtbenchError

FORMAT = 2  # 1: the flat layout before parts (read by `_from_flat`)


class Stateful(Protocol):
    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> None: ...


class Checkpointer:
    def __init__(self, path: Path, world: World, shared: Mapping[str, Stateful], own: Mapping[str, Stateful]):
        self.path, self.world, self.shared, self.own = path, world, dict(shared), dict(own)

    def save(self, run_id: str) -> None:
        ranks = self.world.gather({name: part.state_dict() for name, part in self.own.items()})
        if self.world.main:
            state = {name: part.state_dict() for name, part in self.shared.items()}
            results.save_checkpoint(self.path, {"format": FORMAT, "run_id": run_id, **state, "ranks": ranks})

    def restore(self) -> bool:
        """Load every part from the file, if there is one; whether there was."""
        if not self.path.exists():
            return False
        state = results.load_checkpoint(self.path)
        if "format" not in state:
            state = _from_flat(state)
        if len(state["ranks"]) != self.world.size:
            raise VtbenchError(f"{self.path}: written by {len(state['ranks'])} processes, and this run has "
                               f"{self.world.size}")
        for name, part in self.shared.items():
            part.load_state_dict(state[name])
        for name, part in self.own.items():
            part.load_state_dict(state["ranks"][self.world.rank][name])
        return True


class RandomState:
    """The random streams of this process: Python's, NumPy's global, torch's on the CPU and on every GPU."""

    def state_dict(self) -> dict[str, Any]:
        state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        random.setstate(state["python"])
        name, keys, *rest = state["numpy"]  # saved with its key array as a tensor (results.plain)
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class Part:
    """A part made of two functions: what it saves, and how it takes that back."""

    def __init__(self, save: Callable[[], Any], load: Callable[[Any], None]):
        self.state_dict, self.load_state_dict = save, load


def _from_flat(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint of the first layout (every value at the top, the step rows inside) in the layout of parts."""
    several = state.get("world_size", 1) > 1
    rngs = state["ranks_rng"] if several else [state["rng"]]
    # the oldest checkpoints of several ranks kept rank 0's measurements alone; those before compilation, no "compiled"
    measures = (state.get("ranks_measure") if several else None) or [state["measure"]] * len(rngs)
    return {
        **{name: state[name] for name in ("model", "optimizer", "methods", "flops", "cpu")},
        "compiled": state.get("compiled"),
        "clock": {"used": state["used"], "off_clock_s": state["off_clock_s"]},
        "evaluation": {"next": state["next_eval"], "rows": state["eval_rows"]},
        "steps": {"rows": state["step_rows"]},
        "run": {"resumed_at": state.get("resumed_at", []), "skipped_videos": state.get("skipped_videos", {}),
                "data_wait_s": state.get("data_wait_s", 0.0)},
        "ranks": [{"rng": rng, "measure": measure} for rng, measure in zip(rngs, measures, strict=True)],
    }
