import math

import pytest
import torch
import torch.nn.functional as F

from vtbench.core.shape import BatchRequest
from vtbench.datasets.synthetic import CLASSES, EDGE_WIDTH, PIXEL_STD, SyntheticVideos, _Draws, _target_track, _wrapped

PAIRS = [(CLASSES[i][0], CLASSES[i + 1][0]) for i in range(0, len(CLASSES), 2)]
PER_CLASS = 200  # clips per class in the distribution tests


def ks_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Kolmogorov-Smirnov distance between two samples (the largest gap between their CDFs)."""
    a, b = a.flatten().sort().values, b.flatten().sort().values
    points = torch.cat([a, b])
    cdf_a = torch.searchsorted(a, points, right=True) / len(a)
    cdf_b = torch.searchsorted(b, points, right=True) / len(b)
    return (cdf_a - cdf_b).abs().max().item()


def indices_of(name: str, count: int = PER_CLASS) -> list[int]:
    """Validation indices of one class (labels cycle through all classes)."""
    c = [n for n, _, _ in CLASSES].index(name)
    return [c + len(CLASSES) * j for j in range(count)]


def clean_set(**knobs) -> SyntheticVideos:
    """All classes, one object, no noise, so objects can be found in the pixels."""
    knobs = {"noise": 0.0, "distractors": 0, "targets": 1, **knobs}
    return SyntheticVideos("val", num_classes=len(CLASSES), length=len(CLASSES) * PER_CLASS, **knobs)


def object_centroids(video: torch.Tensor) -> torch.Tensor:
    """(B, F, 2) position (x, y) of the single object in clips long enough that the per-pixel temporal
    median is the background; circular means, as objects wrap round the frame."""
    background = video.median(dim=2, keepdim=True).values
    mask = ((video - background).abs().sum(dim=1) > 0.1).float()  # (B, F, H, W)
    size = video.shape[-1]
    angles = 2 * math.pi * (torch.arange(size) + 0.5) / size
    centres = []
    for weights in (mask.sum(dim=2), mask.sum(dim=3)):  # over columns (x), then rows (y)
        angle = torch.atan2((weights * angles.sin()).sum(-1), (weights * angles.cos()).sum(-1))
        centres.append(torch.remainder(angle / (2 * math.pi), 1.0))
    return torch.stack(centres, dim=-1)


def test_class_list_has_order_pairs():
    assert len(CLASSES) >= 10
    for first, second in zip(CLASSES[::2], CLASSES[1::2], strict=True):
        assert first[1] == second[1] and first[2] == -second[2]  # same process, opposite directions
    assert SyntheticVideos("val").class_names == [name for name, _, _ in CLASSES[:10]]


@pytest.mark.parametrize(
    "frames, size, stride",
    [(8, 32, 2), (4, 16, 1), (1, 8, 3), (16, 64, 4), (5, 24, [1, 2, 3, 4, 8])],
)
def test_batch_shape_and_dtype(frames, size, stride):
    ds = SyntheticVideos("train")
    video, labels = ds.batch([0, 5, 17, 123456, 9], frames, size, stride, training=True)
    assert video.shape == (5, 3, frames, size, size) and video.dtype == torch.float32
    assert labels.shape == (5,) and labels.dtype == torch.int64
    assert torch.isfinite(video).all()


def test_batch_is_roughly_normalised():
    video, _ = SyntheticVideos("val").batch(range(200), 8, 32, 2, training=False)
    assert abs(video.mean().item()) < 0.3
    assert 0.7 < video.std().item() < 1.4


@pytest.mark.parametrize("training", [True, False])
def test_deterministic_and_independent_of_batch(training):
    ds = SyntheticVideos("train", seed=3, distractors=2, noise=0.1)
    first, labels = ds.batch([3, 7], 8, 32, [2, 3], training)
    again, labels_again = ds.batch([3, 7], 8, 32, [2, 3], training)
    assert torch.equal(first, again) and torch.equal(labels, labels_again)
    alone, _ = ds.batch([7], 8, 32, 3, training)
    crowd, _ = ds.batch([11, 7, 400, 2, 5, 6, 8, 9, 10, 12, 13, 14, 15, 16, 17, 18, 19], 8, 32, 3, training)
    assert torch.equal(first[1], alone[0])
    assert torch.equal(first[1], crowd[1])
    fresh, _ = SyntheticVideos("train", seed=3, distractors=2, noise=0.1).batch([7], 8, 32, 3, training)
    assert torch.equal(fresh, alone)


def test_training_clips_start_at_random_eval_clips_do_not():
    ds = SyntheticVideos("val", noise=0.0)
    centred, _ = ds.batch(range(40), 4, 16, 2, training=False)
    random_start, _ = ds.batch(range(40), 4, 16, 2, training=True)
    differs = (centred - random_start).flatten(1).abs().amax(dim=1) > 0
    assert differs.sum() > 20  # most clips start elsewhere than the centre


def test_splits_and_seeds_are_unrelated_streams():
    val, _ = SyntheticVideos("val").batch(range(8), 8, 32, 2, training=False)
    train, _ = SyntheticVideos("train").batch(range(8), 8, 32, 2, training=False)
    other_seed, _ = SyntheticVideos("train", seed=1).batch(range(8), 8, 32, 2, training=False)
    for other in (val, other_seed):
        assert ((train - other).flatten(1).abs().mean(dim=1) > 0.3).all()


def test_the_evaluation_set_is_the_same_for_every_seed():
    val, _ = SyntheticVideos("val", seed=0).batch(range(8), 8, 32, 2, training=False)
    other_seed, _ = SyntheticVideos("val", seed=7).batch(range(8), 8, 32, 2, training=False)
    assert torch.equal(val, other_seed)


def test_labels_agree_with_batch_and_cover_every_class():
    ds = SyntheticVideos("val", num_classes=12, length=100)
    indices = [0, 99, 13, 50, 7]
    assert torch.equal(ds.labels(indices), ds.batch(indices, 2, 8, 1, training=True)[1])
    assert torch.equal(ds.labels(torch.tensor(indices)), ds.labels(indices))
    counts = torch.bincount(SyntheticVideos("val").labels(range(512)), minlength=10)
    assert len(counts) == 10 and counts.min() >= 50
    few = SyntheticVideos("val", num_classes=4)
    assert few.class_names == ["move_left", "move_right", "move_up", "move_down"]
    assert set(few.labels(range(100)).tolist()) == {0, 1, 2, 3}


def test_lengths():
    assert len(SyntheticVideos("val")) == 512
    assert len(SyntheticVideos("val", length=64)) == 64
    assert len(SyntheticVideos("train")) == 2**31 - 1
    with pytest.raises(IndexError):
        SyntheticVideos("val", length=64).batch([64], 8, 32, 2, training=False)


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="'test'"):
        SyntheticVideos("test")
    with pytest.raises(ValueError, match="13"):
        SyntheticVideos("val", num_classes=len(CLASSES) + 1)
    with pytest.raises(ValueError, match="strides"):
        SyntheticVideos("val").batch([0, 1], 8, 32, [1, 2, 3], training=False)


@pytest.mark.parametrize("training", [True, False])
def test_two_sizes_show_the_same_scene(training):
    ds = SyntheticVideos("val", noise=0.0, distractors=2)
    small, _ = ds.batch(range(32), 8, 32, 2, training)
    large, _ = ds.batch(range(32), 8, 64, 2, training)
    gap = (F.avg_pool3d(large, (1, 2, 2)) - small).abs()
    assert gap.mean() < 0.03
    assert gap.flatten().kthvalue(int(0.99 * gap.numel())).values < 0.4  # larger only on object edges
    other_scene, _ = ds.batch(range(1, 33), 8, 32, 2, training)
    assert (other_scene - small).abs().mean() > 0.5


def test_background_is_static_apart_from_noise():
    clean, _ = clean_set(distractors=2).batch(range(48), 8, 32, 2, training=True)
    still = (clean == clean[:, :, :1]).all(dim=2).all(dim=1)  # (B, H, W): bitwise equal in every frame
    assert (still.flatten(1).float().mean(dim=1) > 0.3).all()  # objects sweep over the rest
    assert (~still).flatten(1).any(dim=1).all()  # but something moves in every clip

    noisy, _ = clean_set(distractors=2, noise=0.05).batch(range(48), 8, 32, 2, training=True)
    residual = (noisy - clean)[still[:, None, None].expand_as(noisy)]
    assert abs(residual.std() / (0.05 / PIXEL_STD) - 1) < 0.05


def test_motion_stays_visible_when_the_clip_outlasts_the_video():
    video, _ = clean_set().batch(indices_of("move_right", 8), 16, 32, 4, training=True)  # 64 native frames
    steps = (video[:, :, 1:] - video[:, :, :-1]).abs().flatten(3).amax(dim=(1, 3))  # (B, 15)
    assert (steps > 0.1).float().mean() > 0.9  # the object moves between (almost) all frames


@pytest.mark.parametrize("pair, axis", [(("move_left", "move_right"), 0), (("move_up", "move_down"), 1)])
def test_reversing_a_clip_turns_it_into_its_pair(pair, axis):
    ds = clean_set()
    backward_name, forward_name = pair
    backward, _ = ds.batch(indices_of(backward_name), 32, 32, 1, training=False)
    forward, _ = ds.batch(indices_of(forward_name), 32, 32, 1, training=False)

    def mean_velocity(video):  # along the axis, in frame widths per frame
        position = object_centroids(video)[..., axis]
        step = position[:, 1:] - position[:, :-1]
        return (step - step.round()).mean(dim=1)

    assert (mean_velocity(backward) < 0).float().mean() > 0.95
    assert (mean_velocity(forward) > 0).float().mean() > 0.95
    reversed_backward = mean_velocity(backward.flip(2))
    assert (reversed_backward > 0).float().mean() > 0.95
    assert ks_distance(reversed_backward, mean_velocity(forward)) < 0.2


@pytest.mark.parametrize("pair", [p for p in PAIRS if p[0].startswith(("move", "orbit"))])
def test_single_frame_position_does_not_tell_a_pair_apart(pair):
    ds = clean_set()
    first, second = (ds.batch(indices_of(name), 32, 32, 1, training=False)[0] for name in pair)
    for frame in (0, 31):
        for axis in (0, 1):
            a, b = object_centroids(first)[:, frame, axis], object_centroids(second)[:, frame, axis]
            assert ks_distance(a, b) < 0.2, (frame, axis)


@pytest.mark.parametrize("pair", PAIRS)
def test_single_frame_brightness_does_not_tell_a_pair_apart(pair):
    ds = clean_set(distractors=1)
    first, second = (ds.batch(indices_of(name), 8, 32, 2, training=False)[0] for name in pair)
    for frame in (0, 7):
        assert ks_distance(first[:, :, frame].mean(dim=(1, 2, 3)), second[:, :, frame].mean(dim=(1, 2, 3))) < 0.2


@pytest.mark.parametrize("pair", PAIRS)
def test_target_state_at_any_time_has_the_same_distribution_within_a_pair(pair):
    """The rendered object's state (position, size, opacity, luminance) at a fixed time: a single frame."""
    generator = torch.Generator().manual_seed(0)
    uniforms = torch.rand(2 * 1000, 64, generator=generator)
    labels = torch.tensor([[n for n, _, _ in CLASSES].index(name) for name in pair]).repeat_interleave(1000)
    tau = torch.tensor([0.0, 0.3, 0.9]).expand(len(labels), 3)
    track = _target_track(_Draws(uniforms), labels, tau, motion=1.0)
    for name in ("x", "y", "radius", "opacity", "gain"):
        state = getattr(track, name).expand(len(labels), 3)
        for t in range(3):
            assert ks_distance(state[:1000, t], state[1000:, t]) < 0.08, (name, t)
    changes = {
        name: (getattr(track, name)[:1000, 1] != getattr(track, name)[:1000, 0]).float().mean()
        for name in ("x", "y", "radius", "opacity", "gain")
    }
    assert max(changes.values()) > 0.99  # the pair's process does change something over time


