"""Keypoints of magnitude ~1e19 used to overflow float32 normalisation into an all-zero "valid" pose that
matched confidently (issue 9, item 10): such rows are invalid, and the keypoint reader refuses them."""

import numpy as np
import pytest

from prpose.errors import PrposeError
from prpose.normalize import normalize_2d

# A plausible input13 pose in pixels (nose, shoulders, elbows, wrists, hips, knees, ankles).
POSE = np.array([[500, 200], [460, 260], [540, 260], [440, 330], [560, 330], [430, 400], [570, 400],
                 [475, 420], [525, 420], [470, 520], [530, 520], [468, 620], [532, 620]], np.float32)


@pytest.mark.parametrize("scale", [1e19, 1e20, 1e25, 1e30])
def test_extreme_rows_are_invalid_not_zero_valid(scale):
    normalized, valid = normalize_2d(POSE * np.float32(scale))
    assert not bool(valid)
    np.testing.assert_array_equal(np.asarray(normalized), 0.0)


@pytest.mark.parametrize("where", [0, 7])  # a limb joint (nose) and a torso joint (left hip)
def test_one_extreme_joint_counts_as_missing(where):
    pose = POSE.copy()
    pose[where] = 1e19
    visible = np.ones(13, bool)
    visible[where] = False
    expected, expected_valid = normalize_2d(POSE, visible)
    normalized, valid = normalize_2d(pose)
    assert bool(valid) == bool(expected_valid)
    np.testing.assert_allclose(np.asarray(normalized), np.asarray(expected), atol=1e-6)


def test_large_but_representable_poses_still_normalise_scale_invariantly():
    reference, _ = normalize_2d(POSE.astype(np.float64))
    normalized, valid = normalize_2d(POSE * np.float32(1e6))
    assert bool(valid)
    np.testing.assert_allclose(np.asarray(normalized), np.asarray(reference), atol=1e-5)


def _embedder():
    from prpose.config import get_preset
    from prpose.inference import PoseEmbedder
    from prpose.model import init_split

    config = get_preset("tiny")
    _, params, batch_stats, _ = init_split(config.model, config.window)
    return PoseEmbedder.from_state(config, params, batch_stats, fingerprint="test")


def test_embedding_skips_extreme_rows_and_says_why():
    embedder = _embedder()
    poses = np.stack([POSE, POSE * np.float32(1e19), POSE])
    with pytest.raises(PrposeError, match=r"1 pose\(s\) cannot be embedded: rows \[1\].*extreme"):
        embedder.embed(poses, profile="input13")
    usable = embedder.embed_usable(poses, profile="input13")
    assert usable.rows.tolist() == [0, 2]
    assert len(usable.skipped) == 1 and usable.skipped[0][0] == 1 and "beyond 1e+15" in usable.skipped[0][1]
    np.testing.assert_allclose(usable.embeddings.mean[0], usable.embeddings.mean[1], atol=1e-6)


def test_numpy_twin_applies_the_same_guard():
    from prpose import normalize, numpy_forward

    assert numpy_forward.MAX_COORDINATE == normalize.MAX_COORDINATE
    for scale in (1e19, 1e25):
        normalized, valid = numpy_forward.normalize_2d((POSE * np.float32(scale))[None])
        assert not valid[0] and not normalized.any()
    pose = POSE.copy()
    pose[0] = 1e19
    expected, _ = normalize_2d(pose)
    normalized, valid = numpy_forward.normalize_2d(pose[None])
    assert valid[0]
    np.testing.assert_allclose(normalized[0], np.asarray(expected), atol=1e-6)
