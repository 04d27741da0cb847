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


def test_npz_guesses_profile_from_joint_count(tmp_path):
    path = tmp_path / "poses.npz"
    np.savez(path, keypoints=np.ones((2, 17, 2)))
    with pytest.raises(PrposeError, match="cannot tell the keypoint profile of 17 joints"):
        read_keypoints(path)
    assert read_keypoints(path, profile="h36m17").profile == "h36m17"


@pytest.mark.parametrize(
    "content, message",
    [
        (dict(keypoints=np.ones((2, 12, 2))), "cannot tell the keypoint profile of 12"),
        (dict(keypoints=np.ones((2, 13))), r"expected \(N, J, 2\)"),
        (dict(points=np.ones((2, 13, 2))), "missing array 'keypoints'"),
        (dict(keypoints=np.ones((2, 13, 2)), scores=np.ones((2, 12))), "'scores' has shape"),
        (dict(keypoints=np.full((1, 13, 2), np.nan)), "NaN or infinite"),
        (dict(keypoints=np.ones((0, 13, 2))), "holds no poses"),
    ],
)
def test_malformed_npz_gives_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **content)
    with pytest.raises(PrposeError, match=message):
        read_keypoints(path)


def test_nan_keypoint_marked_missing_is_accepted(tmp_path):
    keypoints = np.ones((1, 13, 2))
    keypoints[0, 5] = np.nan
    scores = np.ones((1, 13))
    scores[0, 5] = 0
    path = tmp_path / "ok.npz"
    np.savez(path, keypoints=keypoints, scores=scores)
    assert read_keypoints(path).scores[0, 5] == 0


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
    with pytest.raises(PrposeError, match="no such keypoint file"):
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
    np.savez(path, keypoints=np.ones((2, 13, 2)), pose3d=pose3d)
    np.testing.assert_allclose(read_keypoints(path).pose3d, pose3d, rtol=1e-6)
    np.savez(path, keypoints=np.ones((2, 13, 2)), pose3d=pose3d[:1])
    with pytest.raises(PrposeError, match="'pose3d' has shape"):
        read_keypoints(path)
