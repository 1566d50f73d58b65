import json

import pandas as pd
import pytest
import torch
from conftest import tiny

from vtbench import methods
from vtbench.engine import mfu
from vtbench.engine.config import MethodSpec
from vtbench.engine.measure import reset_peak_rss
from vtbench.engine.runner import execute
from vtbench.methods import EvalSetting, Method

# These compare resident-memory peaks of parts of a run, which needs the peak reset between them
# (/proc/self/clear_refs); where it cannot be, the run says so in not_measured and these cannot check anything.
needs_rss_reset = pytest.mark.skipif(not reset_peak_rss(), reason="/proc/self/clear_refs is not writable here: the "
                                     "resident-memory peak cannot be reset between parts of a run")


class RunOutOfMemory(Method):
    name = "oom_at_3"

    def batch_shape(self, progress, step, base):
        self.step = step
        return base._replace(clips=base.clips + step)

    def training_loss(self, model, batch, progress, select, label_smoothing):
        video, labels = batch
        if self.step == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return torch.nn.functional.cross_entropy(model(video), labels)


def test_out_of_memory_is_an_outcome_not_a_crash(monkeypatch, tmp_path):
    monkeypatch.setitem(methods.REGISTRY, "oom_at_3", RunOutOfMemory)
    config = tiny(methods=[MethodSpec("oom_at_3")])
    run_dir = execute(config, tmp_path, progress_bar=False)  # returns: a grid would go on
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "oom" and "Tried to allocate 20.00 GiB" in summary["error"]
    assert summary["steps"] == 3 and summary["mem_rss"] > 0
    assert summary["oom_shape"]["clips"] == 4 + 3 and summary["oom_shape"]["frames"] == 4
    assert execute(config, tmp_path, progress_bar=False) == run_dir  # an outcome: not run again


