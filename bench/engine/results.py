"""The files a run writes (docs/design.md, "What a run writes"), each written atomically: temporary file, then
rename."""

import io
import os
import pickle
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pynvml
import timm
import torch

from vtbench import __version__

# the atomic writers live in the bottom layer (the data sets' caches write through them too); a run's files are
# written and read through them, as `results.write_json` and the like
from vtbench.core.files import read_json, write_bytes, write_json, write_text  # noqa: F401
from vtbench.errors import VtbenchError

CONFIG, ENV, STEPS, EVALS, SUMMARY, CHECKPOINT = (
    "config.yaml", "env.json", "steps.parquet", "evals.parquet", "summary.json", "checkpoint.pt"
)
PROGRESS = "progress.json"  # where a run stands while it trains, for `vtbench status`
STEPS_JOURNAL = "steps.jsonl"  # steps.parquet's rows while the run trains, appended at each checkpoint


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.BytesIO()
    pd.DataFrame(rows).to_parquet(buffer, index=False)
    write_bytes(path, buffer.getvalue())


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` as tensors and plain Python values only, so that it loads with `weights_only=True`."""
    buffer = io.BytesIO()
    torch.save(plain(state), buffer)
    write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint without running anything it holds (`weights_only=True`): one that needs more than
    tensors and plain values (a crafted pickle), or that cannot be read, is refused with one line."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        wanted = re.search(r"(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)", str(e))
        reason = f"it asks for {wanted.group(1)}" if wanted else _first_sentence(e)
        raise VtbenchError(f"{path}: refused, a checkpoint may hold only tensors and plain values and {reason}; "
                           "nothing in it was run. Delete it to train the run afresh.") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise VtbenchError(f"{path}: unreadable checkpoint ({_first_sentence(e)}). "
                           "Delete it to train the run afresh.") from None
    if not isinstance(state, dict):
        raise VtbenchError(f"{path}: not a vtbench checkpoint (a {type(state).__name__}, not a dict). "
                           "Delete it to train the run afresh.")
    return state


def _first_sentence(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text.split(". ")[0] if text else type(error).__name__


def plain(value: Any) -> Any:
    """`value` with NumPy scalars made Python numbers and NumPy arrays made tensors, through dicts, lists and
    tuples: what `torch.load(weights_only=True)` accepts."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.astype(np.int64) if value.dtype == np.uint32 else value.copy())
    if isinstance(value, np.generic):
        return value.item()
    return value


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and hardware of this run: what a reader needs to reproduce or compare its numbers."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "vtbench": __version__,
        "git_commit": _git_commit(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device_name=props.name, device_memory_bytes=props.total_memory, cuda=torch.version.cuda)
        env["driver"] = _nvidia_driver()
    else:
        env["device_name"] = env["cpu"]
    return env


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _nvidia_driver() -> str | None:
    try:
        pynvml.nvmlInit()
        try:
            return pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - NVML absent or unusable: the driver stays unknown
        return None
