"""Pretrain a small image ViT on synthetic stills and save it in timm's format, so that fine-tuning studies run
here without downloading anything:

    vtbench pretrain --out checkpoints/image_vit_tiny.safetensors

The model is timm's own `VisionTransformer`, shaped as a vtbench preset's spatial side (width, depth, heads, patch
size, image size), with a class token and class-token pooling as ImageNet ViTs are; its state dict is what a
downloaded timm checkpoint holds, so a run loads it with `init: {file: ..., format: timm}` exactly as it would load
a real one. The task (vtbench.datasets.stills) labels images by their objects' shape and colour, not by anything
the video task asks.
"""

import json
import math
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from vtbench.core.budget import lr_factor
from vtbench.datasets.stills import SyntheticStills
from vtbench.engine import cpu
from vtbench.errors import ConfigError
from vtbench.models import PRESETS


def image_model(preset: str, num_classes: int) -> VisionTransformer:
    """timm's ViT with the preset's width, depth, heads and patch, at the preset's frame size."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown model preset {preset!r}; known: {', '.join(PRESETS)}")
    p = PRESETS[preset]
    return VisionTransformer(img_size=p.size, patch_size=p.tubelet[1], embed_dim=p.dim, depth=p.depth,
                             num_heads=p.heads, mlp_ratio=p.mlp_ratio, num_classes=num_classes, class_token=True,
                             global_pool="token")


def pretrain(out: str | Path, preset: str = "vit_tiny", steps: int = 600, batch_size: int = 64, lr: float = 1e-3,
             seed: int = 0, eval_images: int = 1024) -> dict:
    """Train `steps` steps of AdamW (warm-up then cosine decay), evaluate, write `out` (safetensors) and a JSON
    beside it with what was trained and how well; returns that record."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"--out {out}: write a .safetensors file (timm's format)")
    if steps < 1 or batch_size < 1:
        raise ConfigError(f"steps and batch size must be at least 1, got {steps} and {batch_size}")
    cpu.set_threads()
    torch.manual_seed(seed)
    train, val = SyntheticStills("train", seed), SyntheticStills("val")
    model = image_model(preset, train.num_classes)
    size = PRESETS[preset].size
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    began = time.perf_counter()
    model.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * lr_factor(step / steps, 0.1, "cosine")
        images, labels = train.batch(list(range(step * batch_size, (step + 1) * batch_size)), size)
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"pretraining diverged at step {step} (loss {loss.item()})")
    train_s = time.perf_counter() - began
    model.eval()
    correct = 0
    with torch.no_grad():
        for first in range(0, eval_images, 256):
            images, labels = val.batch(list(range(first, min(first + 256, eval_images))), size)
            correct += int((model(images).argmax(1) == labels).sum())
    record = {"preset": preset, "classes": train.class_names, "steps": steps, "batch_size": batch_size, "lr": lr,
              "seed": seed, "train_s": train_s, "val_top1": 100 * correct / eval_images, "eval_images": eval_images,
              "timm_model": "VisionTransformer(class_token=True, global_pool='token')"}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return record
