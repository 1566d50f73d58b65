"""Which runs a comparison may set side by side (docs/design.md, "Comparisons": a comparison is made against the
baseline that differs only in its method list).

Every run has a `settings` key: a hash of its resolved configuration without the method list, the seed and the
budget. Runs of one method list and one key form a row of the report, one per budget; its baseline is the row of
the empty method list with the same key, the same budget and the same set of seeds. A row with no such baseline
has none: it is never compared with another.

Labels: the method list as written (`baseline`, `token_dropout:keep=0.5`), with the architecture when it is not the
joint one (`baseline (factorised)`), the start where a study has several (`baseline (init=scratch)`) and, where one
study holds a method list under several settings, the settings in which each differs from the study's most common
ones (`baseline (lr=0.01)`).
"""

import hashlib
import json
from collections import Counter
from typing import Any

import pandas as pd

from vtbench.engine.config import OBSERVERS, RunConfig
from vtbench.engine.init import init_label

NOT_SETTINGS = ("methods", "seed", "budget", *OBSERVERS)


def settings_of(config: RunConfig) -> dict[str, Any]:
    """The flattened configuration without the method list, the seed and the budget (`model_args.depth`)."""
    flat = {}
    for key, value in config.to_dict().items():
        if key in NOT_SETTINGS:
            continue
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def settings_key(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def labels(configs: list[RunConfig]) -> list[str]:
    """A label per run that tells its row apart from every other of the study."""
    settings = [settings_of(c) for c in configs]
    keys = [settings_key(s) for s in settings]
    common_key = Counter(keys).most_common(1)[0][0] if keys else None
    common = settings[keys.index(common_key)] if keys else {}
    lists: dict[str, set[str]] = {}
    for config, key in zip(configs, keys, strict=True):
        lists.setdefault(config.label(), set()).add(key)
    starts = len({init_label(c.init) for c in configs}) > 1  # then every label names its start
    out = []
    for config, mine in zip(configs, settings, strict=True):
        label = config.label()
        if len(lists[label]) > 1:
            differs = [f"{k}={_short(mine.get(k))}" for k in sorted(set(mine) | set(common))
                       if k != "arch" and not k.startswith("init.") and mine.get(k) != common.get(k)]
            if starts:  # the start in one word: init=timm:image_vit.safetensors
                differs.insert(0, f"init={init_label(config.init)}")
            if differs:
                label = f"{label} ({', '.join(differs)})"
        out.append(label)
    return out


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def match_baselines(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, budget) of a runs table (columns method, budget, seed, settings, is_baseline): its
    number of runs (whatever their status: a diverged seed is part of the comparison) and its baseline's label,
    or none with the reason."""
    seeds = runs.groupby(["method", "budget"], sort=False).agg(
        settings=("settings", "first"), is_baseline=("is_baseline", "first"), seeds=("seed", lambda s: sorted(set(s))))
    baselines = seeds[seeds["is_baseline"]]
    rows = []
    for (method, budget), row in seeds.iterrows():
        found = baselines[(baselines["settings"] == row["settings"])
                          & (baselines.index.get_level_values("budget") == budget)]
        baseline, note = None, "matched"
        if row["is_baseline"]:
            baseline, note = method, "is the baseline"
        elif found.empty:
            note = "no baseline run with the same settings and budget"
        elif found.iloc[0]["seeds"] != row["seeds"]:
            note = f"the baseline's seeds {found.iloc[0]['seeds']} differ from {row['seeds']}"
        else:
            baseline = found.index[0][0]
        rows.append({"method": method, "budget": budget, "runs": len(row["seeds"]), "baseline": baseline,
                     "comparison": note})
    return pd.DataFrame(rows)
