"""The reproduction table: each paper's headline claim, what a study measured of it at this scale (top-1 against
the method's own baseline at equal budget, intervals over seeds), and the method's cost ratios at the paper's own
model and input, from `vtbench estimate` (vtbench.engine.estimate), beside the figure the paper reports.

A claim "holds" here only when the verdict rule (vtbench.report.analysis.compare) says so; overlapping intervals
say "not resolved", never "holds".
"""

from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd

from vtbench.engine.config import MethodSpec, RunConfig

from .analysis import Interval, compare

# Where costs are sampled over a run: 24 points whose phases within PSS's cycle (0.1 of progress) all differ,
# each at the next step of multigrid's three-step short cycle.
POINTS = [(float((k + 0.5) / 24), k % 3) for k in range(24)]


@dataclass(frozen=True)
class Claim:
    method: str  # the method's name; a study row matches it when its method list is this one method
    paper: str
    claim: str
    reported: str  # the paper's own figure
    scale: str  # the paper-scale model and input that the estimate uses
    model: str = "vit_base"
    arch: str = "joint"
    frames: int = 16
    size: int = 224
    params: tuple[tuple[str, object], ...] = ()
    setting: str = "default"  # the evaluation setting compared: "fewest tokens" for Flux's claim


CLAIMS = (
    Claim("token_dropout", "Turbo training (Han et al., BMVC 2022)",
          "near-baseline accuracy at a fraction of the cost", "close to 4x training speed-up, much less memory",
          "ViT-B, 16 x 224^2, keep 0.5", params=(("keep", 0.5),)),
    Claim("multigrid", "Multigrid (Wu et al., CVPR 2020)", "the same accuracy in less time",
          "4.5x less wall-clock (R50 SlowFast, K400), +0.8 top-1", "ViT-B, 16 x 224^2, long + short cycle"),
    Claim("pss", "PSS (McDanel and Huynh, 2022)", "about 30% less training time at equal accuracy",
          "24.6 h -> 17.0 h (-31%), -0.26 top-1 (SimMIM ViT-B)", "ViT-B, 16 x 224^2, cyclic",
          params=(("schedule", "cyclic"),)),
    Claim("frozen_spatial", "Frozen spatial ViViT-FE (Gowda et al., 2023)",
          "about half the training cost and memory", "about 50% less cost and memory, up to +1.79 top-1",
          "ViViT-FE B, 32 x 224^2, stage 1 counted", arch="factorised", frames=32),
    Claim("flux", "Flux (Wang et al., ICCV 2025)", "equal accuracy at a fraction of the tokens",
          "87.4 top-1 at 49 GFLOPs against 440 (about 90% less)", "ViT-B, 16 x 224^2, 1/4 of the tokens",
          setting="fewest tokens"),
)


def reproduction_table(final: pd.DataFrame, evals: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """One row per claim whose method the study ran alone (with a matched baseline): per budget, the measured
    top-1 intervals, the verdict, and the paper-scale ratios. `table` is the report's summary table."""
    rows = []
    for claim in CLAIMS:
        alone = table["method"].str.split(r"[: ]", regex=True).str[0] == claim.method  # "frozen_spatial (factorised)"
        mine = table[alone & ~table["method"].str.contains(r"\+")]
        for row in mine.itertuples():
            if not isinstance(row.baseline, str):
                continue
            setting = _setting(evals, claim.setting)
            measured = _interval(final if setting == "default" else evals, row.method, row.budget, setting)
            baseline = _interval(final if setting == "default" else evals, row.baseline, row.budget, setting)
            outcome = compare(measured, baseline)
            compute, memory = paper_scale(claim)
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


@cache
def paper_scale(claim: Claim) -> tuple[float, float]:
    """(compute, memory): the baseline's training compute per clip over the method's, averaged over the run's
    progress (clips per FLOP gained), and the baseline's activation memory per step over the method's peak, at
    the paper's model and input. Flux's compute ratio is the forward at a quarter of the tokens (its claim)."""
    from vtbench.engine.estimate import estimate, estimate_run

    config = RunConfig(model=claim.model, arch=claim.arch, frames=claim.frames, size=claim.size)
    base = estimate(config, [])
    if claim.method == "flux":
        quarter = estimate(config, [MethodSpec("token_dropout", {"keep": 0.25})])
        return base.forward_gflops / quarter.forward_gflops, base.activation_mib / quarter.activation_mib
    method = [MethodSpec(claim.method, dict(claim.params))]
    steps = estimate_run(config, method, POINTS)
    compute = float(np.mean([base.train_gflops / s.train_gflops for s in steps]))
    memory = base.activation_mib / max(s.activation_mib * s.clips for s in steps)
    return compute, memory


def markdown(rows: pd.DataFrame) -> str:
    return rows.to_markdown(index=False) if not rows.empty else "No method of the five ran alone with its baseline."
