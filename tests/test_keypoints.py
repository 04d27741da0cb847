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
