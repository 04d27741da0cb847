import jax
import numpy as np
import pytest

from prpose.errors import PrposeError
from conftest import realistic_poses
from prpose.procrustes import np_mpjpe, pairwise_np_mpjpe, procrustes_align


def ref_align(src, tgt, mask=None):
    """Independent float64 Umeyama alignment of src (J, 3) onto tgt (J, 3) via NumPy SVD."""
    src, tgt = np.asarray(src, np.float64), np.asarray(tgt, np.float64)
    m = np.ones(len(src), bool) if mask is None else np.asarray(mask, bool)
    mu_s, mu_t = src[m].mean(0), tgt[m].mean(0)
    x, y = src[m] - mu_s, tgt[m] - mu_t
    # Find R (column-vector convention), s: min sum |s R x + t - y|^2 over proper rotations R.
    u, sig, vt = np.linalg.svd(y.T @ x)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    r = u @ d @ vt
    s = np.trace(np.diag(sig) @ d) / np.sum(x**2) if np.sum(x**2) > 0 else 0.0  # one joint: translation only
    return s * (src - mu_s) @ r.T + mu_t


def ref_np_mpjpe(a, b, mask=None):
    aligned = ref_align(a, b, mask)
    d = np.linalg.norm(aligned - np.asarray(b, np.float64), axis=-1)
    return d.mean() if mask is None else d[np.asarray(mask, bool)].mean()


def random_rotation(rng):
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def poses(rng, n, j=17):
    return rng.normal(size=(n, j, 3)) * 0.4


def test_np_mpjpe_matches_float64_reference():
    rng = np.random.default_rng(0)
    a, b = poses(rng, 20), poses(rng, 20)
    b[:5] = a[:5] + rng.normal(size=(5, 17, 3)) * 0.02  # near matches too, not only random pairs
    got = np.asarray(np_mpjpe(a.astype(np.float32), b.astype(np.float32)))
    ref = np.array([ref_np_mpjpe(x, y) for x, y in zip(a, b)])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    aligned = np.asarray(procrustes_align(a.astype(np.float32), b.astype(np.float32)))
    np.testing.assert_allclose(aligned, np.stack([ref_align(x, y) for x, y in zip(a, b)]), atol=2e-5)


def test_pairwise_equals_per_pair_reference():
    rng = np.random.default_rng(1)
    a, b = poses(rng, 7), poses(rng, 5)
    b[0] = a[3] @ random_rotation(rng).T * 1.7 + 0.3  # an exact match hides in the batch
    got = np.asarray(pairwise_np_mpjpe(a.astype(np.float32), b.astype(np.float32)))
    assert got.shape == (7, 5)
    ref = np.array([[ref_np_mpjpe(x, y) for y in b] for x in a])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert got[3, 0] < 1e-5


def test_invariant_to_similarity_transform_of_the_first_argument():
    rng = np.random.default_rng(2)
    a, b = poses(rng, 6), poses(rng, 6)
    base = np.asarray(np_mpjpe(a, b))
    for _ in range(3):
        r, s, t = random_rotation(rng), rng.uniform(0.2, 5.0), rng.normal(size=3)
        moved = s * a @ r.T + t
        np.testing.assert_allclose(np_mpjpe(moved.astype(np.float32), b.astype(np.float32)), base,
                                   rtol=1e-4, atol=1e-5)
    # Identical up to a similarity transform: zero error (the alignment recovers it).
    r, s, t = random_rotation(rng), 2.5, np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(np_mpjpe(s * a @ r.T + t, a), 0.0, atol=1e-5)
    np.testing.assert_allclose(procrustes_align(s * a @ r.T + t, a), a, atol=1e-5)


def test_identical_poses_give_zero():
    a = poses(np.random.default_rng(3), 4).astype(np.float32)
    np.testing.assert_allclose(np_mpjpe(a, a), 0.0, atol=1e-6)
    d = np.asarray(pairwise_np_mpjpe(a, a))
    np.testing.assert_allclose(np.diag(d), 0.0, atol=1e-6)
    assert np.all(d[~np.eye(4, dtype=bool)] > 0.05)