def test_segment_sampling_spreads_frames_over_the_whole_video():
    ds = SyntheticVideos("val")
    centred = ds._segment_times([0, 1], 8, training=False)
    assert torch.allclose(centred[0], (torch.arange(8) + 0.5) / 8)
    jittered = ds._segment_times([0, 1, 2], 8, training=True)
    segment = (jittered * 8).floor()
    assert torch.equal(segment, torch.arange(8.0).expand(3, -1))  # one frame in each equal segment
    assert not torch.equal(jittered[0], jittered[1])
    video, _ = ds.batch([0, 1], 6, 24, 0, training=True)
    assert video.shape == (2, 3, 6, 24, 24)
    again, _ = ds.batch([0, 1], 6, 24, 0, training=True)
    assert torch.equal(video, again)


def test_more_targets_move_more_of_the_frame():
    def moving_fraction(targets):
        clips, _ = SyntheticVideos("val", noise=0.0, targets=targets).batch(range(32), 8, 32, 4, training=False)
        return (clips != clips[:, :, :1]).any(dim=2).any(dim=1).float().mean().item()

    assert moving_fraction(1) < moving_fraction(6) < 0.9
    with pytest.raises(ValueError, match="targets must be at least 1, got 0"):
        SyntheticVideos("val", targets=0)


