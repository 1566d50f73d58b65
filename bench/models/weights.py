"""Weights into a model: read a checkpoint file safely, check every key against the model, and say what was
loaded, inflated, replaced or left at random.

A format's converter (`vtbench.models.inflate` for timm image models, `vtbench.models.videomae` for VideoMAE)
turns a checkpoint's state dict into a `Converted` one in the model's own names; `load_into` then checks it
against the model: every key the model has must be given, every key given must exist with the model's shape,
except the classifier, which is replaced (left at its fresh initialisation) when the class count differs. Any
other mismatch is one error naming the keys, unless `strict=False`.
"""

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from vtbench.errors import ConfigError

HEAD = "head."  # the classifier's parameters: replaced, never an error, when the checkpoint's do not fit
WRAPPERS = ("model", "state_dict", "module", "model_state")  # keys under which training scripts nest the weights
SHOWN = 5  # keys named in an error before "and N more"


@dataclass
class Converted:
    """A state dict in the model's names, with how each made (not merely copied) entry came about."""

    state: dict[str, torch.Tensor]
    made: dict[str, str] = field(default_factory=dict)  # model key -> how it was made ("inflated: central frame")
    dropped: dict[str, str] = field(default_factory=dict)  # checkpoint key -> why it is not used (a decoder's)


@dataclass
class LoadReport:
    """What a load did, for summary.json."""

    source: str
    loaded: list[str]
    made: dict[str, str]
    replaced: list[str]  # the classifier's keys, left at their fresh initialisation
    random: list[str]  # keys the checkpoint did not give (only with strict=False)
    unused: list[str]  # checkpoint keys the model has no place for (only with strict=False)
    dropped: dict[str, str]

    def summary(self) -> dict:
        return {"source": self.source, "loaded": len(self.loaded), "made": self.made, "replaced": self.replaced,
                "random": self.random, "unused": self.unused, "dropped": sorted(self.dropped)}


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a `.safetensors` file or of a torch file loaded with `weights_only=True` (no code runs),
    unwrapped from the usual nesting ("model", "state_dict", ...) and DDP's "module." prefix."""
    path = Path(path)
    if not path.is_file():
        reason = "does not exist" if not path.exists() else "is not a file"
        raise ConfigError(f"init.file {path} {reason}")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            # training scripts save their arguments beside the weights (VideoMAE: an argparse.Namespace)
            with torch.serialization.safe_globals([argparse.Namespace]):
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a corrupt or foreign file: say which, in one line
        wanted = re.search(r"(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)", str(err))
        reason = f"it needs {wanted.group(1)}, which a weights-only load does not run" if wanted else \
            (str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
        raise ConfigError(f"init.file {path} cannot be read as a checkpoint: {reason}") from None
    while isinstance(state, dict) and len(state) >= 1 and any(k in state for k in WRAPPERS):
        inner = next(state[k] for k in WRAPPERS if k in state)
        if not isinstance(inner, dict):
            break
        state = inner
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"init.file {path} holds no state dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _named(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN])
    return shown + (f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else "")


def load_into(model: nn.Module, converted: Converted, source: str, strict: bool = True) -> LoadReport:
    """Copy `converted` into `model` after checking every key; raise one ConfigError naming the mismatches
    (nothing is copied then) unless `strict` is False, in which case what fits is loaded and the rest reported."""
    target = model.state_dict()
    given = converted.state
    head_mismatch = [k for k in given if k.startswith(HEAD) and k in target and given[k].shape != target[k].shape]
    replaced = sorted(k for k in target if k.startswith(HEAD) and (k not in given or k in head_mismatch))
    missing = sorted(k for k in target if k not in given and not k.startswith(HEAD))
    unused = sorted(k for k in given if k not in target)
    wrong = sorted(f"{k} {tuple(given[k].shape)} (model: {tuple(target[k].shape)})" for k in given
                   if k in target and not k.startswith(HEAD) and given[k].shape != target[k].shape)
    if strict and (missing or unused or wrong):
        parts = []
        if missing:
            parts.append(f"missing {_named(missing)}")
        if unused:
            parts.append(f"unexpected {_named(unused)}")
        if wrong:
            parts.append(f"wrong shape {_named(wrong)}")
        raise ConfigError(f"init: {source} does not fit the model: {'; '.join(parts)} (set init.strict=false to load "
                          f"what fits and leave the rest at random)")
    loaded = sorted(k for k in given if k in target and given[k].shape == target[k].shape)
    with torch.no_grad():
        for key in loaded:
            target[key].copy_(given[key].to(target[key].dtype))
    random = missing + sorted(k.split(" ")[0] for k in wrong)
    return LoadReport(source, loaded, {k: v for k, v in converted.made.items() if k in loaded}, replaced, random,
                      unused, converted.dropped)
