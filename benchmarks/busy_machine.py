"""Time budgets on a busy machine: how many steps a 15 s baseline makes alone, beside a busy-looping process, and
as one of two runs at once (two `vtbench run`, and a grid's two local workers), with what each run recorded about
its CPU share (threads, the share of their time spent waiting for a core, the load warning).

    python benchmarks/busy_machine.py [--budget 15s] [--repeats 3]

Every configuration runs in fresh processes, one configuration at a time; run it on an otherwise quiet machine.
The last line gives the medians as fractions of the lone run's steps.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

VTBENCH = [sys.executable, "-m", "vtbench.cli"]
QUICK_EVAL = ["--set", "eval_clips=64", "--set", "eval_subset=64", "--set", "eval_every=1.0", "--set", "eval_sweep=[]"]


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _run(budget: str, out: Path, seed: int = 0) -> subprocess.Popen:
    return subprocess.Popen([*VTBENCH, "run", "--budget", budget, "--seed", str(seed), "--out", str(out),
                             "--no-progress", *QUICK_EVAL], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)


def _finish(process: subprocess.Popen) -> dict:
    out, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"a run failed (exit {process.returncode})")
    return _summary(Path(out.strip().splitlines()[-1]))


def _grid(budget: str, out: Path) -> list[dict]:
    out.mkdir(parents=True)
    config = out / "grid.yaml"
    config.write_text(f"study: busy\nbase: {{eval_clips: 64, eval_subset: 64, eval_every: 1.0, eval_sweep: []}}\n"
                      f"methods: [[]]\nbudgets: [{budget}]\nseeds: [0, 1]\n")
    subprocess.run([*VTBENCH, "grid", str(config), "--out", str(out), "--executor", "local", "--workers", "2",
                    "--no-progress"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return [_summary(p.parent) for p in sorted((out / "busy").glob("*/summary.json"))]


def _line(name: str, summaries: list[dict]) -> str:
    parts = [f"{s['steps']} steps ({s['fewest_threads']}-{s['threads']} threads, waited "
             f"{100 * (s['wait_share'] or 0):.0f}%"
             f"{', load warning' if s.get('load_warning') else ''})" for s in summaries]
    return f"  {name:<22} " + "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="15s")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ratios: dict[str, list[float]] = {"busy loop": [], "two runs": [], "grid, 2 workers": []}
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            alone = _finish(_run(args.budget, tmp / "alone"))
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                busy = _finish(_run(args.budget, tmp / "busy"))
            finally:
                spinner.kill()
            first, second = _run(args.budget, tmp / "two", seed=1), _run(args.budget, tmp / "two", seed=2)
            pair = [_finish(first), _finish(second)]
            grid = _grid(args.budget, tmp / "grid")
        print(f"repeat {repeat}:")
        print(_line("alone", [alone]))
        print(_line("beside a busy loop", [busy]))
        print(_line("two runs at once", pair))
        print(_line("grid, 2 local workers", grid))
        ratios["busy loop"].append(busy["steps"] / alone["steps"])
        ratios["two runs"].append(min(s["steps"] for s in pair) / alone["steps"])
        ratios["grid, 2 workers"].append(min(s["steps"] for s in grid) / alone["steps"])
    print("steps against the lone run (median, worst): " + "; ".join(
        f"{name} {statistics.median(r):.2f} ({min(r):.2f})" for name, r in ratios.items()))


if __name__ == "__main__":
    main()
