"""The reproduction table: each paper's headline claim, what a study measured of it at this scale (top-1 against
the method's own baseline at equal budget, intervals over seeds), and the method's cost ratios at the paper's own
model and input, from `vtbench estimate` (vtbench.engine.estimate), beside the figure the paper reports.

A claim "holds" here only when the verdict rule (vtbench.report.analysis.compare) says so; overlapping intervals
say "not resolved", never "holds".
"""

from functools import cache

import numpy as np
import pandas as pd

from vtbench.engine.config import MethodSpec, RunConfig
from vtbench.methods import REGISTRY
from vtbench.methods.card import Claim

from .analysis import Interval, compare

# Where costs are sampled over a run: 24 points whose phases within PSS's cycle (0.1 of progress) all differ,
# each at the next step of multigrid's three-step short cycle.
POINTS = [(float((k + 0.5) / 24), k % 3) for k in range(24)]


def reproduction_table(final: pd.DataFrame, evals: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """One row per claim whose method the study ran alone (with a matched baseline): per budget, the measured
    top-1 intervals, the verdict, and the paper-scale ratios. `table` is the report's summary table."""
    rows = []
    for name, claim in claims().items():
        alone = table["method"].str.split(r"[: ]", regex=True).str[0] == name  # "frozen_spatial (factorised)"
        mine = table[alone & ~table["method"].str.contains(r"\+")]
        for row in mine.itertuples():
            if not isinstance(row.baseline, str):
                continue
            setting = _setting(evals, claim.setting)
            measured = _interval(final if setting == "default" else evals, row.method, row.budget, setting)
            baseline = _interval(final if setting == "default" else evals, row.baseline, row.budget, setting)
            outcome = compare(measured, baseline)
            compute, memory = paper_scale(name, claim)
            rows.append({
                "paper": claim.paper, "claim": claim.claim, "method": row.method, "budget": row.budget,
                "seeds": measured.n, "evaluation": setting, "top1": str(measured),
                "baseline": f"{row.baseline} {baseline}",
                "holds here": {"above": "yes", "below": "no", "not resolved": "not resolved"}[outcome],
                "paper scale": claim.scale, "compute ratio": round(compute, 2), "memory ratio": round(memory, 2),
                "paper reports": claim.reported,
            })
    return pd.DataFrame(rows)


def _setting(evals: pd.DataFrame, wanted: str) -> str:
    """The evaluation setting a claim compares: the default, or the sweep's setting with the fewest tokens."""
    if wanted == "default":
        return "default"
    sweep = evals[evals["setting"].str.startswith("tokens=")]
    if sweep.empty:
        return "default"
    return sweep.sort_values("tokens")["setting"].iloc[0]


def _interval(rows: pd.DataFrame, method: str, budget: str, setting: str) -> Interval:
    chosen = rows[(rows["method"] == method) & (rows["budget"] == budget) & (rows["setting"] == setting)]
    if "point" in chosen:
        chosen = chosen[chosen["point"] == chosen["point"].max()] if not chosen.empty else chosen
    return Interval.of(chosen["top1"])


def claims() -> dict[str, Claim]:
    """The registered methods' cards that carry a claim, by method name."""
    return {name: cls.claim for name, cls in REGISTRY.items() if cls.claim is not None}


@cache
def paper_scale(name: str, claim: Claim) -> tuple[float, float]:
    """(compute, memory): the baseline's compute per clip (training, or the forward pass where the claim is about
    inference) over the method's, averaged over the run's progress (clips per FLOP gained), and the baseline's
    activation memory per step over the method's peak, at the paper's model and input."""
    from vtbench.engine.estimate import estimate, estimate_run

    if not claim.estimable:  # its cost depends on the content: the study's own `keep` column gives it
        return float("nan"), float("nan")
    config = RunConfig(model=claim.model, arch=claim.arch, frames=claim.frames, size=claim.size)
    base = estimate(config, [])
    estimated = claim.estimated or ((name, claim.params),)
    steps = estimate_run(config, [MethodSpec(m, dict(p)) for m, p in estimated], POINTS)
    cost = f"{claim.cost}_gflops"
    compute = float(np.mean([getattr(base, cost) / getattr(s, cost) for s in steps]))
    memory = base.activation_mib / max(s.activation_mib * s.clips for s in steps)
    return compute, memory


def markdown(rows: pd.DataFrame) -> str:
    if rows.empty:
        return "No method with a paper claim (methods/card.py) ran alone with its baseline."
    return rows.to_markdown(index=False)