def test_mirrored_pose_does_not_align_to_zero():
    rng = np.random.default_rng(4)
    a = poses(rng, 5)
    mirrored = a * [-1.0, 1.0, 1.0]  # a reflection: no proper rotation undoes it
    got = np.asarray(np_mpjpe(mirrored, a))
    ref = np.array([ref_np_mpjpe(x, y) for x, y in zip(mirrored, a)])
    assert np.all(got > 0.05)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    # Planar poses (z = 0) are the one case where a mirror IS a rotation (flip the plane over).
    flat = a * [1.0, 1.0, 0.0]
    np.testing.assert_allclose(np_mpjpe(flat * [-1.0, 1.0, 1.0], flat), 0.0, atol=1e-5)


def test_masked_joints_are_ignored():
    rng = np.random.default_rng(5)
    a = poses(rng, 3)
    r = random_rotation(rng)
    b = 1.3 * a @ r.T + 0.2
    mask = np.ones((3, 17), bool)
    mask[:, [2, 9, 16]] = False
    b_bad = b.copy()
    b_bad[:, [2, 9, 16]] += 5.0  # garbage at masked joints
    np.testing.assert_allclose(np_mpjpe(a, b_bad, mask), 0.0, atol=1e-5)
    assert np.all(np.asarray(np_mpjpe(a, b_bad)) > 0.1)
    # Against the reference with noise and a mask.
    b_noisy = b_bad + rng.normal(size=b.shape) * 0.05
    got = np.asarray(np_mpjpe(a, b_noisy, mask))
    ref = np.array([ref_np_mpjpe(x, y, m) for x, y, m in zip(a, b_noisy, mask)])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    # Every joint is transformed (masked ones too), with the fit of the unmasked ones.
    aligned = np.asarray(procrustes_align(a, b_bad, mask))
    np.testing.assert_allclose(aligned, b, atol=1e-5)


def test_degenerate_input_is_finite():
    rng = np.random.default_rng(6)
    point = np.ones((17, 3)) * 0.5
    b = poses(rng, 1)[0]
    for x, y in ((point, b), (b, point), (point, point), (np.zeros((17, 3)), np.zeros((17, 3)))):
        d = np.asarray(np_mpjpe(x, y))
        assert np.isfinite(d)
    # Source collapsed to a point: it aligns onto the target's centroid.
    np.testing.assert_allclose(np_mpjpe(point, b), np.linalg.norm(b - b.mean(0), axis=-1).mean(), rtol=1e-5)
    assert np.all(np.isfinite(np.asarray(pairwise_np_mpjpe(np.stack([point, b]), np.stack([b, point])))))
    assert np.isfinite(np.asarray(np_mpjpe(b, b, np.zeros(17, bool))))


def test_jit_and_bad_shapes():
    a = poses(np.random.default_rng(7), 3).astype(np.float32)
    np.testing.assert_allclose(jax.jit(np_mpjpe)(a, a[::-1]), np_mpjpe(a, a[::-1]), rtol=1e-6)
    with pytest.raises(PrposeError, match=r"pairwise_np_mpjpe.*\(N, J, 3\)"):
        pairwise_np_mpjpe(a, a[:, :12])
    with pytest.raises(PrposeError, match="'pred'"):
        np_mpjpe(a[..., :2], a[..., :2])
    with pytest.raises(PrposeError, match="'mask'"):
        np_mpjpe(a, a, np.ones((3, 16), bool))


