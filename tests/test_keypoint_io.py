import json

import numpy as np
import pytest

from prpose.errors import PrposeError
from prpose.keypoint_io import read_keypoints


def _coco_record(image_id, rng, missing=()):
    xy = rng.uniform(0, 500, size=(17, 2))
    v = np.full(17, 2.0)
    v[list(missing)] = 0
    return {"image_id": image_id, "category_id": 1, "score": 0.9,
            "keypoints": np.concatenate([xy, v[:, None]], axis=1).ravel().tolist()}, xy


def test_coco_json_reads_keypoints_and_marks_v0_missing(tmp_path):
    rng = np.random.default_rng(0)
    (r0, xy0), (r1, xy1) = _coco_record(7, rng, missing=[3, 4]), _coco_record(7, rng)
    path = tmp_path / "dets.json"
    path.write_text(json.dumps([r0, r1]))
    result = read_keypoints(path)
    assert result.profile == "coco17"
    np.testing.assert_allclose(result.keypoints[0], xy0, rtol=1e-6)
    np.testing.assert_allclose(result.keypoints[1], xy1, rtol=1e-6)
    assert result.scores[0, 3] == 0 and result.scores[0, 4] == 0 and result.scores[0, 0] == 1
    assert result.ids == ("image 7 #0", "image 7 #1")


def test_npz_with_scores_and_profile(tmp_path):
    path = tmp_path / "poses.npz"
    np.savez(path, keypoints=np.ones((3, 13, 2)), scores=np.full((3, 13), 0.5), profile="input13")
    result = read_keypoints(path)
    assert result.keypoints.shape == (3, 13, 2) and result.profile == "input13"
    np.testing.assert_array_equal(result.scores, 0.5)


def test_npz_never_guesses_a_profile(tmp_path):
    path = tmp_path / "poses.npz"
    np.savez(path, keypoints=np.ones((2, 17, 2)))
    with pytest.raises(PrposeError, match=r"does not say which keypoint profile its 17 joints follow; pass "
                                          r"--profile \(17 joints fit: coco17, h36m17\)"):
        read_keypoints(path)
    assert read_keypoints(path, profile="h36m17").profile == "h36m17"
    # Even a joint count that only one profile has is not taken on trust: 13 joints need --profile input13.
    np.savez(path, keypoints=np.ones((2, 13, 2)))
    with pytest.raises(PrposeError, match=r"its 13 joints .*\(13 joints fit: input13\)"):
        read_keypoints(path)
    assert read_keypoints(path, profile="input13").profile == "input13"
    with pytest.raises(PrposeError, match="poses have 13 joints but profile 'coco17' has 17"):
        read_keypoints(path, profile="coco17")


def test_a_files_own_profile_wins_and_a_contradicting_flag_is_an_error(tmp_path):
    path = tmp_path / "poses.npz"
    np.savez(path, keypoints=np.ones((2, 17, 2)), profile="h36m17")
    assert read_keypoints(path).profile == "h36m17"
    assert read_keypoints(path, profile="h36m17").profile == "h36m17"
    with pytest.raises(PrposeError, match=r"holds keypoints \(profile 'h36m17'\) but --profile 'coco17' was given"):
        read_keypoints(path, profile="coco17")
    coco = tmp_path / "dets.json"
    coco.write_text(json.dumps([_coco_record(1, np.random.default_rng(0))[0]]))
    with pytest.raises(PrposeError, match=r"holds COCO keypoint results \(profile 'coco17'\) but --profile "
                                          r"'h36m17'"):
        read_keypoints(coco, profile="h36m17")
    with pytest.raises(PrposeError, match="unknown keypoint profile 'openpose'"):
        read_keypoints(coco, profile="openpose")


@pytest.mark.parametrize(
    "content, message",
    [
        (dict(keypoints=np.ones((2, 12, 2))), "does not say which keypoint profile its 12 joints"),
        (dict(keypoints=np.ones((2, 13))), r"expected \(N, J, 2\)"),
        (dict(points=np.ones((2, 13, 2)), profile="input13"), "missing array 'keypoints'"),
        (dict(keypoints=np.ones((2, 13, 2)), scores=np.ones((2, 12)), profile="input13"), "'scores' has shape"),
        (dict(keypoints=np.ones((0, 13, 2)), profile="input13"), "holds no poses"),
        (dict(keypoints=np.array([["a", "b"]]), profile="input13"), "'keypoints' has dtype <U1; expected numbers"),
        (dict(keypoints=np.ones((2, 13, 2)), profile=np.array(["input13", "coco17"])), "expected one string"),
        (dict(keypoints=np.ones((2, 13, 2)), profile="input13", scores=np.full((2, 13), np.nan)), "scores hold NaN"),
    ],
)
def test_malformed_npz_gives_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **content)
    with pytest.raises(PrposeError, match=message):
        read_keypoints(path)