def test_a_cpu_run_reports_what_it_measured_and_what_it_could_not(tmp_path):
    run_dir = execute(tiny(), tmp_path, progress_bar=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["mem_rss"] > 2**20 and summary["cpu_s"] > 0 and summary["total_flops"] > 0
    assert summary["peak_source"].startswith("measured") and 0 < summary["mfu"] < 1
    assert summary["mem_allocated"] is None and summary["mem_device"] is None  # empty, not zero
    env = json.loads((run_dir / "env.json").read_text())
    assert "no GPU" in env["not_measured"]["mem_device"]


def test_gpu_peaks_by_name_and_precision():
    assert mfu.gpu_peak("NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(989.4e12)
    assert mfu.gpu_peak("NVIDIA H100 PCIe", "fp32") == pytest.approx(51.2e12)
    assert mfu.gpu_peak("NVIDIA A100-SXM4-40GB", "bf16") == pytest.approx(312e12)
    assert mfu.gpu_peak("Some Future GPU", "bf16") is None


# device names as nvidia-smi, NVML and torch.cuda.get_device_name give them -> (the table's row, bf16 and fp32 dense
# TFLOP/s of the card's own datasheet), or None where the table has no row for that card (never a neighbour's)
DEVICE_NAMES = {
    "NVIDIA L4": ("L4", 121.0, 30.3),
    "NVIDIA L40S": ("L40S", 362.0, 91.6),
    "NVIDIA L40": ("L40", 181.0, 90.5),  # not the L4's
    "NVIDIA H100 80GB HBM3": ("H100", 989.4, 66.9),
    "NVIDIA H100 PCIe": ("H100 PCIE", 756.0, 51.2),
    "NVIDIA H100 NVL": ("H100 NVL", 835.5, 60.0),  # not the SXM part's
    "NVIDIA H200": ("H200", 989.4, 66.9),
    "NVIDIA H200 NVL": ("H200 NVL", 835.5, 60.0),
    "NVIDIA GH200 480GB": ("GH200", 989.4, 66.9),  # its own row, not the H200's by substring
    "NVIDIA A100-SXM4-80GB": ("A100", 312.0, 19.5),
    "NVIDIA A100-SXM4-40GB": ("A100", 312.0, 19.5),
    "NVIDIA A100-PCIE-40GB": ("A100 PCIE", 312.0, 19.5),
    "NVIDIA A100 80GB PCIe": ("A100 PCIE", 312.0, 19.5),
    "NVIDIA A10": ("A10", 125.0, 31.2),
    "Tesla V100-SXM2-16GB": ("V100", 125.0, 15.7),
    "Tesla V100-SXM2-32GB": ("V100", 125.0, 15.7),
    "Tesla V100-PCIE-32GB": ("V100 PCIE", 112.0, 14.0),
    "Tesla T4": ("T4", 65.0, 8.1),
    "NVIDIA GeForce RTX 4090": ("RTX 4090", 165.2, 82.6),
    "NVIDIA A10G": None,  # not an A10
    "Tesla V100S-PCIE-32GB": None,  # not a V100
    "NVIDIA GeForce RTX 4090 D": None,  # not a 4090
    "NVIDIA RTX A6000": None,
    "NVIDIA RTX 6000 Ada Generation": None,
    "NVIDIA A800-SXM4-80GB": None,
    "NVIDIA H800": None,
    "NVIDIA B200": None,
    "NVIDIA A100-SXM4-40GB MIG 3g.20gb": None,  # a slice of the card: not the card's peak
}


@pytest.mark.parametrize("name", DEVICE_NAMES)
def test_each_gpu_name_gets_its_own_peak_or_none(name):
    expected = DEVICE_NAMES[name]
    got = tuple(mfu.gpu_peak(name, p) for p in ("bf16", "fp32"))
    if expected is None:
        assert got == (None, None)
    else:
        row, bf16, fp32 = expected
        assert getattr(mfu, "gpu_model", lambda name: None)(name) == row and row in mfu.GPU_PEAKS_TFLOPS
        assert got == pytest.approx((bf16 * 1e12, fp32 * 1e12))


def test_an_unknown_gpu_has_no_peak_and_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "NVIDIA L40")
    peak, source = mfu.device_peak(torch.device("cuda", 0), "bf16")
    assert peak == pytest.approx(181e12) and source.startswith("table: NVIDIA L40")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "NVIDIA RTX A6000")
    assert mfu.device_peak(torch.device("cuda", 0), "bf16") == (
        None, "unknown GPU 'NVIDIA RTX A6000' (model 'RTX A6000'): no peak in the table, no MFU")


