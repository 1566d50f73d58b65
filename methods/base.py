"""The Method interface (docs/design.md, "The Method interface") and how a list of methods composes.

A method changes training only through these hooks; each default does nothing. The runner calls them
through a `MethodStack` and never names a method.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar, NamedTuple, Protocol

import torch
import torch.nn.functional as F

from vtbench.core.budget import BudgetClock
from vtbench.core.shape import BatchShape
from vtbench.errors import ConfigError
from vtbench.models.blocks import BlockHook, BlockPlan
from vtbench.models.tokens import Tokens

from .card import Claim
from .params import Param
from .selection import with_motion

Batch = tuple[torch.Tensor, torch.Tensor]  # (video (B, C, T, H, W), labels (B,))
Select = Callable[[Tokens], Tokens]


class Seeds(NamedTuple):
    """The seeds a run draws its randomness from: `weights` seeds the initialisation and the global generators (a
    method's own draws, such as token masks); `data` the clips drawn and their augmentation."""

    weights: int
    data: int


class RunSettings(Protocol):
    """What a method may read of the run's configuration (the engine's RunConfig has these and more)."""

    seed: int
    compile: bool


@dataclass
class RunContext:
    """What `Method.prepare` may look at and change (it may replace `model`)."""

    config: RunSettings
    model: torch.nn.Module
    base_shape: BatchShape
    num_classes: int
    device: torch.device
    train_data: Any
    clock: BudgetClock | None = None  # read-only for methods: what training has used so far
    # from the next step on, training memory peaks also count towards `<name>_mem_*` in summary.json
    begin_phase: Callable[[str], None] = lambda name: None


@dataclass(frozen=True)
class EvalSetting:
    """An extra evaluation: `select` runs after the methods' own evaluation selections; frames/size override the
    evaluation clip shape."""

    name: str
    select: Callable[[Tokens], Tokens] | None = None
    frames: int | None = None
    size: int | None = None


class Method:
    """Base class of every training accelerator. Subclasses override only the hooks they need."""

    name: ClassVar[str] = ""
    claim: ClassVar[Claim | None] = None  # the paper's headline claim, for the reproduction table (methods/card.py)
    # the constructor's parameters, typed, with their defaults and allowed values (vtbench.methods.params): checked
    # when a run's configuration resolves and handed to the constructor checked; None (undeclared) only for methods
    # that tests define
    params: ClassVar[dict[str, Param] | None] = None
    # selects by the change of each token against the previous frame: motion scores are computed on the full grid
    # before any selection of the list, so that they survive them (vtbench.methods.selection.with_motion)
    uses_motion: ClassVar[bool] = False
    # some trainable parameters take no part in some steps: under DDP the runner then has them looked for at every
    # step (`find_unused_parameters`); a method that leaves one out without saying so fails with DDP's own error
    leaves_parameters_unused: ClassVar[bool] = False
    # hooks whose answer one method of a list decides alone
    OWNED_HOOKS: ClassVar[tuple[str, ...]] = ("batch_shape", "eval_shape", "training_loss")

    @classmethod
    def check_together(cls, values: dict[str, Any]) -> None:
        """Rules across parameters, on every declared value (defaults filled in): raise ValueError naming them."""

    def random_seeds(self, seeds: Seeds) -> Seeds:
        """The seeds the run draws its randomness from: the run's own for every real method; a placebo draws
        independent ones."""
        return seeds

    def cost_share(self) -> float:
        """The share of each step's cost charged to the budget clock: 1 for every real method; a positive control
        pays less for the same training."""
        return 1.0

    def prepare(self, run: RunContext) -> None:
        """Once, before training (and before a checkpoint is restored): change, freeze or replace the model."""

    def batch_shape(self, progress: float, step: int, base: BatchShape) -> BatchShape:
        """Shape of the next batch (called once per step, in order)."""
        return base

    def planned_shape(self, progress: float, step: int, base: BatchShape) -> BatchShape | None:
        """The shape `batch_shape` would give for a later `step` at this `progress`, changing nothing: the data
        prepares those batches ahead. None (the default of a method that owns `batch_shape`): the data prepares
        the current shape again. A guess that a later progress proves wrong only costs that batch's loading."""
        return None

    def eval_shape(self, base: BatchShape) -> BatchShape:
        """Shape (and sampling: the stride) of evaluation clips, for every evaluation setting."""
        return base

    def lr_scale(self, progress: float, shape: BatchShape) -> float:
        """Multiplier of the scheduled learning rate for the next step."""
        return 1.0

    def read_pixels(self, tokens: Tokens, training: bool) -> Tokens:
        """Before any method's selection, on the full token grid, with the clip's pixels at hand (`tokens.pixels`,
        normalised as the data set gives them): return a smaller set (clips may keep different counts: pad them,
        `valid` marking the real tokens) or change the tokens."""
        return tokens

    def select_tokens(self, tokens: Tokens, progress: float, training: bool) -> Tokens:
        """After patch and position embedding, before the first block: return a (physically) smaller set."""
        return tokens

    def block_hook(self, progress: float, training: bool) -> BlockHook | None:
        """A hook around each block's run (vtbench.models.blocks): run it on fewer tokens, merge tokens inside it."""
        return None

    def conflict(self, other: "Method") -> str | None:
        """Why this method cannot share a list with `other` (checked both ways before training), or None."""
        return None

    def training_loss(self, model: torch.nn.Module, batch: Batch, progress: float, select: Select | None,
                      label_smoothing: float) -> torch.Tensor:
        """Replace the loss of a step. Only called on a method that overrides it; `select` is the whole list's
        training selection (this method's included), to apply after `model.embed`."""
        raise NotImplementedError

    def eval_settings(self) -> list[EvalSetting]:
        """Evaluation settings of this method's own, besides the shared protocol's (vtbench.methods.reductions); only
        where no shared setting fits."""
        return []

    def log_columns(self, progress: float) -> dict[str, Any]:
        """Extra per-step columns for steps.parquet (a stage, a ratio)."""
        return {}

    def summary(self) -> dict[str, Any]:
        """Extra figures for summary.json (a stage's cost, say)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def owns(self, hook: str) -> bool:
        return getattr(type(self), hook) is not getattr(Method, hook)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MethodStack:
    """An ordered list of methods seen as one: selections chain, lr scales multiply, owned hooks have one owner."""

    def __init__(self, methods: list[Method]):
        self.methods = list(methods)
        self.owners: dict[str, Method | None] = {}
        for hook in Method.OWNED_HOOKS:
            owners = [m for m in self.methods if m.owns(hook)]
            if len(owners) > 1:
                names = " and ".join(m.name for m in owners)
                raise ConfigError(f"methods {names} both decide {hook}; at most one method of a list may")
            self.owners[hook] = owners[0] if owners else None
        for one in self.methods:
            for other in self.methods:
                reason = one.conflict(other) if one is not other else None
                if reason:
                    raise ConfigError(f"methods {one.name} and {other.name} cannot be combined: {reason}")

    @property
    def leaves_parameters_unused(self) -> bool:
        return any(m.leaves_parameters_unused for m in self.methods)

    def random_seeds(self, seed: int) -> Seeds:
        seeds = Seeds(seed, seed)
        for method in self.methods:
            seeds = method.random_seeds(seeds)
        return seeds

    def cost_share(self) -> float:
        share = 1.0
        for method in self.methods:
            share *= method.cost_share()
        return share

    def prepare(self, run: RunContext) -> None:
        for method in self.methods:
            method.prepare(run)

    def batch_shape(self, progress: float, step: int, base: BatchShape) -> BatchShape:
        owner = self.owners["batch_shape"]
        return owner.batch_shape(progress, step, base) if owner else base

    def planned_shape(self, progress: float, step: int, base: BatchShape) -> BatchShape | None:
        owner = self.owners["batch_shape"]
        return owner.planned_shape(progress, step, base) if owner else base

    def eval_shape(self, base: BatchShape) -> BatchShape:
        owner = self.owners["eval_shape"]
        return owner.eval_shape(base) if owner else base

    def lr_scale(self, progress: float, shape: BatchShape) -> float:
        scale = 1.0
        for method in self.methods:
            scale *= method.lr_scale(progress, shape)
        return scale

    def select_tokens(self, tokens: Tokens, progress: float, training: bool) -> Tokens:
        if any(m.uses_motion for m in self.methods):
            tokens = with_motion(tokens)
        for method in self.methods:
            tokens = method.read_pixels(tokens, training)
        for method in self.methods:
            tokens = method.select_tokens(tokens, progress, training)
        hooks = [h for h in (m.block_hook(progress, training) for m in self.methods) if h is not None]
        return replace(tokens, blocks=BlockPlan(hooks)) if hooks else tokens

    def selector(self, progress: float, training: bool) -> Callable[[Tokens], Tokens] | None:
        if not self.methods:
            return None
        return lambda tokens: self.select_tokens(tokens, progress, training)

    def loss(self, model: torch.nn.Module, batch: Batch, progress: float, label_smoothing: float = 0.0) -> torch.Tensor:
        """The loss of a training step: the owner's `training_loss`, else cross-entropy through the selections.
        The runner and `vtbench estimate` both call this."""
        owner, select = self.owners["training_loss"], self.selector(progress, training=True)
        if owner is not None:
            return owner.training_loss(model, batch, progress, select, label_smoothing)
        video, labels = batch
        logits = model(video, select=select)
        return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)

    def eval_settings(self) -> list[EvalSetting]:
        settings = [s for m in self.methods for s in m.eval_settings()]
        names = [s.name for s in settings]
        duplicated = sorted({n for n in names if names.count(n) > 1} | ({"default"} & set(names)))
        if duplicated:
            raise ConfigError(f"evaluation settings named more than once: {', '.join(duplicated)}")
        return settings

    def log_columns(self, progress: float) -> dict[str, Any]:
        columns: dict[str, Any] = {}
        for method in self.methods:
            columns.update(method.log_columns(progress))
        return columns

    def summary(self) -> dict[str, Any]:
        figures: dict[str, Any] = {}
        for method in self.methods:
            figures.update(method.summary())
        return figures

    def state_dict(self) -> list[dict[str, Any]]:
        return [{"name": m.name, "state": m.state_dict()} for m in self.methods]

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        saved = [s["name"] for s in states]
        if saved != [m.name for m in self.methods]:
            raise ConfigError(f"checkpoint holds methods {saved}, this run has {[m.name for m in self.methods]}")
        for method, state in zip(self.methods, states, strict=True):
            method.load_state_dict(state["state"])