def test_nan_keypoints_are_read_as_they_come(tmp_path):
    """Rows are judged by the embedding step (skipped and reported there), not refused by the reader."""
    keypoints = np.ones((2, 13, 2))
    keypoints[0, 5] = np.nan
    keypoints[1] = np.nan
    scores = np.ones((2, 13))
    scores[0, 5] = 0
    path = tmp_path / "ok.npz"
    np.savez(path, keypoints=keypoints, scores=scores, profile="input13")
    result = read_keypoints(path)
    assert result.scores[0, 5] == 0 and np.isnan(result.keypoints[1]).all()


def test_malformed_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("[{\"image_id\": 1, \"keypoints\": [1, 2, 2]}]")
    with pytest.raises(PrposeError, match="record 0 has 3 values; expected 51"):
        read_keypoints(path)
    path.write_text("{not json")
    with pytest.raises(PrposeError, match="not valid JSON"):
        read_keypoints(path)
    path.write_text("[]")
    with pytest.raises(PrposeError, match="no keypoint records"):
        read_keypoints(path)


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(PrposeError, match="no such keypoint file or folder"):
        read_keypoints(tmp_path / "nope.npz")
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(PrposeError, match="not a readable .npz"):
        read_keypoints(empty)
    csv = tmp_path / "x.csv"
    csv.write_text("1,2")
    with pytest.raises(PrposeError, match="unsupported keypoint file type"):
        read_keypoints(csv)


def test_npz_pose3d_is_passed_through_and_checked(tmp_path):
    path = tmp_path / "poses.npz"
    pose3d = np.random.default_rng(0).normal(size=(2, 17, 3))
    np.savez(path, keypoints=np.ones((2, 13, 2)), pose3d=pose3d, profile="input13")
    np.testing.assert_allclose(read_keypoints(path).pose3d, pose3d, rtol=1e-6)
    np.savez(path, keypoints=np.ones((2, 13, 2)), pose3d=pose3d[:1], profile="input13")
    with pytest.raises(PrposeError, match="'pose3d' has shape"):
        read_keypoints(path)


# --- OpenPose BODY_25 -----------------------------------------------------------------------------------------

def _openpose_person(rng, missing=()):
    xy = rng.uniform(0, 640, size=(25, 2))
    c = rng.uniform(0.4, 0.95, size=25)
    xy[list(missing)] = 0
    c[list(missing)] = 0  # OpenPose writes 0, 0, 0 for a joint it did not find
    return {"person_id": [-1], "pose_keypoints_2d": np.concatenate([xy, c[:, None]], 1).ravel().tolist(),
            "face_keypoints_2d": [], "hand_left_keypoints_2d": [], "hand_right_keypoints_2d": []}, xy, c


def test_openpose_file_and_folder(tmp_path):
    rng = np.random.default_rng(1)
    (p0, xy0, c0), (p1, xy1, _), (p2, xy2, _) = (_openpose_person(rng, missing=[19, 20]), _openpose_person(rng),
                                                 _openpose_person(rng))
    folder = tmp_path / "json"
    folder.mkdir()
    (folder / "clip_000000000001_keypoints.json").write_text(json.dumps({"version": 1.3, "people": [p2]}))
    (folder / "clip_000000000000_keypoints.json").write_text(json.dumps({"version": 1.3, "people": [p0, p1]}))
    (folder / "clip_000000000002_keypoints.json").write_text(json.dumps({"version": 1.3, "people": []}))
    (folder / "notes.txt").write_text("not read")
    one = read_keypoints(folder / "clip_000000000000_keypoints.json")
    assert one.profile == "body25" and one.keypoints.shape == (2, 25, 2)
    np.testing.assert_allclose(one.keypoints[0], xy0, rtol=1e-6)
    np.testing.assert_allclose(one.scores[0], c0, rtol=1e-6)
    assert one.scores[0, 19] == 0 and one.scores[0, 20] == 0
    both = read_keypoints(folder)
    assert both.ids == ("clip_000000000000_keypoints #0", "clip_000000000000_keypoints #1",
                        "clip_000000000001_keypoints #0")
    np.testing.assert_allclose(both.keypoints[2], xy2, rtol=1e-6)
    # By name: BODY_25 index 5 is the left shoulder, index 12 the left hip.
    from prpose import keypoints as kp
    k13 = kp.convert(both.keypoints, "body25", "input13")
    np.testing.assert_allclose(k13[1, kp.INPUT13.index("left_shoulder")], xy1[5], rtol=1e-6)
    np.testing.assert_allclose(k13[1, kp.INPUT13.index("left_hip")], xy1[12], rtol=1e-6)
    with pytest.raises(PrposeError, match="holds OpenPose BODY_25 keypoints .* --profile 'coco17'"):
        read_keypoints(folder, profile="coco17")


