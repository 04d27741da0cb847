"""The Human3.6M table's inputs on the real data: S11 on the authors' frames, ground-truth and detected 2D.

Skips without PRPOSE_H36M (the 3d-pose-baseline tree with Stacked Hourglass detections) or the authors' frame list
(../shared/data/h36m_eval_frames.json, or $PRPOSE_SHARED_DATA).
"""

import json
import os
import pathlib

import numpy as np
import pytest

from prpose import keypoints as kp, protocol
from prpose.eval import baselines
from prpose.views import common_frames, views_from_dataset

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("PRPOSE_SHARED_DATA", ROOT.parent / "shared" / "data"))
FRAMES = SHARED / "h36m_eval_frames.json"

pytestmark = pytest.mark.skipif(not os.environ.get("PRPOSE_H36M") or not FRAMES.is_file(),
                                reason="needs PRPOSE_H36M (3d-pose-baseline tree) and h36m_eval_frames.json")


@pytest.fixture(scope="module")
def s11(tmp_path_factory):
    from prpose import cli

    out = tmp_path_factory.mktemp("h36m") / "s11"
    assert cli.main(["prep", "h36m", os.environ["PRPOSE_H36M"], "--out", str(out), "--subjects", "S11",
                     "--keep-frames", str(FRAMES)]) == 0
    return out


def test_authors_frames_with_both_2d_sources(s11):
    from prpose.dataset import load_dataset

    ds = load_dataset(s11)
    listed = json.loads(FRAMES.read_text())["frames"]
    expected = sum(len(v) for k, v in listed.items() if k.startswith("S11:"))
    assert len(ds.indices(split="test")) == expected  # exactly the authors' S11 frames
    gt = views_from_dataset(ds, "test", profile="h36m17")
    det = views_from_dataset(ds, "test", source="detected", profile="h36m17")
    assert gt.num_cameras == det.num_cameras == 4
    assert det.settings["absent_joints"] == ["nose"]
    assert det.num_frames + det.settings["dropped_frames"] == expected
    assert det.num_frames > 0.95 * expected
    # Detections sit near the projected ground truth (REFERENCE.md: limb joints median ~9 px), left on left.
    a, b = common_frames(gt, det)
    limbs = [kp.H36M17.index(n) for n in ("left_wrist", "right_wrist", "left_knee", "right_knee", "left_elbow")]
    err = np.linalg.norm(a.keypoints2d[..., limbs, :] - b.keypoints2d[..., limbs, :], axis=-1)
    assert 3.0 < np.median(err) < 20.0
    lw, rw = kp.H36M17.index("left_wrist"), kp.H36M17.index("right_wrist")
    swapped = np.linalg.norm(a.keypoints2d[..., lw, :] - b.keypoints2d[..., rw, :], axis=-1)
    assert np.median(swapped) > 3 * np.median(err)


def test_2d_baseline_on_real_frames_prefers_clean_2d(s11):
    sub = {}
    for source in ("gt", "detected"):
        v = views_from_dataset(s11, "test", max_frames=400, source=source, profile="h36m17")
        sub[source] = v
    gt, det = common_frames(sub["gt"], sub["detected"])
    res = {s: protocol.cross_view_hit_at_k(baselines.Keypoints2DMethod(), v, ks=(1, 10)).mean
           for s, v in (("gt", gt), ("detected", det))}
    assert 0.02 < res["detected"][0] <= res["gt"][0] < 0.9
