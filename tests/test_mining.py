"""In-batch negative mining on hand-built batches, and the pose-distance matrix against a NumPy reference."""

import jax
import numpy as np
import pytest

from conftest import realistic_poses
from prpose.errors import PrposeError
from prpose.mining import mine_negatives, pose_distance_matrix

# 4 items, 1-D embeddings. Anchor means at 0; positives at distances 1, 2, 3, 4 from 0.
ANCHOR = np.zeros((4, 1), np.float32)
POSITIVE = np.array([[1.0], [2.0], [3.0], [4.0]], np.float32)
ALL_DIFFERENT = np.full((4, 4), 1.0, np.float32) - np.eye(4, dtype=np.float32)  # NP-MPJPE: all >= kappa


def test_semi_hard_picks_closest_candidate_farther_than_own_positive():
    idx, valid = mine_negatives(ANCHOR, POSITIVE, pose_distances=ALL_DIFFERENT)
    # Anchor 0 (own positive at 1): candidates 1, 2, 3 all farther -> closest is 1.
    # Anchor 1 (own at 2): farther candidates 2, 3 -> 2. Anchor 2 -> 3. Anchor 3: nothing farther -> dropped.
    np.testing.assert_array_equal(valid, [True, True, True, False])
    np.testing.assert_array_equal(np.asarray(idx)[:3], [1, 2, 3])
    assert idx[3] == 3  # dropped rows point at themselves


def test_matching_poses_are_never_negatives():
    pose = ALL_DIFFERENT.copy()
    pose[0, 1] = 0.05  # item 1's pose matches anchor 0's (< kappa = 0.1)
    idx, valid = mine_negatives(ANCHOR, POSITIVE, pose_distances=pose)
    assert valid[0] and idx[0] == 2


def test_no_candidate_drops_the_triplet():
    same = np.zeros((4, 4), np.float32)  # every pose matches every other
    for strategy in ("semi_hard", "hardest", "random"):
        idx, valid = mine_negatives(ANCHOR, POSITIVE, pose_distances=same, strategy=strategy,
                                    key=jax.random.key(0))
        assert not np.any(valid)
        np.testing.assert_array_equal(idx, np.arange(4))


def test_hardest_picks_closest_candidate_even_if_closer_than_positive():
    idx, valid = mine_negatives(ANCHOR, POSITIVE, pose_distances=ALL_DIFFERENT, strategy="hardest")
    # The closest other positive to 0 is item 0 (at 1) for anchors 1-3 -- for anchor 3 it is closer than its
    # own positive (4), which semi-hard mining drops; anchor 0 cannot take itself -> item 1.
    np.testing.assert_array_equal(idx, [1, 0, 0, 0])
    assert np.all(valid)


def test_random_picks_only_candidates_and_covers_them():
    pose = ALL_DIFFERENT.copy()
    pose[0, 3] = 0.0  # item 3 matches anchor 0 -> only 1, 2 are candidates
    seen = set()
    for seed in range(30):
        idx, valid = mine_negatives(ANCHOR, POSITIVE, pose_distances=pose, strategy="random",
                                    key=jax.random.key(seed))
        assert valid[0]
        seen.add(int(idx[0]))
    assert seen == {1, 2}
    with pytest.raises(PrposeError, match="key"):
        mine_negatives(ANCHOR, POSITIVE, pose_distances=pose, strategy="random")


def _np_mpjpe_reference(p, q, w=None):
    """Independent float64 NP-MPJPE: align p onto q (rotation without reflection, scale, translation)."""
    w = np.ones(len(p)) if w is None else w.astype(float)
    if w.sum() == 0:
        return 0.0
    mp, mq = (w[:, None] * p).sum(0) / w.sum(), (w[:, None] * q).sum(0) / w.sum()
    p0, q0 = p - mp, q - mq
    u, sv, vt = np.linalg.svd((w[:, None] * p0).T @ q0)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.diag([1.0, 1.0, d])
    r = u @ fix @ vt
    scale = (sv * np.diag(fix)).sum() / (w[:, None] * p0 * p0).sum()
    aligned = scale * p0 @ r + mq
    return (w * np.linalg.norm(aligned - q, axis=1)).sum() / w.sum()


