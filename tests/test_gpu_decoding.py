"""`data_args.decoder: torchcodec-cuda`: TorchCodec decoding on the GPU (NVDEC), its frames resized there and handed to
the loader as the CPU decoders hand theirs. The decoding itself is tested only where torch sees a CUDA device (never
in CI); the rest (the choice, the refusal, the resize on the device) is tested everywhere."""

import json

import numpy as np
import pytest
import torch
from videos import encode, frame_of

from vtbench.datasets import decoders, sampling, torchcodec_decode
from vtbench.errors import ConfigError


def test_without_a_gpu_the_gpu_decoder_is_refused_in_one_line_saying_what_to_use(monkeypatch):
    monkeypatch.setattr(decoders, "torchcodec_missing", lambda: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert decoders.unavailable("torchcodec-cuda") == "torch sees no CUDA device here"
    assert decoders.unavailable("torchcodec") is None and decoders.unavailable("pyav") is None
    with pytest.raises(ConfigError, match="^data_args.decoder torchcodec-cuda decodes on a CUDA GPU, and torch sees "
                                          "no CUDA device here: use torchcodec or pyav$"):
        decoders.resolve("torchcodec-cuda")
    monkeypatch.setattr(decoders, "torchcodec_missing", lambda: "ImportError: No module named 'torchcodec'")
    with pytest.raises(ConfigError, match="^data_args.decoder torchcodec-cuda cannot load here"):
        decoders.resolve("torchcodec-cuda")


def test_auto_takes_the_gpu_decoder_only_where_it_was_measured_fastest_and_a_gpu_is_there(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(decoders, "torchcodec_missing", lambda: None)
    monkeypatch.setattr(decoders, "_versions", lambda: {"host": "h", "av": "1", "torchcodec": "2"})
    decoders.record_measurement({"pyav": 20.0, "torchcodec": 10.0, "torchcodec-cuda": 90.0})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert decoders.resolve("auto") == "torchcodec-cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same host, its GPU hidden
    assert decoders.resolve("auto") == "pyav"
    decoders.record_measurement({"pyav": 20.0, "torchcodec": 30.0})  # measured without a GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert decoders.resolve("auto") == "torchcodec"
    assert json.loads(decoders.measurement_file().read_text())["faster"] == "torchcodec"


def test_frames_resized_on_their_device_keep_their_levels_and_aspect():
    frames = np.random.default_rng(0).integers(0, 256, (3, 30, 40, 3), dtype=np.uint8)
    resized = sampling.resize_short_tensor(torch.from_numpy(frames), 12)
    assert resized.dtype == torch.uint8 and resized.shape == (3, 12, 16, 3)
    assert abs(resized.float().mean() - frames.mean()) < 1  # antialiased: the mean level survives
    grey = torch.full((2, 30, 40, 3), 77, dtype=torch.uint8)
    assert torch.equal(sampling.resize_short_tensor(grey, 12), torch.full((2, 12, 16, 3), 77, dtype=torch.uint8))
    assert sampling.resize_short_tensor(resized, 12) is resized


def test_decoding_on_a_device_gives_the_frames_of_decoding_on_the_cpu(tmp_path):
    """The path the GPU takes (decode on the device, resize there with torch, back as uint8 arrays), run on the CPU
    device here so that it is tested without a GPU: the same frames as FFmpeg's scaler, within a grey level or two."""
    if reason := decoders.torchcodec_missing():
        pytest.skip(f"TorchCodec cannot load here: {reason}")
    path = encode(tmp_path / "v.mp4", frames=24, ramp=True)
    for short in (None, 16):
        on_device = torchcodec_decode.read_frames(path, [0, 7, 7, 19], 24, short, device="cpu").astype(int)
        scaled = torchcodec_decode.read_frames(path, [0, 7, 7, 19], 24, short).astype(int)
        assert on_device.shape == scaled.shape and np.abs(on_device - scaled).mean() < 1, short
    levels = encode(tmp_path / "levels.mp4", frames=24)  # frame k a grey of its own; a count past the end repeats
    assert [frame_of(f) for f in torchcodec_decode.read_frames(levels, [22, 5, 23, 24], 26, 16, device="cpu")] == [
        22, 5, 23, 23]


def test_a_video_the_gpu_cannot_open_but_the_cpu_can_stops_the_run_instead_of_being_skipped(tmp_path, monkeypatch):
    """Skipping it would change what a run trains and is scored on because of the GPU, not the file."""
    if reason := decoders.torchcodec_missing():
        pytest.skip(f"TorchCodec cannot load here: {reason}")
    path = encode(tmp_path / "v.mp4", frames=8)
    make = torchcodec_decode._decoder

    def no_gpu_decoder(path, transforms=None, device="cpu"):
        if device != "cpu":
            raise torchcodec_decode.Unreadable("RuntimeError: no NVDEC session")
        return make(path, transforms, device)

    monkeypatch.setattr(torchcodec_decode, "_decoder", no_gpu_decoder)
    with pytest.raises(RuntimeError, match="torchcodec-cuda cannot open .*v.mp4 on cuda, which the CPU can decode"):
        torchcodec_decode.read_frames(path, [0], 8, device="cuda")
    (tmp_path / "broken.mp4").write_bytes(b"not a video" * 40)
    with pytest.raises(torchcodec_decode.Unreadable):  # the file's own fault: skipped, as by every decoder
        torchcodec_decode.read_frames(tmp_path / "broken.mp4", [0], 8, device="cuda")


@pytest.mark.skipif(bool(decoders.unavailable("torchcodec-cuda")),
                    reason=f"torchcodec-cuda: {decoders.unavailable('torchcodec-cuda')}")
def test_nvdec_gives_the_frames_the_cpu_decoders_give(tmp_path):
    path = encode(tmp_path / "v.mp4", frames=24, height=96, width=128, ramp=True)  # NVDEC's smallest is 48 to 64 px
    decoder = torchcodec_decode._decoder(path, device="cuda")
    decoder.get_frame_at(0)
    assert not getattr(decoder, "cpu_fallback", False), str(decoder.cpu_fallback)  # decoded by NVDEC, not the CPU
    gpu, cpu = decoders.module("torchcodec-cuda"), decoders.module("pyav")
    assert gpu.probe(path) == cpu.probe(path)
    for short in (None, 64):
        a, b = (d.read_frames(path, [0, 7, 7, 19], 24, short).astype(int) for d in (gpu, cpu))
        assert a.shape == b.shape and np.abs(a - b).mean() < 3, (short, np.abs(a - b).mean())
    levels = encode(tmp_path / "levels.mp4", frames=24, height=96, width=128)
    assert [frame_of(f) for f in gpu.read_frames(levels, [0, 5, 5, 23, 25], 26, 64)] == [0, 5, 5, 23, 23]


def test_a_batch_is_normalised_alike_on_its_device():
    clips = np.random.default_rng(1).integers(0, 256, (2, 1, 4, 8, 8, 3), dtype=np.uint8)
    on_cpu = sampling.to_tensor(clips)
    assert on_cpu.shape == (2, 1, 3, 4, 8, 8) and on_cpu.dtype == torch.float32
    assert torch.allclose(on_cpu[0, 0, :, 1, 2, 3], (torch.from_numpy(clips[0, 0, 1, 2, 3]).float() / 255 - 0.45)
                          / 0.225, atol=1e-6)
    if torch.cuda.is_available():  # the bytes travel from page-locked memory and are normalised on the GPU
        on_gpu = sampling.to_tensor(clips, "cuda")
        assert on_gpu.is_cuda and torch.allclose(on_gpu.cpu(), on_cpu, atol=1e-6)


def test_data_args_cannot_name_the_device():
    from conftest import tiny

    with pytest.raises(ConfigError, match="^data_args.device is not a data argument"):
        tiny(data_args={"device": "cuda"}).resolve()


def test_synthetic_clips_are_made_in_line_on_a_cpu_and_ahead_for_a_gpu():
    from vtbench.datasets import build_dataset

    assert build_dataset("synthetic", "train", 0, device="cpu").reads_ahead is False  # the default run here
    assert build_dataset("synthetic", "train", 0, device="cuda").reads_ahead is True
