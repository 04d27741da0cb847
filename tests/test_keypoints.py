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
    with pytest.raises(ValueError, match="known profiles: body25, coco17"):
        keypoints.get_profile("openpose25")


def test_flip_permutation_swaps_left_and_right():
    p = keypoints.INPUT13
    perm = p.flip_permutation
    assert p.joints[perm[p.index("left_wrist")]] == "right_wrist"
    assert p.joints[perm[p.index("nose")]] == "nose"
    np.testing.assert_array_equal(perm[perm], np.arange(13))


def test_mpii16_converts_to_h36m17_by_name_with_the_nose_and_spine_absent():
    # MPII order (3d-pose-baseline's names: RFoot, RKnee, RHip, LHip, LKnee, LFoot, Hip, Spine, Thorax, Head,
    # RWrist, RElbow, RShoulder, LShoulder, LElbow, LWrist); slot 7 is MPII's thorax, slot 8 its upper neck
    # (measured on real Human3.6M, see prpose/keypoints.py); joint i holds the value i.
    sh = np.stack([np.arange(16.0), -np.arange(16.0)], -1)[None]
    out, present = keypoints.convert_partial(sh, "mpii16", "h36m17")
    h = keypoints.H36M17
    assert out.shape == (1, 17, 2) and present.tolist() == [j not in ("nose", "spine") for j in h.joints]
    expected = {"right_ankle": 0, "right_knee": 1, "right_hip": 2, "left_hip": 3, "left_knee": 4, "left_ankle": 5,
                "pelvis": 6, "thorax": 7, "head": 9, "right_wrist": 10, "right_elbow": 11,
                "right_shoulder": 12, "left_shoulder": 13, "left_elbow": 14, "left_wrist": 15}
    for joint, i in expected.items():
        assert out[0, h.index(joint)].tolist() == [i, -i], joint
    assert out[0, h.index("nose")].tolist() == [0, 0] and out[0, h.index("spine")].tolist() == [0, 0]
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
    assert np.all(out[:, 0] == 1.0) and present.sum() == 15
    with pytest.raises(keypoints.PrposeError, match="profile 'mpii16' has 16"):
        keypoints.convert_partial(np.zeros((17, 2)), "mpii16", "h36m17")


# Official joint orders, written out independently of prpose.keypoints (index -> the joint it is):
# OpenPose BODY_25 (doc/02_output.md, "Pose Output Format (BODY_25)") and MediaPipe Pose landmarks
# (PoseLandmark enum). A mirrored or shuffled table fails these.
BODY25_OFFICIAL = {0: "nose", 1: "neck", 2: "right_shoulder", 3: "right_elbow", 4: "right_wrist",
                   5: "left_shoulder", 6: "left_elbow", 7: "left_wrist", 8: "mid_hip", 9: "right_hip",
                   10: "right_knee", 11: "right_ankle", 12: "left_hip", 13: "left_knee", 14: "left_ankle",
                   15: "right_eye", 16: "left_eye", 17: "right_ear", 18: "left_ear", 19: "left_big_toe",
                   20: "left_small_toe", 21: "left_heel", 22: "right_big_toe", 23: "right_small_toe",
                   24: "right_heel"}
MEDIAPIPE33_OFFICIAL = {0: "nose", 2: "left_eye", 5: "right_eye", 7: "left_ear", 8: "right_ear",
                        11: "left_shoulder", 12: "right_shoulder", 13: "left_elbow", 14: "right_elbow",
                        15: "left_wrist", 16: "right_wrist", 23: "left_hip", 24: "right_hip", 25: "left_knee",
                        26: "right_knee", 27: "left_ankle", 28: "right_ankle", 29: "left_heel", 30: "right_heel",
                        31: "left_foot_index", 32: "right_foot_index"}
COCO17_OFFICIAL = {0: "nose", 1: "left_eye", 2: "right_eye", 3: "left_ear", 4: "right_ear", 5: "left_shoulder",
                   6: "right_shoulder", 7: "left_elbow", 8: "right_elbow", 9: "left_wrist", 10: "right_wrist",
                   11: "left_hip", 12: "right_hip", 13: "left_knee", 14: "right_knee", 15: "left_ankle",
                   16: "right_ankle"}
