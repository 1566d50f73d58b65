"""`vtbench estimate`, `vtbench methods` and `vtbench pretrain`: a model and its methods, outside any study."""

import argparse

from vtbench.engine.config import RunConfig, apply, parse_method, parse_set
from vtbench.engine.estimate import estimate, table
from vtbench.engine.pretrain import pretrain
from vtbench.errors import VtbenchError
from vtbench.methods import REGISTRY
from vtbench.methods.params import card, catalogue


def cmd_estimate(args: argparse.Namespace) -> int:
    values = {"model": args.model, "arch": args.arch, "frames": args.frames, "size": args.size}
    config = apply(apply(RunConfig(), {k: v for k, v in values.items() if v is not None}), parse_set(args.set),
                   where="--set")
    if not 0 <= args.progress <= 1:
        raise VtbenchError(f"--progress {args.progress} is outside [0, 1]")
    if args.classes < 1:
        raise VtbenchError(f"--classes must be at least 1, got {args.classes}")
    settings = [[]] + [[parse_method(m) for m in flag.split("+")] for flag in args.method]
    print(table([estimate(config, methods, args.progress, args.classes) for methods in settings]))
    content = sorted({m.name for methods in settings for m in methods
                      if REGISTRY.get(m.name) and REGISTRY[m.name].claim and not REGISTRY[m.name].claim.estimable})
    if content:
        print(f"{', '.join(content)}: the tokens kept depend on the clips' content, which meta tensors lack; shown "
              "with every token, the upper bound (a run's `keep` column gives the measured share)")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    if args.name is None:
        print(catalogue(dict(sorted(REGISTRY.items()))))
        return 0
    if args.name not in REGISTRY:
        raise VtbenchError(f"unknown method {args.name!r}; known: {', '.join(sorted(REGISTRY))}")
    print(card(args.name, REGISTRY[args.name]))
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    record = pretrain(args.out, args.model, args.steps, args.batch_size, args.lr, args.seed)
    print(f"{args.out}: {record['preset']} image model, {record['steps']} steps in {record['train_s']:.0f}s, "
          f"top-1 {record['val_top1']:.1f}% on {record['eval_images']} held-out stills ({len(record['classes'])} "
          f"classes)")
    return 0
