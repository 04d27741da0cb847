import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prpose.errors import PrposeError
from prpose.normalize import normalize_2d, normalize_3d

TORSO = (1, 2, 7, 8)  # input13: left/right shoulder, left/right hip


def ref_normalize_2d(kp):
    """Independent float64 reference of REFERENCE.md's 2D normalisation (all keypoints visible)."""
    kp = np.asarray(kp, np.float64)
    offset = (kp[..., 7, :] + kp[..., 8, :]) / 2
    dists = [np.linalg.norm(kp[..., i, :] - kp[..., j, :], axis=-1) for i, j in itertools.combinations(TORSO, 2)]
    return (kp - offset[..., None, :]) * (0.5 / np.max(dists, axis=0))[..., None, None]


def ref_normalize_3d(p):
    p = np.asarray(p, np.float64)
    size = np.linalg.norm(p[..., 7, :] - p[..., 0, :], axis=-1) + np.linalg.norm(p[..., 8, :] - p[..., 7, :], axis=-1)
    return (p - p[..., :1, :]) / size[..., None, None]


def test_normalize_2d_matches_float64_reference():
    kp = np.random.default_rng(0).normal(size=(3, 5, 13, 2)) * 80 + 400
    out, valid = normalize_2d(kp.astype(np.float32))
    assert out.shape == (3, 5, 13, 2) and valid.shape == (3, 5) and bool(valid.all())
    np.testing.assert_allclose(out, ref_normalize_2d(kp), atol=2e-6)


def test_normalize_2d_hand_worked_square_torso():
    kp = np.zeros((13, 2))
    kp[1], kp[2], kp[7], kp[8] = (11, 22), (9, 22), (11, 20), (9, 20)  # 2x2 square, hips centred at (10, 20)
    kp[0] = (10, 23)
    out, valid = normalize_2d(kp)
    assert bool(valid)
    s = 0.5 / np.sqrt(8.0)  # the diagonal is the largest torso distance
    np.testing.assert_allclose(out[0], (0.0, 3 * s), atol=1e-6)
    np.testing.assert_allclose(out[1], (s, 2 * s), atol=1e-6)
    np.testing.assert_allclose(out[7] + out[8], (0.0, 0.0), atol=1e-6)


def test_normalize_2d_masked_ignores_invisible_values_and_zeroes_them():
    rng = np.random.default_rng(1)
    kp = rng.normal(size=(4, 13, 2)) * 50
    vis = np.ones((4, 13), bool)
    vis[:, [0, 5, 10]] = False
    out1, v1 = normalize_2d(kp, vis)
    kp2 = kp.copy()
    kp2[:, [0, 5, 10]] = 1e6  # garbage at invisible keypoints must not matter
    out2, v2 = normalize_2d(kp2, vis)
    np.testing.assert_allclose(out1, out2, atol=1e-6)
    assert bool(v1.all() and v2.all())
    assert np.all(np.asarray(out1)[:, [0, 5, 10]] == 0)
    # Visible keypoints: same as the full normalisation (torso fully visible).
    np.testing.assert_allclose(np.asarray(out1)[:, vis[0]], ref_normalize_2d(kp)[:, vis[0]], atol=1e-5)


def test_normalize_2d_one_hip_missing_uses_the_visible_hip():
    kp = np.random.default_rng(2).normal(size=(13, 2)) * 30
    vis = np.ones(13, bool)
    vis[8] = False  # right hip
    out, valid = normalize_2d(kp, vis)
    assert bool(valid)
    np.testing.assert_allclose(out[7], (0.0, 0.0), atol=1e-6)  # left hip is the origin
    t = kp[[1, 2, 7]]
    size = max(np.linalg.norm(t[i] - t[j]) for i, j in itertools.combinations(range(3), 2))
    np.testing.assert_allclose(out[0], (kp[0] - kp[7]) * 0.5 / size, rtol=1e-5)
    assert np.all(np.asarray(out[8]) == 0)


def test_normalize_2d_no_hips_uses_shoulder_mean_and_one_torso_joint_is_invalid():
    kp = np.random.default_rng(3).normal(size=(13, 2)) * 30
    vis = np.ones(13, bool)
    vis[[7, 8]] = False
    out, valid = normalize_2d(kp, vis)
    assert bool(valid)
    np.testing.assert_allclose(out[1] + out[2], (0.0, 0.0), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out[1] - out[2]), 0.5, rtol=1e-5)
    vis[1] = False  # only the right shoulder left: no torso distance
    out, valid = normalize_2d(kp, vis)
    assert not bool(valid) and np.all(np.asarray(out) == 0)


def test_normalize_2d_nonfinite_keypoints_count_as_invisible():
    kp = np.random.default_rng(4).normal(size=(13, 2))
    bad = kp.copy()
    bad[4] = np.nan
    bad[6, 1] = np.inf
    vis = np.ones(13, bool)
    vis[[4, 6]] = False
    out_nan, v1 = normalize_2d(bad)
    out_mask, v2 = normalize_2d(kp, vis)
    assert np.all(np.isfinite(out_nan))
    np.testing.assert_allclose(out_nan, out_mask, atol=1e-6)