def test_pose_distance_matrix_matches_numpy_reference_with_mask_and_windows():
    rng = np.random.default_rng(0)
    poses = rng.normal(size=(3, 17, 3))
    mask = rng.random((3, 17)) > 0.2
    got = np.asarray(pose_distance_matrix(poses))
    got_masked = np.asarray(pose_distance_matrix(poses, mask))
    for i in range(3):
        for j in range(3):
            np.testing.assert_allclose(got[i, j], _np_mpjpe_reference(poses[i], poses[j]), atol=1e-4)
            np.testing.assert_allclose(got_masked[i, j],
                                       _np_mpjpe_reference(poses[i], poses[j], mask[i] & mask[j]), atol=1e-4)
    windows = rng.normal(size=(2, 3, 17, 3))
    got_w = np.asarray(pose_distance_matrix(windows))
    ref = np.mean([[[_np_mpjpe_reference(windows[i, t], windows[j, t]) for j in range(2)] for i in range(2)]
                   for t in range(3)], axis=0)
    np.testing.assert_allclose(got_w, ref, atol=1e-4)


def test_mining_from_poses_uses_kappa():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(17, 3))
    poses = np.stack([base, base * 2.0 + 1.0, rng.normal(size=(17, 3))])  # 0 and 1 match (similarity)
    anchor = np.zeros((3, 1), np.float32)
    positive = np.array([[0.1], [0.2], [0.3]], np.float32)
    idx, valid = mine_negatives(anchor, positive, poses, strategy="hardest")
    assert valid[0] and idx[0] == 2  # 1 is the same pose up to similarity -> not a negative
    assert valid[2] and idx[2] == 0


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(PrposeError, match="strategy"):
        mine_negatives(ANCHOR, POSITIVE, pose_distances=ALL_DIFFERENT, strategy="hard")
    with pytest.raises(PrposeError, match=r"\(B, B\)"):
        mine_negatives(ANCHOR, POSITIVE, pose_distances=np.zeros((3, 3)))
    with pytest.raises(PrposeError, match="poses3d"):
        mine_negatives(ANCHOR, POSITIVE)


@pytest.mark.parametrize("strategy", ["semi_hard", "hardest"])
def test_mining_from_poses_picks_what_the_full_matrix_picks(strategy):
    """Mining from poses (shortlist + exact NP-MPJPE, full matrix only when undecided) equals mining on the full
    (B, B) matrix, on realistic batches: random embeddings, embeddings that mirror the 3D pose (the nearest items
    are the similar poses: the hard case), near-duplicate poses, visible-joint masks."""
    from prpose import mining

    rng = np.random.default_rng(12)
    for trial in range(6):
        poses = realistic_poses(64, rng)
        poses[1::8] = poses[::8] + rng.normal(size=poses[::8].shape).astype(np.float32) * 0.01  # 3D matches
        mask = rng.random((64, 17)) > 0.1 if trial % 2 else None
        if trial < 2:
            anchor, positive = rng.normal(size=(2, 64, 16)).astype(np.float32)
        else:  # embeddings that mirror the pose: shortlists full of 3D matches
            flat = poses.reshape(64, -1)
            anchor = flat + rng.normal(size=flat.shape).astype(np.float32) * 0.02
            positive = flat + rng.normal(size=flat.shape).astype(np.float32) * 0.02
        full = mine_negatives(anchor, positive, kappa=0.1, strategy=strategy,
                              pose_distances=pose_distance_matrix(poses, mask))
        short = mine_negatives(anchor, positive, poses, kappa=0.1, strategy=strategy, joint_mask=mask)
        np.testing.assert_array_equal(np.asarray(short[1]), np.asarray(full[1]))
        np.testing.assert_array_equal(np.asarray(short[0]), np.asarray(full[0]))
        assert np.asarray(full[1]).mean() > 0.4  # the test mines real triplets
        # A one-item shortlist leaves rows undecided (their nearest item is a 3D match): the full matrix decides.
        tiny = mining._mine_shortlist.__wrapped__
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(mining, "SHORTLIST", 1)
            one = tiny(jax.numpy.asarray(anchor), jax.numpy.asarray(positive), jax.numpy.asarray(poses),
                       jax.numpy.ones((64, 17), bool) if mask is None else jax.numpy.asarray(mask), 0.1, strategy)
        np.testing.assert_array_equal(np.asarray(one[0]), np.asarray(full[0]))
