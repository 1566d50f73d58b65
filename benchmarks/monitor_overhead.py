"""GPU monitor overhead: training step time with the NVML sampling thread on (100 ms) against off, side by
side in one process, alternating rounds. Needs a CUDA GPU with NVML; elsewhere it says so and exits.

    python benchmarks/monitor_overhead.py [--model vit_base] [--batch 8] [--steps 50] [--rounds 6]

`measure_overhead` gives the same figures to a caller (benchmarks/gpu_check.py).
"""

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from vtbench.engine.config import RunConfig
from vtbench.engine.monitor import open_monitor
from vtbench.models import build_model


class MonitorUnavailable(Exception):
    """NVML could not be opened on this device: the overhead cannot be measured."""


def measure_overhead(model_name: str = "vit_base", batch: int = 8, steps: int = 50, rounds: int = 6,
                     interval: float = 0.1) -> dict:
    """Median bf16 training step time with the monitor off and on (seconds), on the first CUDA device."""
    device = torch.device("cuda")
    config = RunConfig(model=model_name).resolve()
    model = build_model(config.model, "joint", 400, config.frames, config.size).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    video = torch.randn(batch, 3, config.frames, config.size, config.size, device=device)
    labels = torch.randint(0, 400, (batch,), device=device)

    def step_time() -> float:
        torch.cuda.synchronize()
        began = time.perf_counter()
        for _ in range(steps):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(video), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        torch.cuda.synchronize()
        return (time.perf_counter() - began) / steps

    step_time()  # warm-up
    off, on = [], []
    for _ in range(rounds):
        off.append(step_time())
        monitor, reason = open_monitor(device, interval)
        if monitor is None:
            raise MonitorUnavailable(reason)
        on.append(step_time())
        samples = monitor.total()["samples"]
        monitor.stop()
    t_off, t_on = statistics.median(off), statistics.median(on)
    return {"device": torch.cuda.get_device_name(device), "model": config.model, "batch": batch,
            "frames": config.frames, "size": config.size, "steps": steps, "rounds": rounds,
            "off_s": t_off, "on_s": t_on, "overhead": t_on / t_off - 1, "samples_last_round": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_base")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--interval", type=float, default=0.1)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("monitor overhead: not measured (no CUDA device: the monitor samples NVML on GPUs only)")
        sys.exit(0)
    try:
        f = measure_overhead(args.model, args.batch, args.steps, args.rounds, args.interval)
    except MonitorUnavailable as err:
        print(f"monitor overhead: not measured ({err})")
        sys.exit(0)
    print(f"{f['device']}, {f['model']}, batch {f['batch']}: monitor off {f['off_s'] * 1000:.1f} ms/step, "
          f"on {f['on_s'] * 1000:.1f} ms/step ({f['samples_last_round']} samples in the last round)")
    print(f"monitor overhead: {100 * f['overhead']:.1f}%")


if __name__ == "__main__":
    main()
