"""Linear probes: closed-form ridge against NumPy least squares, viewpoint geometry, label probe."""

import math

import numpy as np
import pytest

from prpose.eval import probes
from prpose import keypoints as kp
from prpose.errors import PrposeError


def test_ridge_without_penalty_equals_least_squares_and_recovers_a_linear_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6))
    w_true, c_true = rng.normal(size=(6, 3)), rng.normal(size=3)
    y = x @ w_true + c_true
    w, c = probes.fit_ridge(x, y, lam=0.0)
    np.testing.assert_allclose(w, w_true, atol=1e-9)
    np.testing.assert_allclose(c, c_true, atol=1e-9)
    noisy = y + rng.normal(scale=0.1, size=y.shape)
    ref = np.linalg.lstsq(np.c_[x, np.ones(200)], noisy, rcond=None)[0]
    w, c = probes.fit_ridge(x, noisy, lam=0.0)
    np.testing.assert_allclose(np.r_[w, c[None]], ref, atol=1e-9)
    # The penalty shrinks the weights.
    w_pen, _ = probes.fit_ridge(x, noisy, lam=10.0)
    assert np.linalg.norm(w_pen) < np.linalg.norm(w)


def test_r2_and_circular_error():
    y = np.random.default_rng(1).normal(size=(50, 2))
    assert probes.r2_score(y, y) == 1.0
    assert probes.r2_score(y, np.broadcast_to(y.mean(0), y.shape)) == pytest.approx(0.0)
    np.testing.assert_allclose(probes.circular_error_deg(np.radians([170, 0, 90]), np.radians([-170, 360, -90])),
                               [20, 0, 180], atol=1e-9)


def _person_facing_plus_y():
    pose = np.zeros((1, 17, 3))
    pose[0, kp.H36M17.index("left_hip")] = (-0.1, 0, 1)  # facing +Y with Z up: the person's left is -X
    pose[0, kp.H36M17.index("right_hip")] = (0.1, 0, 1)
    pose[0, kp.H36M17.index("pelvis")] = (0, 0, 1)
    return pose


@pytest.mark.parametrize("center, az, el", [((0, 5, 1), 0, 0), ((-5, 0, 1), 90, 0), ((5, 0, 1), -90, 0),
                                            ((0, -5, 1), 180, 0), ((0, 3, 4), 0, 45)])
def test_relative_viewpoint_hand_cases(center, az, el):
    a, e = probes.relative_viewpoint(_person_facing_plus_y(), np.array(center, float))
    assert probes.circular_error_deg(a, math.radians(az))[0] == pytest.approx(0, abs=1e-9)
    assert math.degrees(e[0]) == pytest.approx(el)


def test_viewpoint_probe_decodes_a_linear_code_and_not_noise():
    rng = np.random.default_rng(2)
    az = rng.uniform(-np.pi, np.pi, 400)
    el = rng.uniform(-0.5, 0.5, 400)
    code = np.stack([np.cos(az), np.sin(az), el], 1)
    good = probes.viewpoint_probe(code[:300], az[:300], el[:300], code[300:], az[300:], el[300:], lam=1e-8)
    assert good["azimuth_error_deg"] < 1e-3 and good["elevation_error_deg"] < 1e-3
    noise = rng.normal(size=(400, 3))
    bad = probes.viewpoint_probe(noise[:300], az[:300], el[:300], noise[300:], az[300:], el[300:])
    assert bad["azimuth_error_deg"] > 60


def test_label_probe_separable_classes_and_unknown_labels():
    rng = np.random.default_rng(3)
    labels = np.array(["a", "b", "c"])[rng.integers(0, 3, 150)]
    x = (labels[:, None] == np.array(["a", "b", "c"])).astype(float) + rng.normal(scale=0.05, size=(150, 3))
    test_labels = labels[100:].copy()
    test_labels[:5] = "zzz"
    res = probes.label_probe(x[:100], labels[:100], x[100:], test_labels)
    assert res["accuracy"] == 1.0 and res["skipped"] == 5 and res["classes"] == 3


def test_pose_probe_and_bad_input():
    rng = np.random.default_rng(4)
    pose = rng.normal(size=(80, 17, 3))
    x = pose.reshape(80, -1) @ rng.normal(size=(51, 51))  # an invertible linear code of the pose
    res = probes.pose_probe(x[:60], pose[:60], x[60:], pose[60:], lam=0.0)
    assert res["r2"] == pytest.approx(1.0) and res["mpjpe"] < 1e-6
    with pytest.raises(PrposeError, match="fit_ridge"):
        probes.fit_ridge(np.zeros((3, 2)), np.zeros((4, 1)))
    with pytest.raises(PrposeError, match="non-finite"):
        probes.fit_ridge(np.array([[np.nan]]), np.zeros((1, 1)))
