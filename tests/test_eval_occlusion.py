"""Occlusion settings: exact structured patterns, random rates, and the sweep's known answers."""

import numpy as np
import pytest

from prpose import keypoints as kp, protocol
from prpose.eval import baselines, occlusion
from prpose.errors import PrposeError
from prpose.views import views_from_cameras

TORSO = [kp.INPUT13.index(n) for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip")]


# The evaluation's default patterns (the same joints as before the shared vocabulary, then named "left arm",
# "right leg", "lower body") and other parts of prpose.keypoints.BODY_PARTS, written out by hand.
EXPECTED_HIDDEN = {
    "left_forearm": {"left_elbow", "left_wrist"},
    "right_lower_leg": {"right_knee", "right_ankle"},
    "lower_legs": {"left_knee", "right_knee", "left_ankle", "right_ankle"},
    "forearms": {"left_elbow", "right_elbow", "left_wrist", "right_wrist"},
    "left_arm": {"left_shoulder", "left_elbow", "left_wrist"},
    "lower_body": {"left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"},
}


@pytest.mark.parametrize("pattern", list(EXPECTED_HIDDEN))
def test_patterns_hide_exactly_their_joints(pattern):
    vis = occlusion.pattern_mask(pattern, (2, 3))
    hidden = {kp.INPUT13.joints[j] for j in np.flatnonzero(~vis[1, 2])}
    assert hidden == EXPECTED_HIDDEN[pattern]
    assert (vis == vis[0, 0]).all()


def test_defaults_and_every_body_part_keep_the_query_normalisable():
    assert set(occlusion.DEFAULT_PATTERNS) <= set(EXPECTED_HIDDEN)
    for part in kp.BODY_PARTS:
        assert occlusion.pattern_mask(part, ())[TORSO].sum() >= 2, part


def test_unknown_pattern_and_bad_rate_are_named():
    with pytest.raises(PrposeError, match="left tail"):
        occlusion.pattern_mask("left tail", (1,))
    with pytest.raises(PrposeError, match="rate"):
        occlusion.random_mask(1.0, (1,), np.random.default_rng(0))


def test_random_mask_rate_and_torso_guarantee():
    rng = np.random.default_rng(0)
    vis = occlusion.random_mask(0.3, (20000,), rng)
    limbs = np.setdiff1d(np.arange(13), TORSO)
    assert abs((~vis[:, limbs]).mean() - 0.3) < 0.01  # limbs: exactly the requested rate
    assert (vis[:, TORSO].sum(1) >= 2).all()  # always normalisable
    assert occlusion.random_mask(0.0, (10,), rng).all()
    # Deterministic given the seed: every method sees the same occluded queries.
    a = occlusion.random_mask(0.5, (50,), np.random.default_rng(7))
    b = occlusion.random_mask(0.5, (50,), np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def views():
    from prpose.camera import ring_rig
    from prpose.synthetic import generate_motions

    return views_from_cameras(np.concatenate(generate_motions(2, 20, seed=3)), ring_rig(3, 4.0, 1.5))


def test_sweep_known_answers(views):
    two_d = baselines.Keypoints2DMethod()
    sweep = occlusion.occlusion_sweep(two_d, views, rates=(0.0, 0.4), patterns=("lower_legs",), ks=(1, 10))
    clean = protocol.cross_view_hit_at_k(two_d, views, ks=(1, 10))
    by = {r["setting"]: r for r in sweep["settings"]}
    # Rate 0 is the clean protocol.
    assert by["random 0%"]["mean"]["hit@1"] == pytest.approx(clean.mean[0])
    assert by["random 0%"]["hidden_fraction"] == 0.0
    assert by["lower_legs"]["hidden_fraction"] == pytest.approx(4 / 13)
    assert all(r["unnormalisable_queries"] == 0 for r in sweep["settings"])
    # The oracle ignores 2D: occlusion cannot hurt it.
    oracle = occlusion.occlusion_sweep(baselines.OracleMethod(), views, rates=(0.4,), patterns=("left_forearm",),
                                       ks=(1,))
    assert all(r["mean"]["hit@1"] == 1.0 for r in oracle["settings"])


def test_occluded_2d_features_zero_the_hidden_keypoints(views):
    vis = occlusion.pattern_mask("left_forearm", (views.num_frames,))
    x = baselines.normalized_2d_features(views.keypoints2d[:, 0], vis).reshape(-1, 13, 2)
    assert (x[:, [kp.INPUT13.index("left_elbow"), kp.INPUT13.index("left_wrist")]] == 0).all()
    assert (np.abs(x[:, kp.INPUT13.index("right_wrist")]).sum(-1) > 0).all()
