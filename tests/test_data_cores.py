"""`vtbench data check`: decode speed per core of the originals, of a re-encoded copy (--compare) and of the decoded
cache, and with --model --gpu the cores it takes to feed that model's training on that GPU."""

import re

import pytest
from videos import folder_layout, hmdb51_layout

from vtbench.cli import main
from vtbench.datasets import check as checking
from vtbench.datasets.cache import build_cache
from vtbench.datasets.reencode import reencode
from vtbench.engine.config import RunConfig
from vtbench.engine.estimate import estimate
from vtbench.engine.feeding import feeding

H100 = "NVIDIA H100 80GB HBM3"
PER_CLIP_S = 0.05  # what the fake clock says each clip took: 20 clips/s per core


@pytest.fixture
def fixed_speed(monkeypatch):
    """Every timed clip takes PER_CLIP_S of wall and CPU time."""
    ticks = iter(range(10**6))
    monkeypatch.setattr(checking, "_clock", lambda: (next(ticks) * PER_CLIP_S,) * 2)


def _expected_cores(model: str, frames: int, size: int, stride: int, classes: int, mfu: float = 0.35) -> float:
    train_flops = estimate(RunConfig(model=model, frames=frames, size=size, stride=stride, eval_sweep=[]), [], 0.5,
                           classes).train_gflops * 1e9
    return 989.4e12 * mfu / train_flops / (1 / PER_CLIP_S)  # the H100's dense bf16 peak from mfu.py's table


def test_cores_to_feed_a_model_from_the_cli(tmp_path, capsys, fixed_speed):
    root = folder_layout(tmp_path / "f", {"train": 1, "val": 1})
    reencode("folder", root, tmp_path / "copy", short=16, gop=4, progress=False)
    build_cache("folder", root, size=16, progress=False, decoder="pyav")
    argv = ["data", "check", "--dataset", f"folder:{root}", "--no-progress", "--size", "16", "--frames", "8",
            "--stride", "1", "--compare", str(tmp_path / "copy"), "--model", "vit_tiny", "--gpu", H100,
            "--mfu", "0.5", "--repeats", "4", "--decoder", "pyav"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "decode speed: 20.0 clips/s per core (20.0 clips/s, 160 frames/s in one process; 6 clips)" in out
    assert "decode speed of the re-encoded copy" in out and "1.00 times the originals'" in out
    assert "read speed of the decoded cache (short side 18): 20.0 clips/s per core" in out
    assert "8 frames at stride 1, short side 18" in out
    cores = _expected_cores("vit_tiny", 8, 16, 1, 3, mfu=0.5)
    assert f"feeding vit_tiny on {H100} (H100: 989.4 bf16 TFLOP/s dense) at MFU 0.5" in out
    assert f"so {cores * 20:.1f} clips/s" in out
    rows = {line[:28].strip(): line[28:].split() for line in out.splitlines()
            if line.startswith(("decoding the", "reading the"))}
    assert set(rows) == {"decoding the originals", "decoding the re-encoded copy", "reading the decoded cache"}
    for row in rows.values():
        assert row == ["20.0", f"{cores:.1f}", f"{cores / 4:.1f}"]
    assert "cores are this machine's" in out and "data_args.repeats 4: one decode serves 4 clips" in out
    assert "upper bound of the gain" in out


def test_feeding_arithmetic(tmp_path, fixed_speed):
    root = hmdb51_layout(tmp_path / "h")
    report = checking.check("hmdb51", root, frames=16, stride=2, size=224, progress=False, decoder="pyav")
    assert report["speeds"]["originals"]["clips_per_core_s"] == pytest.approx(1 / PER_CLIP_S)
    feed = feeding(report, "vit_base", H100, mfu=0.35, repeats=2)
    train_flops = estimate(RunConfig(model="vit_base", frames=16, size=224, stride=2, eval_sweep=[]), [], 0.5,
                           3).train_gflops * 1e9
    assert feed["peak"] == pytest.approx(989.4e12) and feed["train_flops"] == pytest.approx(train_flops)
    assert feed["gpu_clips_per_s"] == pytest.approx(989.4e12 * 0.35 / train_flops)
    (row,) = feed["rows"]
    assert row["cores"] == pytest.approx(989.4e12 * 0.35 / train_flops / 20)
    assert row["cores_repeats"] == pytest.approx(row["cores"] / 2)
    assert feed["rows"][0]["cores"] == pytest.approx(_expected_cores("vit_base", 16, 224, 2, 3))
    assert feeding(report, "vit_base", "NVIDIA A100-SXM4-80GB")["peak"] == pytest.approx(312e12)


def test_unknown_gpu_and_bad_flags_are_refused_in_one_line(tmp_path, capsys, monkeypatch):
    root = folder_layout(tmp_path / "f", {"train": 1, "val": 1})
    decoded = []
    monkeypatch.setattr(checking, "_clock", lambda: decoded.append(1) or (0.0, 0.0))
    base = ["data", "check", "--dataset", f"folder:{root}", "--no-progress", "--decoder", "pyav"]
    assert main([*base, "--model", "vit_base", "--gpu", "NVIDIA B300"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and not decoded  # refused before anything is decoded
    assert re.search(r"unknown GPU 'NVIDIA B300'.*known: H200, .*H100, .*A100, .*T4", err)
    for flags, message in ((["--model", "vit_base"], "--model and --gpu go together"),
                           (["--model", "vit_enormous", "--gpu", H100], "unknown model preset 'vit_enormous'"),
                           (["--model", "vit_base", "--gpu", H100, "--mfu", "0"], "--mfu is a fraction in (0, 1]"),
                           (["--model", "vit_base", "--gpu", H100, "--repeats", "0"], "--repeats must be at least 1"),
                           (["--frames", "0"], "--frames must be at least 1"),
                           (["--compare", str(tmp_path / "nowhere")], "is not a folder")):
        assert main([*base, *flags]) == 2, flags
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (flags, err)


def test_check_still_counts_unreadable_files(tmp_path, capsys):
    root = hmdb51_layout(tmp_path / "h")
    (root / "diving" / "diving_clip_0.avi").write_bytes(b"")
    assert main(["data", "check", "--dataset", f"hmdb51:{root}", "--no-progress", "--size", "16",
                 "--decoder", "pyav"]) == 1
    out = capsys.readouterr().out
    assert "3 classes" in out and "decode speed: " in out and "clips/s per core" in out and "empty file" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith(("train", "val"))}
    assert rows["train"][:2] == ["6", "3"] and rows["train"][4] == "1"