def test_the_cpu_peak_is_measured_once_and_cached(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(mfu, "CACHE", tmp_path / "cpu_peak.json")
    monkeypatch.setattr(mfu, "measure_cpu_peak", lambda: calls.append(1) or 1.5e11)
    assert mfu.cpu_peak() == 1.5e11 and mfu.cpu_peak() == 1.5e11
    assert calls == [1] and json.loads((tmp_path / "cpu_peak.json").read_text())


class HeavyEvaluation(Method):
    """An evaluation setting that touches 400 MB, far beyond what training this tiny model holds."""

    name = "heavy_eval"

    def eval_settings(self):
        def heavy(tokens):
            block = torch.ones(100_000_000)  # 400 MB, touched
            del block
            return tokens

        return [EvalSetting("heavy", select=heavy)]


@needs_rss_reset
def test_memory_columns_describe_training_and_evaluation_peaks_have_their_own(monkeypatch, tmp_path):
    monkeypatch.setitem(methods.REGISTRY, "heavy_eval", HeavyEvaluation)
    config = tiny(methods=[MethodSpec("heavy_eval")], eval_sweep=[], eval_sweep_at="every", eval_every=0.5)
    run_dir = execute(config, tmp_path, progress_bar=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "mem_rss" not in summary["not_measured"], "Linux lets the peak be reset through /proc/self/clear_refs"
    assert summary["eval_mem_rss"] - summary["mem_rss"] > 300 * 2**20  # the evaluation's 400 MB stay out
    steps = pd.read_parquet(run_dir / "steps.parquet")
    evals = pd.read_parquet(run_dir / "evals.parquet")
    assert steps["mem_rss"].max() < summary["eval_mem_rss"] - 300 * 2**20  # also after the first evaluation
    assert (evals["eval_mem_rss"] > evals["window_mem_rss"] + 300 * 2**20).all()
    assert summary["eval_mem_allocated"] is None and summary["mem_allocated"] is None  # no CUDA: empty, not zero


class OutOfMemoryInEvaluation(Method):
    """An evaluation setting that takes 400 MB and then runs out of memory."""

    name = "eval_oom"

    def eval_settings(self):
        def fails(tokens):
            block = torch.ones(100_000_000)
            del block
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

        return [EvalSetting("fails", select=fails)]


@needs_rss_reset
def test_an_evaluation_out_of_memory_is_reported_as_evaluation(monkeypatch, tmp_path):
    monkeypatch.setitem(methods.REGISTRY, "eval_oom", OutOfMemoryInEvaluation)
    config = tiny(methods=[MethodSpec("eval_oom")], eval_sweep=[], eval_batch_size=8)
    summary = json.loads((execute(config, tmp_path, progress_bar=False) / "summary.json").read_text())
    assert summary["status"] == "oom" and summary["oom_during"] == "evaluation"
    assert summary["oom_shape"]["clips"] == 8 and summary["steps"] == 10  # the evaluation batch, after training
    assert summary["eval_mem_rss"] - summary["mem_rss"] > 300 * 2**20  # its peak is the evaluation's


@needs_rss_reset
def test_validation_clips_are_not_resident_during_training(tmp_path):
    # 512 clips of 16 x 32^2 are 100 MB of floats; kept in memory they would sit in every later training window
    config = tiny(frames=16, size=32, eval_clips=512, eval_batch_size=64, eval_every=0.5, budget="20steps",
                  eval_sweep=[], model_args={"dim": 32, "depth": 1, "heads": 2, "tubelet": [4, 8, 8]})
    run_dir = execute(config, tmp_path, progress_bar=False)
    steps = pd.read_parquet(run_dir / "steps.parquet")
    evals = pd.read_parquet(run_dir / "evals.parquet")
    before, after = steps[steps["step"] <= 10]["mem_rss"].max(), steps[steps["step"] > 10]["mem_rss"].max()
    assert after - before < 40 * 2**20, f"training after an evaluation holds {(after - before) / 2**20:.0f} MB more"
    assert evals["eval_mem_rss"].min() - after > 60 * 2**20  # the clips are there during evaluation


def test_the_figures_of_several_ranks_sum_energy_and_take_the_largest_memory_peak():
    from vtbench.engine.measure import combine_ranks

    rank0 = {"energy_j": 10.0, "eval_energy_j": 1.0, "power_w": 300.0, "cpu_s": 4.0, "mem_allocated": 5,
             "eval_mem_allocated": 2, "warmup_mem_rss": 7, "mem_device": None, "util": 0.9, "not_measured": {}}
    rank1 = {**rank0, "energy_j": 12.0, "power_w": 310.0, "cpu_s": 5.0, "mem_allocated": 6, "eval_mem_allocated": 1,
             "warmup_mem_rss": 9, "eval_energy_j": None, "util": 0.5}
    figures = combine_ranks([rank0, rank1])
    assert (figures["energy_j"], figures["power_w"], figures["cpu_s"]) == (22.0, 610.0, 9.0)
    assert figures["eval_energy_j"] is None  # a rank that could not measure it leaves the sum unmeasured
    assert (figures["mem_allocated"], figures["eval_mem_allocated"], figures["warmup_mem_rss"]) == (6, 2, 9)
    assert figures["mem_device"] is None and figures["util"] == 0.9  # unmeasured stays so; the rest is rank 0's
    assert figures["measured_on"].startswith("all 2 ranks")