@pytest.mark.parametrize("content, message", [
    ({"people": [{"pose_keypoints_2d": [1.0] * 54}]}, r"person 0's 'pose_keypoints_2d' has 54 values; expected 75"),
    ({"people": [{"pose_keypoints_2d": ["1"] * 75}]}, "holds a non-number '1'"),
    ({"people": [{"face_keypoints_2d": []}]}, "has a NoneType; expected 75"),
    ({"people": {"a": 1}}, "with a 'people' list"),
    ({"people": []}, r"no person in 1 OpenPose file"),
])
def test_malformed_openpose(tmp_path, content, message):
    path = tmp_path / "frame_keypoints.json"
    path.write_text(json.dumps(content))
    with pytest.raises(PrposeError, match=message):
        read_keypoints(path)


def test_empty_openpose_folder(tmp_path):
    with pytest.raises(PrposeError, match="folder holds no .json files"):
        read_keypoints(tmp_path)


# --- MediaPipe ------------------------------------------------------------------------------------------------

def _mediapipe(rng, n=2, width=1280, height=720):
    xy = rng.uniform(0.1, 0.9, size=(n, 33, 2))
    vis = rng.uniform(0, 1, size=(n, 33))
    poses = [{"id": f"frame {i}", "landmarks": [{"x": x, "y": y, "z": -0.1, "visibility": v}
                                                for (x, y), v in zip(xy[i].tolist(), vis[i].tolist())]}
             for i in range(n)]
    return {"format": "mediapipe33", "image_width": width, "image_height": height, "poses": poses}, xy, vis


def test_mediapipe_json_and_npz_give_pixels(tmp_path):
    rng = np.random.default_rng(2)
    content, xy, vis = _mediapipe(rng)
    path = tmp_path / "landmarks.json"
    path.write_text(json.dumps(content))
    result = read_keypoints(path)
    assert result.profile == "mediapipe33" and result.ids == ("frame 0", "frame 1")
    np.testing.assert_allclose(result.keypoints, xy * [1280, 720], rtol=1e-5)  # x by width, y by height
    np.testing.assert_allclose(result.scores, vis, rtol=1e-6)
    npz = tmp_path / "landmarks.npz"
    np.savez(npz, landmarks=xy, visibility=vis, image_size=np.array([1280, 720]))
    from_npz = read_keypoints(npz)
    np.testing.assert_allclose(from_npz.keypoints, result.keypoints, rtol=1e-5)
    assert from_npz.profile == "mediapipe33"
    # A per-pose image size overrides the file's; visibility is optional.
    del content["image_width"], content["image_height"]
    for pose in content["poses"]:
        pose.update(image_width=100, image_height=50)
        for mark in pose["landmarks"]:
            del mark["visibility"]
    path.write_text(json.dumps(content))
    result = read_keypoints(path)
    np.testing.assert_allclose(result.keypoints, xy * [100, 50], rtol=1e-5)
    assert (result.scores == 1).all()


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c.pop("image_width"), "needs positive 'image_width' and 'image_height'"),
    (lambda c: c["poses"][1]["landmarks"].pop(), "pose 1 has 32 landmarks; expected 33"),
    (lambda c: c["poses"][0]["landmarks"][4].update(x="0.5"), "pose 0 landmark 4 is"),
    (lambda c: c.update(poses={"x": 1}), "'poses' is a dict; expected a list"),
    (lambda c: c.update(poses=[]), "holds no poses"),
])
def test_malformed_mediapipe_json(tmp_path, mutate, message):
    content, _, _ = _mediapipe(np.random.default_rng(3))
    mutate(content)
    path = tmp_path / "landmarks.json"
    path.write_text(json.dumps(content))
    with pytest.raises(PrposeError, match=message):
        read_keypoints(path)


def test_malformed_mediapipe_npz_and_unknown_json(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, landmarks=np.ones((2, 33, 2)))
    with pytest.raises(PrposeError, match="needs 'image_size'"):
        read_keypoints(path)
    np.savez(path, landmarks=np.ones((2, 17, 2)), image_size=[10, 10])
    with pytest.raises(PrposeError, match=r"expected \(N, 33, 2\)"):
        read_keypoints(path)
    other = tmp_path / "x.json"
    other.write_text(json.dumps({"frames": []}))
    with pytest.raises(PrposeError, match="unrecognised JSON layout .* keys frames"):
        read_keypoints(other)