@pytest.mark.parametrize("method", ["jacobi", "svd", "eigh"])
def test_every_solver_matches_reference_including_planar_and_collinear(method):
    rng = np.random.default_rng(8)
    a = poses(rng, 4)
    a[1] *= [1.0, 1.0, 0.0]  # planar: repeated eigenvalues in Horn's matrix
    a[2] = rng.normal(size=(17, 1)) * [1.0, 0.5, 0.2]  # collinear
    b = np.concatenate([poses(rng, 2), a[1:3] * [-1.0, 1.0, 1.0] @ random_rotation(rng).T])
    got = np.asarray(pairwise_np_mpjpe(a.astype(np.float32), b.astype(np.float32), method=method))
    ref = np.array([[ref_np_mpjpe(x, y) for y in b] for x in a])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np_mpjpe(a, b, method=method), np.diag(ref), rtol=1e-5, atol=1e-5)


def test_pairwise_blocks_equal_one_shot(monkeypatch):
    from prpose import procrustes

    rng = np.random.default_rng(9)
    a, b = poses(rng, 11).astype(np.float32), poses(rng, 6).astype(np.float32)
    whole = np.asarray(pairwise_np_mpjpe(a, b))  # one block
    monkeypatch.setattr(procrustes, "_PAIRS_PER_BLOCK", 6 * 4)  # 4 rows per block: 11 rows padded to 12
    blocked = np.asarray(procrustes.pairwise_np_mpjpe.__wrapped__(a, b))  # un-jitted: reads the patch
    assert blocked.shape == (11, 6)
    np.testing.assert_allclose(blocked, whole, rtol=1e-6, atol=1e-7)


def test_masked_pairwise_matches_float64_reference_on_realistic_poses():
    rng = np.random.default_rng(10)
    a = realistic_poses(24, rng).astype(np.float64)
    b = np.concatenate([a[:6] @ random_rotation(rng).T * 1.3 + 0.2, realistic_poses(10, rng).astype(np.float64)])  # matches too
    mask_a = rng.random(a.shape[:2]) > 0.25
    mask_b = rng.random(b.shape[:2]) > 0.25
    mask_a[0] = False  # a pose with no usable joint: 0 against everything
    mask_a[1, 3:] = False  # 3 joints, 2 common with some rows: only a translation / a line is fitted
    got = np.asarray(pairwise_np_mpjpe(a.astype(np.float32), b.astype(np.float32), mask_a, mask_b))
    ref = np.array([[ref_np_mpjpe(x, y, ma & mb) if (ma & mb).any() else 0.0 for y, mb in zip(b, mask_b)]
                    for x, ma in zip(a, mask_a)])
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=2e-5)
    assert np.all(got[0] == 0.0)
    # One mask only, and the same numbers as the broadcast per-pair np_mpjpe.
    got_a = np.asarray(pairwise_np_mpjpe(a.astype(np.float32), b.astype(np.float32), mask_a))
    per_pair = np.asarray(np_mpjpe(a[:, None].astype(np.float32), b[None].astype(np.float32),
                                   np.broadcast_to(mask_a[:, None], (len(a), len(b), 17))))
    np.testing.assert_allclose(got_a, per_pair, rtol=1e-4, atol=2e-5)


def test_masked_pairwise_blocks_equal_one_shot(monkeypatch):
    from prpose import procrustes

    rng = np.random.default_rng(11)
    a, b = poses(rng, 9).astype(np.float32), poses(rng, 5).astype(np.float32)
    ma, mb = rng.random((9, 17)) > 0.3, rng.random((5, 17)) > 0.3
    whole = np.asarray(pairwise_np_mpjpe(a, b, ma, mb))
    monkeypatch.setattr(procrustes, "_PAIRS_PER_BLOCK", 5 * 4)
    blocked = np.asarray(procrustes.pairwise_np_mpjpe.__wrapped__(a, b, ma, mb))
    np.testing.assert_allclose(blocked, whole, rtol=1e-6, atol=1e-7)


def test_pairwise_mask_shape_is_checked():
    a = np.zeros((3, 17, 3), np.float32)
    with pytest.raises(PrposeError, match="'mask'"):
        pairwise_np_mpjpe(a, a, np.ones((3, 16), bool))


def test_unknown_method():
    with pytest.raises(PrposeError, match="unknown method 'qr'"):
        np_mpjpe(np.ones((17, 3)), np.ones((17, 3)), method="qr")
