import numpy as np
import pytest

from prpose import keypoints


def test_input13_order_matches_reference():
    assert keypoints.INPUT13.joints == (
        "nose", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist",
        "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    )


def test_h36m32_to_h36m17_by_name_equals_reference_indices():
    idx = keypoints.conversion_indices("h36m32", "h36m17")
    np.testing.assert_array_equal(idx, keypoints.H36M32_TO_H36M17)


@pytest.mark.parametrize("source", ["coco17", "h36m17", "input13"])
def test_convert_to_input13_keeps_joint_identity(source):
    profile = keypoints.get_profile(source)
    # Encode each joint's identity in its coordinates.
    x = np.stack([np.arange(profile.num_joints), -np.arange(profile.num_joints)], axis=-1)[None].astype(float)
    out = keypoints.convert(x, source, "input13")
    assert out.shape == (1, 13, 2)
    for j, name in enumerate(keypoints.INPUT13.joints):
        assert out[0, j, 0] == profile.index(name)


def test_convert_names_missing_joint():
    with pytest.raises(ValueError, match="lacks joint.*left_eye"):
        keypoints.conversion_indices("h36m17", "coco17")


def test_convert_rejects_wrong_joint_count():
    with pytest.raises(ValueError, match="has 17"):
        keypoints.convert(np.zeros((2, 13, 2)), "coco17", "input13")


def test_unknown_profile_lists_known_ones():
    with pytest.raises(ValueError, match="known profiles: coco17"):
        keypoints.get_profile("openpose25")


def test_flip_permutation_swaps_left_and_right():
    p = keypoints.INPUT13
    perm = p.flip_permutation
    assert p.joints[perm[p.index("left_wrist")]] == "right_wrist"
    assert p.joints[perm[p.index("nose")]] == "nose"
    np.testing.assert_array_equal(perm[perm], np.arange(13))


def test_mpii16_converts_to_h36m17_by_name_with_the_nose_absent():
    # Stacked Hourglass order (3d-pose-baseline): RFoot, RKnee, RHip, LHip, LKnee, LFoot, Hip, Spine, Thorax,
    # Head, RWrist, RElbow, RShoulder, LShoulder, LElbow, LWrist; joint i holds the value i.
    sh = np.stack([np.arange(16.0), -np.arange(16.0)], -1)[None]
    out, present = keypoints.convert_partial(sh, "mpii16", "h36m17")
    h = keypoints.H36M17
    assert out.shape == (1, 17, 2) and present.tolist() == [j != "nose" for j in h.joints]
    expected = {"right_ankle": 0, "right_knee": 1, "right_hip": 2, "left_hip": 3, "left_knee": 4, "left_ankle": 5,
                "pelvis": 6, "spine": 7, "thorax": 8, "head": 9, "right_wrist": 10, "right_elbow": 11,
                "right_shoulder": 12, "left_shoulder": 13, "left_elbow": 14, "left_wrist": 15}
    for joint, i in expected.items():
        assert out[0, h.index(joint)].tolist() == [i, -i], joint
    assert out[0, h.index("nose")].tolist() == [0, 0]
    # Left/right pairs are named so that a mirror swaps them.
    mpii = keypoints.get_profile("mpii16")
    assert sorted(mpii.joints[a] for a, _ in mpii.left_right_pairs) == sorted(
        j for j in mpii.joints if j.startswith("left_"))
    with pytest.raises(keypoints.PrposeError, match="lacks joint"):
        keypoints.convert(sh, "mpii16", "h36m17")


def test_convert_partial_fills_absent_joints_with_zero_even_from_nan_sources():
    x = np.full((2, 16, 2), np.nan)
    x[:, 6] = 1.0
    out, present = keypoints.convert_partial(x, "mpii16", "h36m17")
    assert np.all(out[:, keypoints.H36M17.index("nose")] == 0)
    assert np.all(out[:, 0] == 1.0) and present.sum() == 16
    with pytest.raises(keypoints.PrposeError, match="profile 'mpii16' has 16"):
        keypoints.convert_partial(np.zeros((17, 2)), "mpii16", "h36m17")