def test_normalize_2d_degenerate_torso_is_invalid_zero_and_gradients_finite():
    kp = np.zeros((2, 13, 2), np.float32)
    kp[1] = np.random.default_rng(5).normal(size=(13, 2))
    kp[1, [1, 2, 7, 8]] = 3.0  # torso collapsed onto one point
    out, valid = normalize_2d(kp)
    assert not bool(valid.any()) and np.all(np.asarray(out) == 0)

    def f(x):
        return jnp.sum(normalize_2d(x)[0] ** 2)

    for x in (kp, np.random.default_rng(6).normal(size=(2, 13, 2)).astype(np.float32)):
        x = x.copy()
        x[..., 0, :] = x[..., 7, :]  # coincident joints: |d| = 0 pairs must not give NaN gradients
        g = jax.grad(f)(jnp.asarray(x))
        assert np.all(np.isfinite(np.asarray(g)))


def test_normalize_2d_jit_visible_broadcast_and_dtypes():
    kp = np.random.default_rng(7).normal(size=(3, 13, 2)).astype(np.float32)
    vis = np.ones(13, bool)
    vis[3] = False
    out, valid = jax.jit(normalize_2d)(kp, vis)
    assert out.shape == (3, 13, 2) and out.dtype == jnp.float32
    np.testing.assert_allclose(out, normalize_2d(kp, np.broadcast_to(vis, (3, 13)))[0], atol=1e-6)
    out_int, _ = normalize_2d(np.arange(26).reshape(13, 2) ** 2)
    assert jnp.issubdtype(out_int.dtype, jnp.floating)


@pytest.mark.parametrize("shape", [(13, 3), (12, 2), (13,)])
def test_normalize_2d_bad_shape_names_argument(shape):
    with pytest.raises(PrposeError, match=r"normalize_2d.*'keypoints'.*\(\.\.\., 13, 2\)"):
        normalize_2d(np.zeros(shape))


def test_normalize_2d_bad_visible_shape():
    with pytest.raises(PrposeError, match="'visible'"):
        normalize_2d(np.zeros((4, 13, 2)), np.ones((4, 12), bool))
    with pytest.raises(PrposeError, match="'visible'"):
        normalize_2d(np.zeros((4, 13, 2)), np.ones((3, 13), bool))


def test_normalize_3d_matches_reference_and_unit_torso():
    p = np.random.default_rng(8).normal(size=(6, 17, 3))
    out, valid = normalize_3d(p.astype(np.float32))
    assert bool(valid.all())
    np.testing.assert_allclose(out, ref_normalize_3d(p), atol=2e-5)
    out = np.asarray(out, np.float64)
    np.testing.assert_allclose(out[:, 0], 0.0, atol=1e-7)
    length = np.linalg.norm(out[:, 7] - out[:, 0], axis=-1) + np.linalg.norm(out[:, 8] - out[:, 7], axis=-1)
    np.testing.assert_allclose(length, 1.0, rtol=1e-5)


def test_normalize_3d_hand_worked():
    p = np.zeros((17, 3))
    p[:] = (1.0, 2.0, 3.0)
    p[7] = (1.0, 2.0, 3.3)  # spine 0.3 above pelvis
    p[8] = (1.0, 2.4, 3.3)  # thorax 0.4 from spine
    p[10] = (1.0, 2.0, 4.4)
    out, valid = normalize_3d(p)
    assert bool(valid)
    np.testing.assert_allclose(out[10], (0.0, 0.0, 1.4 / 0.7), rtol=1e-6)


def test_normalize_3d_degenerate_and_nonfinite_rows_are_invalid_zero_with_finite_grad():
    p = np.random.default_rng(9).normal(size=(3, 17, 3)).astype(np.float32)
    p[0] = 0.0
    p[1, 5, 2] = np.nan
    out, valid = normalize_3d(p)
    assert valid.tolist() == [False, False, True]
    assert np.all(np.asarray(out[:2]) == 0) and np.all(np.isfinite(np.asarray(out)))
    g = jax.grad(lambda x: jnp.sum(normalize_3d(x)[0]))(jnp.asarray(p))
    assert np.all(np.isfinite(np.asarray(g)))


def test_normalize_3d_bad_shape():
    with pytest.raises(PrposeError, match=r"normalize_3d.*'poses'.*\(\.\.\., 17, 3\)"):
        normalize_3d(np.zeros((2, 13, 3)))


def test_normalize_2d_finds_torso_joints_by_name_in_any_profile():
    """input14 (head appended) and a shuffled profile normalise the shared joints exactly like input13."""
    from prpose import keypoints as kpmod

    rng = np.random.default_rng(3)
    x14 = rng.uniform(0, 500, size=(5, 14, 2)).astype(np.float32)
    n14, v14 = normalize_2d(x14, profile="input14")
    n13, v13 = normalize_2d(x14[:, :13])
    np.testing.assert_allclose(np.asarray(n14)[:, :13], np.asarray(n13), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(v14, v13)
    order = rng.permutation(14)
    shuffled = kpmod.KeypointProfile("shuffled14", tuple(kpmod.INPUT14.joints[i] for i in order))
    ns, _ = normalize_2d(x14[:, order], profile=shuffled)
    np.testing.assert_allclose(np.asarray(ns), np.asarray(n14)[:, order], rtol=1e-6, atol=1e-6)


def test_normalize_2d_rejects_a_profile_without_torso():
    from prpose.keypoints import KeypointProfile

    with pytest.raises(PrposeError, match="lacks the torso joint"):
        normalize_2d(np.zeros((1, 2, 2)), profile=KeypointProfile("heads", ("nose", "head")))
    with pytest.raises(PrposeError, match=r"expected \(\.\.\., 14, 2\) \(input14"):
        normalize_2d(np.zeros((1, 13, 2)), profile="input14")
