"""GPU monitor overhead: training step time with the NVML sampling thread on (100 ms) against off, side by
side in one process, alternating rounds. Needs a CUDA GPU with NVML; elsewhere it says so and exits.

    python benchmarks/monitor_overhead.py [--model vit_base] [--batch 8] [--steps 50] [--rounds 6]
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
    device = torch.device("cuda")
    config = RunConfig(model=args.model).resolve()
    model = build_model(config.model, "joint", 400, config.frames, config.size).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    video = torch.randn(args.batch, 3, config.frames, config.size, config.size, device=device)
    labels = torch.randint(0, 400, (args.batch,), device=device)

    def steps() -> float:
        torch.cuda.synchronize()
        began = time.perf_counter()
        for _ in range(args.steps):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(video), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        torch.cuda.synchronize()
        return (time.perf_counter() - began) / args.steps

    steps()  # warm-up
    off, on = [], []
    for _ in range(args.rounds):
        off.append(steps())
        monitor, reason = open_monitor(device, args.interval)
        if monitor is None:
            print(f"monitor overhead: not measured ({reason})")
            sys.exit(0)
        on.append(steps())
        samples = monitor.total()["samples"]
        monitor.stop()
    t_off, t_on = statistics.median(off), statistics.median(on)
    print(f"{torch.cuda.get_device_name(device)}, {config.model}, batch {args.batch}: monitor off {t_off * 1000:.1f} "
          f"ms/step, on {t_on * 1000:.1f} ms/step ({samples} samples in the last round)")
    print(f"monitor overhead: {100 * (t_on / t_off - 1):.1f}%")


if __name__ == "__main__":
    main()
