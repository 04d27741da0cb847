"""Windows of a track for temporal Pr-VIPE: padding at the ends, tracks, filling, batch vs single, time order."""

import dataclasses

import numpy as np
import pytest

from prpose import windows
from prpose.errors import PrposeError


def _videopose3d_windows(length, window):
    """Independent reference: VideoPose3D's unchunked generator pads the sequence with np.pad(mode="edge") by the
    receptive field's half on each side, then slides; row t is the window whose centre is frame t."""
    c = window // 2
    padded = np.pad(np.arange(length), (c, window - 1 - c), mode="edge")
    return np.stack([padded[t:t + window] for t in range(length)])


@pytest.mark.parametrize("length,window", [(1, 7), (3, 7), (10, 7), (10, 5), (4, 1), (6, 4)])
def test_track_window_indices_match_edge_padding(length, window):
    idx = windows.track_window_indices(length, window)
    np.testing.assert_array_equal(idx, _videopose3d_windows(length, window))
    assert (idx[:, window // 2] == np.arange(length)).all()  # each window belongs to its centre frame


def test_track_window_indices_ends_explicit():
    idx = windows.track_window_indices(5, 7)
    np.testing.assert_array_equal(idx[0], [0, 0, 0, 0, 1, 2, 3])
    np.testing.assert_array_equal(idx[4], [1, 2, 3, 4, 4, 4, 4])
    with pytest.raises(PrposeError, match="window"):
        windows.window_offsets(0)


def test_tracks_break_at_sequence_and_frame_gaps():
    sequence = np.array([0, 0, 0, 1, 1, 1, 1])
    frame = np.array([0, 1, 2, 0, 1, 3, 4])  # a gap between 1 and 3 in sequence 1
    bounds = windows.track_starts(sequence, frame, 7)
    np.testing.assert_array_equal(bounds, [0, 3, 5, 7])
    idx = windows.window_indices(bounds, 3)
    np.testing.assert_array_equal(idx, [[0, 0, 1], [0, 1, 2], [1, 2, 2], [3, 3, 4], [3, 4, 4], [5, 5, 6], [5, 6, 6]])
    np.testing.assert_array_equal(windows.track_starts(None, None, 4), [0, 4])
    with pytest.raises(PrposeError, match="sequence"):
        windows.track_starts(np.zeros(3), None, 4)


def test_fill_unusable_takes_the_nearest_usable_slot():
    usable = np.array([True, False, True, False, False, True])
    idx = np.array([[0, 1, 2], [2, 3, 4], [3, 4, 4], [0, 0, 1]])
    out, filled = windows.fill_unusable(idx, usable)
    np.testing.assert_array_equal(out, [[0, 0, 2], [2, 2, 2], [3, 4, 4], [0, 0, 0]])  # no usable frame: unchanged
    np.testing.assert_array_equal(filled, [1, 2, 0, 1])


# --- with a model -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def temporal_embedder():
    """An untrained tiny TemporalEmbedder (window 5, concat fusion) as a PoseEmbedder."""
    from flax import nnx

    from prpose.config import get_preset
    from prpose.inference import PoseEmbedder
    from prpose.model import build_model

    config = dataclasses.replace(get_preset("tiny"), window=5)
    _, params, stats, _ = nnx.split(build_model(config.model, config.window), nnx.Param, nnx.BatchStat, ...)
    return PoseEmbedder.from_state(config, params, stats, fingerprint="test-temporal")


def _track(length, seed=0):
    """A walking-like input13 track in pixels: a base pose whose limbs swing with time (not time-symmetric)."""
    from prpose import keypoints as kp

    rng = np.random.default_rng(seed)
    base = rng.normal(size=(13, 2)) * 40 + 300
    prof = kp.get_profile("input13")
    for name, xy in (("left_shoulder", (280, 200)), ("right_shoulder", (330, 200)), ("left_hip", (285, 320)),
                     ("right_hip", (325, 320))):
        base[prof.index(name)] = xy
    t = np.arange(length)[:, None, None]
    swing = np.sin(0.3 * t + rng.uniform(0, 6, size=(1, 13, 1))) * rng.uniform(5, 30, size=(1, 13, 2))
    return (base[None] + swing + 2.0 * t).astype(np.float32)


def test_embed_track_batch_equals_single_windows(temporal_embedder):
    from prpose.numpy_forward import normalize_2d

    x = _track(12)
    out = windows.embed_track(temporal_embedder, x)
    np.testing.assert_array_equal(out.frames, np.arange(12))
    assert out.embeddings.mean.shape == (12, temporal_embedder.embedding_dim) and not out.skipped
    norm, _ = normalize_2d(x, None, "input13")
    for t in (0, 1, 6, 11):  # both padded ends and the middle
        single = temporal_embedder.embed_normalized(norm[_videopose3d_windows(12, 5)[t]][None])
        np.testing.assert_allclose(out.embeddings.mean[t], single.mean[0], atol=1e-5)
        np.testing.assert_allclose(out.embeddings.stddev[t], single.stddev[0], atol=1e-5)
    # A sub-track embeds its interior frames (whose windows do not reach its ends) as the whole track does.
    part = windows.embed_track(temporal_embedder, x[3:10])
    np.testing.assert_allclose(part.embeddings.mean[2:5], out.embeddings.mean[5:8], atol=1e-5)
    # Two tracks in one call (sequence labels) equal two calls: windows never cross a track boundary.
    both = windows.embed_track(temporal_embedder, np.concatenate([x, x[3:10]]), sequence=np.r_[[0] * 12, [1] * 7])
    np.testing.assert_allclose(both.embeddings.mean[12:], part.embeddings.mean, atol=1e-5)


def test_embed_track_skips_unusable_frames_and_fills_neighbours(temporal_embedder):
    x = _track(10)
    x[4] = np.nan  # a frame the detector lost
    out = windows.embed_track(temporal_embedder, x)
    assert [row for row, _ in out.skipped] == [4] and "non-finite" in out.skipped[0][1]
    np.testing.assert_array_equal(out.frames, [0, 1, 2, 3, 5, 6, 7, 8, 9])
    np.testing.assert_array_equal(out.filled, [0, 0, 1, 1, 1, 1, 0, 0, 0])  # windows of 5 around frame 4
    assert np.isfinite(out.embeddings.samples).all()


def test_time_order(temporal_embedder):
    """A reversed window embeds differently from its forward self, unless the motion is symmetric in time."""
    from prpose.index.kernels import match_distance_np
    from prpose.numpy_forward import normalize_2d

    a, b, s = temporal_embedder.match_params
    norm, _ = normalize_2d(_track(5), None, "input13")
    forward = temporal_embedder.embed_normalized(np.stack([norm, norm[::-1]]))
    assert np.abs(forward.mean[0] - forward.mean[1]).max() > 1e-3
    palindrome = norm[[0, 1, 2, 1, 0]]
    pal = temporal_embedder.embed_normalized(np.stack([palindrome, palindrome[::-1]]))
    np.testing.assert_allclose(pal.mean[0], pal.mean[1], atol=1e-6)
    d = match_distance_np(forward.samples[:1], forward.samples[1:], a, b, s)
    d_self = match_distance_np(forward.samples[:1], forward.samples[:1], a, b, s)
    assert d > d_self


def test_temporal_model_refuses_single_poses(temporal_embedder):
    with pytest.raises(PrposeError, match="temporal model"):
        temporal_embedder.embed(_track(3)[0:1])
    with pytest.raises(PrposeError, match="windows of 5 frames"):
        temporal_embedder.embed_normalized(np.zeros((2, 13, 2)))


def test_per_frame_model_embeds_a_track_frame_by_frame(embedder):
    x = _track(6)
    out = windows.embed_track(embedder, x)
    ref = embedder.embed(x)
    np.testing.assert_allclose(out.embeddings.mean, ref.mean, atol=1e-6)
    np.testing.assert_array_equal(out.frames, np.arange(6))


def test_warm_start_equals_the_per_frame_model_on_the_centre_frame(embedder):
    from prpose.inference import PoseEmbedder
    from prpose.model import init_split

    config = dataclasses.replace(embedder.config, window=5)
    _, params, stats, _ = init_split(config.model, 5, seed=3)
    params, stats = windows.warm_start(*embedder.weights(), params, stats, 5)
    temporal = PoseEmbedder.from_state(config, params, stats, fingerprint="warm")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 5, 13, 2)).astype(np.float32) * 0.3
    vis = rng.random((4, 5, 13)) > 0.2
    np.testing.assert_allclose(temporal.embed_normalized(x, vis).mean, embedder.embed_normalized(x[:, 2], vis[:, 2]).mean,
                               atol=1e-5)
    assert temporal.match_params == embedder.match_params
