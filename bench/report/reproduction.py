"""The reproduction table: each paper's headline claim, what a study measured of it at this scale (top-1 against
the method's own baseline at equal budget, intervals over seeds), and the method's cost ratios at the paper's own
model and input, from `vtbench estimate` (vtbench.engine.estimate), beside the figure the paper reports.

A claim "holds" here only when the paired top-1 difference at equal budget (method seed s minus baseline seed s,
vtbench.report.paired) is resolved above zero after Holm's correction over the table's claims; "no" where it is
resolved below, "not resolved" otherwise, never "holds".
"""

from functools import cache

import numpy as np
import pandas as pd

from vtbench.engine.config import MethodSpec, RunConfig, parse_method
from vtbench.engine.estimate import estimate, estimate_run
from vtbench.methods import REGISTRY
from vtbench.methods.card import Claim

from . import paired
from .analysis import Interval

# Where costs are sampled over a run: 24 points whose phases within PSS's cycle (0.1 of progress) all differ,
# each at the next step of multigrid's three-step short cycle.
POINTS = [(float((k + 0.5) / 24), k % 3) for k in range(24)]


def reproduction_table(final: pd.DataFrame, evals: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """One row per claim whose method the study ran alone (with a matched baseline): per budget, the measured
    top-1 intervals, the paired difference with its Holm-adjusted p-value and verdict, and the paper-scale ratios.
    `table` is the report's summary table."""
    rows = []
    for name, claim in claims().items():
        alone = table["method"].str.split(r"[: ]", regex=True).str[0] == name  # "frozen_spatial (factorised)"
        mine = table[alone & ~table["method"].str.contains(r"\+")]
        for row in mine.itertuples():
            if not isinstance(row.baseline, str):
                continue
            setting = _setting(evals, claim.setting)
            chosen = final if setting == "default" else evals
            measured, baseline = _final(chosen, row.method, row.budget, setting), \
                _final(chosen, row.baseline, row.budget, setting)
            seeds = sorted(set(measured.index) & set(baseline.index))
            difference = paired.paired_difference(measured.loc[seeds], baseline.loc[seeds])
            params = tuple(sorted(parse_method(row.method.split(" ")[0]).params.items())) or claim.params
            compute, memory = paper_scale(name, claim, params)  # of the setting measured here, at paper scale
            rows.append({
                "paper": claim.paper, "claim": claim.claim, "method": row.method, "budget": row.budget,
                "seeds": len(seeds), "evaluation": setting, "top1": str(Interval.of(measured)),
                "baseline": f"{row.baseline} {Interval.of(baseline)}", "difference": difference,
                "paper scale": claim.scale, "compute ratio": round(compute, 2), "memory ratio": round(memory, 2),
                "paper reports": claim.reported,
            })
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    adjusted = paired.holm([d.p for d in out["difference"]])
    out.insert(out.columns.get_loc("difference") + 1, "p (Holm)", [round(p, 4) for p in adjusted])
    out.insert(out.columns.get_loc("p (Holm)") + 1, "holds here",
               [_holds(d, p) for d, p in zip(out["difference"], adjusted, strict=True)])
    out["difference"] = [_difference(d) for d in out["difference"]]
    return out


def _holds(difference: paired.Effect, p_adjusted: float) -> str:
    if not paired.resolved(p_adjusted):
        return "not resolved"
    return "yes" if difference.estimate > 0 else "no"


def _difference(e: paired.Effect) -> str:
    if e.n < 2:
        return f"{e.estimate:+.1f} (one seed)" if e.n else "no seed in common"
    return f"{e.estimate:+.1f} [{e.low:+.1f}, {e.high:+.1f}]"


def _setting(evals: pd.DataFrame, wanted: str) -> str:
    """The evaluation setting a claim compares: the default, or the sweep's setting with the fewest tokens."""
    if wanted == "default":
        return "default"
    sweep = evals[evals["setting"].str.startswith("tokens=")]
    if sweep.empty:
        return "default"
    return sweep.sort_values("tokens")["setting"].iloc[0]


def _final(rows: pd.DataFrame, method: str, budget: str, setting: str) -> pd.Series:
    """Final top-1 of one setting by seed."""
    chosen = rows[(rows["method"] == method) & (rows["budget"] == budget) & (rows["setting"] == setting)]
    if "point" in chosen and not chosen.empty:
        chosen = chosen[chosen["point"] == chosen["point"].max()]
    return chosen.set_index("seed")["top1"]


def claims() -> dict[str, Claim]:
    """The registered methods' cards that carry a claim, by method name."""
    return {name: cls.claim for name, cls in REGISTRY.items() if cls.claim is not None}


@cache
def paper_scale(name: str, claim: Claim, params: tuple = ()) -> tuple[float, float]:
    """(compute, memory): the baseline's compute per clip (training, or the forward pass where the claim is about
    inference) over the method's with `params` (default: the claim's), averaged over the run's progress (clips per
    FLOP gained), and the baseline's activation memory per step over the method's peak, at the paper's model and
    input."""
    if not claim.estimable:  # its cost depends on the content: the study's own `keep` column gives it
        return float("nan"), float("nan")
    config = RunConfig(model=claim.model, arch=claim.arch, frames=claim.frames, size=claim.size)
    base = estimate(config, [])
    estimated = claim.estimated or ((name, params or claim.params),)
    steps = estimate_run(config, [MethodSpec(m, dict(p)) for m, p in estimated], POINTS)
    cost = f"{claim.cost}_gflops"
    compute = float(np.mean([getattr(base, cost) / getattr(s, cost) for s in steps]))
    memory = base.activation_mib / max(s.activation_mib * s.clips for s in steps)
    return compute, memory


def markdown(rows: pd.DataFrame) -> str:
    if rows.empty:
        return "No method with a paper claim (methods/card.py) ran alone with its baseline."
    return rows.to_markdown(index=False)
