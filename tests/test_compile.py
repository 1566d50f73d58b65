"""Compiled steps (`compile: true`: each transformer block compiled on its own), bf16 on the CPU, and attention
through scaled_dot_product_attention. Compiled runs here use torch.compile's `aot_eager` backend: the same
tracing, guards and recompilations as inductor without its C++ code generation, which takes tens of seconds a
shape on this CPU (docs/guide.md gives inductor's figures)."""

import pandas as pd
import pytest
import torch
import torch._dynamo
import torch.nn.functional as F

from vtbench.engine import results
from vtbench.engine.compiled import compile_blocks
from vtbench.engine.config import MethodSpec, RunConfig
from vtbench.engine.runner import execute
from vtbench.errors import ConfigError
from vtbench.models import build_model

TINY = dict(model_args={"dim": 32, "depth": 2, "heads": 2, "tubelet": [2, 4, 4]}, frames=4, size=16, batch_size=4,
            eval_clips=16, eval_subset=16, eval_every=0.5, eval_sweep=["keep=0.5,random"], log_every=1)


@pytest.fixture
def dynamo_config():
    """compile_blocks sets torch._dynamo's recompilation limit for the process: give it back."""
    import torch._dynamo.config as dynamo

    saved = dynamo.recompile_limit, dynamo.fail_on_recompile_limit_hit
    yield
    dynamo.recompile_limit, dynamo.fail_on_recompile_limit_hit = saved
    torch._dynamo.reset()


def _run(tmp_path, name, **values):
    run_dir = execute(RunConfig(**{**TINY, **values}).resolve(), tmp_path / name, progress_bar=False)
    return results.read_json(run_dir / "summary.json"), pd.read_parquet(run_dir / "steps.parquet")


def test_a_compiled_baseline_trains_as_the_eager_one_and_reports_its_compilation(tmp_path, dynamo_config):
    eager, eager_steps = _run(tmp_path, "eager", budget="8steps")
    compiled, compiled_steps = _run(tmp_path, "compiled", budget="8steps", compile=True, compile_backend="aot_eager")
    assert compiled["status"] == "completed"
    assert compiled_steps["loss"].tolist() == pytest.approx(eager_steps["loss"].tolist(), abs=1e-4)
    assert compiled["compile_s"] > 0 and compiled["compiled_frames"] >= 1
    assert compiled["recompiles"] == 0  # one shape, one compilation (shared by both blocks)
    assert compiled["eval_compiled_frames"] >= 1  # evaluation's no_grad blocks, off the clock
    assert "compile_s" not in eager


def test_multigrid_compiles_once_per_shape_and_no_more(tmp_path, dynamo_config):
    summary, steps = _run(tmp_path, "mg", budget="24steps", methods=[MethodSpec("multigrid")], frames=8, size=32,
                          compile=True,
                          compile_backend="aot_eager")
    assert summary["status"] == "completed"
    shapes = steps[["clips", "frames", "size"]].drop_duplicates()
    assert len(shapes) > 1
    assert 1 <= summary["recompiles"] <= len(shapes) - 1


def test_a_block_that_would_compile_past_the_limit_fails_loudly(dynamo_config):
    torch._dynamo.reset()
    model = build_model("vit_tiny", "joint", 4, 4, 16, dim=32, depth=1, heads=2, tubelet=[2, 4, 4])
    assert compile_blocks(model, "aot_eager", limit=2) == 1
    model(torch.randn(1, 3, 4, 16, 16))
    model(torch.randn(2, 3, 4, 16, 16))
    with pytest.raises(Exception, match="(?i)recompile|cache_size|limit"):
        model(torch.randn(3, 3, 4, 16, 16))


def test_an_unknown_compile_backend_is_refused_naming_the_known_ones():
    with pytest.raises(ConfigError, match="compile_backend 'nope' is not a torch.compile backend; known: .*inductor"):
        RunConfig(compile=True, compile_backend="nope").resolve()


def test_bf16_trains_on_the_cpu_with_bf16_activations(tmp_path):
    dtypes = set()
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: dtypes.add(out.dtype) if isinstance(module, torch.nn.Linear) else None)
    try:
        summary, steps = _run(tmp_path, "bf16", budget="6steps", precision="bf16", device="cpu")
    finally:
        hook.remove()
    assert summary["status"] == "completed" and summary["precision"] == "bf16"
    assert steps["loss"].notna().all() and torch.isfinite(torch.tensor(steps["loss"].tolist())).all()
    assert torch.bfloat16 in dtypes


@pytest.mark.parametrize("arch, methods", [("joint", []), ("factorised", []),
                                           ("factorised", ["frozen_spatial"])])
def test_every_attention_goes_through_scaled_dot_product_attention(monkeypatch, arch, methods):
    """timm's blocks (fused attention) and the frozen_spatial adapter's MultiheadAttention both call
    F.scaled_dot_product_attention: one call per attention layer a forward pass crosses."""
    from vtbench.methods import build_methods

    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    model = build_model("vit_tiny", arch, 4, 4, 16, dim=32, depth=2, heads=2, tubelet=[2, 4, 4])
    attention_layers = sum(isinstance(m, torch.nn.MultiheadAttention) or hasattr(m, "fused_attn")
                           for m in model.modules())
    if methods:  # stage 2: the adapter's attention pool is in the path
        from vtbench.core.shape import BatchShape
        from vtbench.methods import RunContext

        config = RunConfig(arch=arch, frames=4, size=16, methods=[MethodSpec(m) for m in methods])
        stack = build_methods(config.methods)
        stack.prepare(RunContext(config, model, BatchShape(1, 4, 16, 2), 4, torch.device("cpu"), None, None))
        stack.methods[0].batch_shape(0.9, 0, BatchShape(1, 4, 16, 2))  # past stage 1: the switch
        attention_layers = sum(isinstance(m, torch.nn.MultiheadAttention) or hasattr(m, "fused_attn")
                               for m in model.modules())
    assert all(m.fused_attn for m in model.modules() if hasattr(m, "fused_attn"))
    with torch.no_grad():
        model(torch.randn(1, 3, 4, 16, 16))
    assert len(calls) == attention_layers
