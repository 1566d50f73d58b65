"""A method's card: its paper's headline claim, the figure the paper reports, and the paper-scale setting at which
`vtbench report` estimates its cost ratios (the reproduction table, vtbench.report.reproduction)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Claim:
    paper: str
    claim: str
    reported: str  # the paper's own figure
    scale: str  # the paper-scale model and input, in words
    model: str = "vit_base"
    arch: str = "joint"
    frames: int = 16
    size: int = 224
    # the method list estimated at paper scale (default: the method alone, with `params`)
    params: tuple[tuple[str, object], ...] = ()
    estimated: tuple[tuple[str, tuple[tuple[str, object], ...]], ...] = ()
    cost: str = "train"  # train | forward: which pass the compute ratio compares
    setting: str = "default"  # evaluation setting compared here: default, or "fewest tokens" of the sweep
    # False where the cost depends on the clips' content (estimated on meta tensors, which have none)
    estimable: bool = True