def _linear_probe_accuracy(features: torch.Tensor, targets: torch.Tensor) -> float:
    """Held-out accuracy of a least-squares linear classifier fitted on the first half, scored on the second."""
    features = torch.cat([features, torch.ones(len(features), 1)], dim=1).double()
    onehot = F.one_hot(targets).double()
    half = len(features) // 2
    weights = torch.linalg.lstsq(features[:half], onehot[:half], rcond=None).solution
    return (features[half:] @ weights).argmax(dim=1).eq(targets[half:]).double().mean().item()


def test_one_frame_tells_the_pair_by_its_appearance_but_not_the_member_within_it():
    ds = SyntheticVideos("val", length=4000)  # the default cues: appearance and drift
    video, labels = ds.batch(range(4000), 4, 32, 2, training=False)  # four frames: fewer to render
    frame = F.avg_pool2d(video[:, :, 3], 8).flatten(1)  # one frame, its colours on a 4 x 4 grid
    pair_accuracy = _linear_probe_accuracy(frame, labels // 2)
    assert pair_accuracy > 0.5  # chance: 0.2 (five pairs)
    # the member within each pair, from the same frame: at chance (0.5); its standard error here is 0.016
    member = [_linear_probe_accuracy(frame[labels // 2 == p], labels[labels // 2 == p] % 2) for p in range(5)]
    assert max(member) < 0.58, member
    without_appearance = SyntheticVideos("val", length=4000, appearance=0.0).batch(range(4000), 4, 32, 2, False)[0]
    blind = _linear_probe_accuracy(F.avg_pool2d(without_appearance[:, :, 3], 8).flatten(1), labels // 2)
    # without it, one frame tells a pair only by its process's look (a size, an opacity): much less often
    assert pair_accuracy > blind + 0.15, (pair_accuracy, blind)


def test_drift_moves_every_target_in_its_class_direction():
    def velocities(name, **knobs):  # mean horizontal velocity per clip, in frame widths per frame
        video, _ = clean_set(appearance=0.0, **knobs).batch(indices_of(name, 100), 32, 32, 1, training=False)
        step = object_centroids(video)[..., 0].diff(dim=1)
        return (step - step.round()).mean(dim=1)

    for name, sign in (("move_up", -1), ("move_down", +1), ("grow", +1), ("shrink", -1)):
        assert (sign * velocities(name) > 0).float().mean() > 0.9, name
    drifting, still = velocities("grow").abs().median(), velocities("grow", drift=0.0).abs().median()
    assert still < 0.05 * drifting  # without drift a growing target stays put


def test_grading_draws_cue_strengths_log_uniformly_over_its_decades():
    indices = list(range(2000))
    uniform = SyntheticVideos("val", length=2000, grading=0)._strength(indices, "appearance").flatten()
    graded = SyntheticVideos("val", length=2000, grading=2.0)._strength(indices, "appearance").flatten()
    assert uniform.min() < 0.01 and abs(uniform.median().item() - 0.5) < 0.05  # uniform in [0, 1)
    assert graded.min() >= 0.01 and graded.max() <= 1.0
    assert abs(graded.log10().median().item() + 1) < 0.1  # half the videos below a tenth of the strongest cue
    assert abs((graded < 0.1).float().mean().item() - 0.5) < 0.05
    with pytest.raises(ValueError, match="grading"):
        SyntheticVideos("val", grading=-1)


def test_rendering_ahead_gives_the_same_clips_and_renders_the_next_batch_in_the_background():
    plain, ahead = SyntheticVideos("train", seed=4), SyntheticVideos("train", seed=4, ahead=True)
    plan = [BatchRequest(tuple(range(first, first + 6)), 8, 16, 2) for first in (0, 6, 12, 18)]
    plan[2] = BatchRequest(tuple(range(12, 16)), 4, 8, (1, 3, 2, 1))  # a shape of its own, a stride per clip
    for step in range(3):  # each batch names the one after it
        request = plan[step]
        expected = plain.batch(*request, training=True)
        got = ahead.batch(*request, training=True, upcoming=lambda k, step=step: plan[step + k])
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
        following = plan[step + 1]
        assert ahead._ahead is not None and ahead._ahead[0] == (*following[:3], following.stride, True)
    other = ahead.batch(range(100, 104), 8, 16, 2, training=True)  # not the batch prepared: rendered here
    assert torch.equal(other[0], plain.batch(range(100, 104), 8, 16, 2, training=True)[0])
    assert ahead._ahead is None  # nothing asked for next
    ahead.batch(range(6), 8, 16, 2, training=True, upcoming=lambda k: plan[1])
    ahead.close()
    assert ahead._pool is None and ahead._ahead is None


def whole_frame_blend(canvas, track, coords, scratch):
    """The straightforward blend the renderer replaced: every shape's distance at every pixel, new tensors."""
    dx = _wrapped(coords - track.x[..., None]).abs()[:, :, None, :]
    dy = _wrapped(coords - track.y[..., None]).abs()[:, :, :, None]
    shape = track.shape[:, :, None, None]
    distance = torch.where(shape == 0, dx + dy,
                           torch.where(shape == 1, (dx * dx + dy * dy).sqrt(), torch.maximum(dx, dy)))
    coverage = ((track.radius[..., None, None] - distance) / EDGE_WIDTH + 0.5).clamp(0, 1) \
        * track.opacity[..., None, None]
    colour = (track.colour[:, :, None] * track.gain[:, None, :])[..., None, None]
    canvas.copy_(canvas + coverage[:, None] * (colour - canvas))


@pytest.mark.parametrize("knobs", [{}, {"num_classes": 12, "distractors": 2}, {"targets": 1, "noise": 0.0}])
def test_rendering_in_place_gives_bitwise_the_clips_of_the_whole_frame_blend(knobs, monkeypatch):
    from vtbench.datasets import synthetic

    def render(split, size, frames, stride):
        videos = SyntheticVideos(split, seed=3, **knobs)
        return videos.batch(list(range(5, 29)), frames, size, stride, training=split == "train")[0]

    shapes = [("train", 32, 16, 2), ("val", 32, 16, 2), ("train", 20, 4, 0), ("train", 64, 8, 3)]
    fast = [render(*shape) for shape in shapes]
    monkeypatch.setattr(synthetic, "_paint", whole_frame_blend)
    for shape, clips in zip(shapes, fast, strict=True):
        assert torch.equal(clips, render(*shape)), shape