# h36m17 (3d-pose-baseline / VideoPose3D order): index 10 is the top of the head.
H36M17_OFFICIAL = {0: "pelvis", 1: "right_hip", 2: "right_knee", 3: "right_ankle", 4: "left_hip", 5: "left_knee",
                   6: "left_ankle", 7: "spine", 8: "thorax", 9: "nose", 10: "head", 11: "left_shoulder",
                   12: "left_elbow", 13: "left_wrist", 14: "right_shoulder", 15: "right_elbow", 16: "right_wrist"}


@pytest.mark.parametrize("name, official, size", [
    ("body25", BODY25_OFFICIAL, 25), ("mediapipe33", MEDIAPIPE33_OFFICIAL, 33), ("coco17", COCO17_OFFICIAL, 17),
    ("h36m17", H36M17_OFFICIAL, 17),
])
def test_detector_profiles_follow_the_official_order(name, official, size):
    profile = keypoints.get_profile(name)
    assert profile.num_joints == size
    for index, joint in official.items():
        assert profile.joints[index] == joint, (name, index)
    # Converting a pose whose coordinates encode the official index gives each model joint its official value.
    x = np.stack([np.arange(size), np.zeros(size)], axis=-1)[None].astype(float)
    out = keypoints.convert(x, name, "input13")
    for j, joint in enumerate(keypoints.INPUT13.joints):
        assert official[int(out[0, j, 0])] == joint


def test_input14_is_input13_plus_head_top():
    assert keypoints.INPUT14.joints == keypoints.INPUT13.joints + ("head",)
    # From h36m17 the head top is joint 10; COCO has none (it becomes missing).
    x = np.arange(17 * 2, dtype=float).reshape(1, 17, 2)
    np.testing.assert_array_equal(keypoints.convert(x, "h36m17", "input14")[0, 13], x[0, 10])
    out, available = keypoints.convert_partial(np.arange(17 * 2, dtype=float).reshape(1, 17, 2), "coco17", "input14")
    assert available.tolist() == [True] * 13 + [False]
    np.testing.assert_array_equal(out[0, 13], 0)
    np.testing.assert_array_equal(out[0, :13], keypoints.convert(x, "coco17", "input13")[0])
    assert keypoints.missing_joints("coco17", "input14") == ("head",)
    assert keypoints.missing_joints("body25", "input14") == ("head",)
    assert keypoints.missing_joints("h36m17", "input14") == ()


def test_convert_partial_on_a_joint_axis_for_input14():
    scores = np.arange(25, dtype=float)[None] + 1
    out, available = keypoints.convert_partial(scores, "body25", "input14", axis=-1)
    assert out.shape == (1, 14) and out[0, -1] == 0 and not available[-1]
    assert out[0, keypoints.INPUT14.index("left_hip")] == 13  # BODY_25 index 12, plus 1


def test_register_profile_is_the_only_step_for_a_new_detector(monkeypatch):
    monkeypatch.setattr(keypoints, "PROFILES", dict(keypoints.PROFILES))
    toy = keypoints.KeypointProfile("toy5", ("left_hip", "right_hip", "left_shoulder", "right_shoulder", "nose"))
    assert keypoints.register_profile(toy) is toy
    assert keypoints.get_profile("toy5") is toy
    assert keypoints.register_profile(toy) is toy  # the same profile again is fine
    with pytest.raises(ValueError, match="already registered"):
        keypoints.register_profile(keypoints.KeypointProfile("toy5", ("nose",)))
    with pytest.raises(ValueError, match="expected a KeypointProfile"):
        keypoints.register_profile("toy5")


def test_body_parts_are_masks_by_joint_name_in_any_profile():
    mask = keypoints.body_part_mask("left_arm", "h36m17")
    assert mask.shape == (17,)
    assert {keypoints.H36M17.joints[j] for j in np.flatnonzero(mask)} == {"left_shoulder", "left_elbow", "left_wrist"}
    # Every part names real joints of input13 (the model's and the protocol's profile) and hides them there.
    for part, joints in keypoints.BODY_PARTS.items():
        got = keypoints.body_part_mask(part, "input13")
        assert {keypoints.INPUT13.joints[j] for j in np.flatnonzero(got)} == set(joints), part
    # A part joint the profile lacks is skipped.
    toy = keypoints.KeypointProfile("toy_arm", ("left_hip", "right_hip", "left_shoulder", "right_shoulder",
                                                 "left_wrist"))
    assert keypoints.body_part_mask("left_arm", toy).tolist() == [False, False, True, False, True]
    with pytest.raises(ValueError, match="body part 'tail' unknown"):
        keypoints.body_part_mask("tail", "input13")
