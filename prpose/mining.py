"""In-batch negative mining for the triplet loss (Sun et al. 2020, Sec. 3.3).

For anchor i, the candidate negatives are the positives of every batch item j whose 3D pose does NOT match
anchor i's: NP-MPJPE(pose_i, pose_j) >= kappa. Mining ranks candidates by the L2 distance between embedding
MEANS (a (B, B) matrix): the K x K sample distance is computed later only for the chosen triplets, never for
all B x B pairs (that matrix, B x B x K x K, is what made training slow; NOTES-ECOSYSTEM.md).

Strategies:
- "semi_hard" (default, the authors'): among candidates farther from anchor i than its own positive, the
  closest; if there is none the triplet is dropped (valid False).
- "hardest": the closest candidate.
- "random": a uniformly random candidate (needs a key).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from prpose.errors import PrposeError

STRATEGIES = ("semi_hard", "hardest", "random")


def pose_distance_matrix(poses3d, joint_mask=None):
    """(B, B) NP-MPJPE between the batch's 3D poses: out[i, j] = np_mpjpe(pose_i aligned onto pose_j).

    poses3d: (B, 17, 3) normalised h36m17 poses, or (B, T, 17, 3) windows (temporal variant: the NP-MPJPE
        averaged over the T frames, as the authors match windows).
    joint_mask: optional (B, 17) or (B, T, 17) bool, the joints whose label is usable (e.g. visible in the
        2D input); a pair is compared on the joints usable in both. A pair with no common joint gets 0, i.e.
        it counts as matching and is never mined as a negative (the safe side).
    """
    poses3d = jnp.asarray(poses3d, jnp.float32)
    if poses3d.ndim not in (3, 4) or poses3d.shape[-1] != 3:
        raise PrposeError(
            f"pose_distance_matrix: poses3d has shape {poses3d.shape}, expected (B, J, 3) or (B, T, J, 3)"
        )
    if joint_mask is not None:
        joint_mask = jnp.asarray(joint_mask, bool)
        if joint_mask.shape != poses3d.shape[:-1]:
            raise PrposeError(
                f"pose_distance_matrix: joint_mask has shape {joint_mask.shape}, expected {poses3d.shape[:-1]}"
            )
    return _pose_distance_core(poses3d, joint_mask)


@jax.jit
def _pose_distance_core(poses3d, joint_mask):
    # Jitted as a whole: eager callers would otherwise dispatch (and compile) the Procrustes ops one by one.
    from prpose.procrustes import pairwise_np_mpjpe

    if poses3d.ndim == 3:
        return pairwise_np_mpjpe(poses3d, poses3d, joint_mask, joint_mask)
    # Windows: (B, T, J, 3) -> per-frame (B, B) matrices averaged over T.
    frames = jnp.swapaxes(poses3d, 0, 1)  # (T, B, J, 3)
    if joint_mask is None:
        per_frame = jax.vmap(lambda p: pairwise_np_mpjpe(p, p))(frames)
    else:
        per_frame = jax.vmap(lambda p, m: pairwise_np_mpjpe(p, p, m, m))(frames, jnp.swapaxes(joint_mask, 0, 1))
    return per_frame.mean(axis=0)


def embedding_distance_matrix(anchor_mean, positive_mean):
    """(B, B) squared L2 distance between anchor means and positive means, by exact differences.

    Squared is enough for ranking; exact differences (not |x|^2 - 2xy) so near-ties rank correctly.
    """
    diff = anchor_mean[:, None, :] - positive_mean[None, :, :]
    return jnp.sum(diff * diff, axis=-1)


def mine_negatives(
    anchor_mean,
    positive_mean,
    poses3d=None,
    *,
    kappa: float = 0.1,
    strategy: str = "semi_hard",
    key=None,
    pose_distances=None,
    joint_mask=None,
):
    """One negative per anchor among the batch's positives.

    anchor_mean, positive_mean: (B, D) embedding means (no gradient flows through mining).
    poses3d: (B, 17, 3) normalised 3D poses ((B, T, 17, 3) for windows); not needed with pose_distances.
    kappa: poses with NP-MPJPE >= kappa do not match (paper: 0.1).
    strategy: "semi_hard" | "hardest" | "random"; key: jax PRNG key, required for "random".
    pose_distances: optional precomputed (B, B) NP-MPJPE matrix, [i, j] between anchor i's and item j's 3D.
    joint_mask: optional (B, 17) usable-joint mask for the labels (see pose_distance_matrix).
    Returns (negative_index (B,) int32 into the batch's positives, valid (B,) bool). Where valid is False
    (no candidate, or for "semi_hard" no candidate farther than the own positive) the index is i itself and
    the triplet must be left out of the loss.
    """
    where = "mine_negatives"
    if strategy not in STRATEGIES:
        raise PrposeError(f"{where}: strategy={strategy!r}, expected one of {STRATEGIES}")
    if strategy == "random" and key is None:
        raise PrposeError(f"{where}: strategy='random' needs a key (jax PRNG key), got None")
    anchor_mean = jax.lax.stop_gradient(jnp.asarray(anchor_mean))
    positive_mean = jax.lax.stop_gradient(jnp.asarray(positive_mean))
    if anchor_mean.ndim != 2 or anchor_mean.shape != positive_mean.shape:
        raise PrposeError(
            f"{where}: anchor_mean {anchor_mean.shape} and positive_mean {positive_mean.shape}, "
            "expected the same (B, D) shape"
        )
    batch = anchor_mean.shape[0]
    if pose_distances is None:
        if poses3d is None:
            raise PrposeError(f"{where}: give poses3d (B, 17, 3) or a precomputed pose_distances (B, B)")
        if np.shape(poses3d)[0] != batch:
            raise PrposeError(f"{where}: poses3d has {np.shape(poses3d)[0]} rows, expected B={batch}")
        if strategy != "random" and np.ndim(poses3d) == 3:
            poses3d = jnp.asarray(poses3d, jnp.float32)
            mask = jnp.ones(poses3d.shape[:2], bool) if joint_mask is None else jnp.asarray(joint_mask, bool)
            if mask.shape != poses3d.shape[:2]:
                raise PrposeError(f"{where}: joint_mask has shape {mask.shape}, expected {poses3d.shape[:2]}")
            return _mine_shortlist(anchor_mean, positive_mean, poses3d, mask, kappa, strategy)
        pose_distances = pose_distance_matrix(poses3d, joint_mask)
    else:
        pose_distances = jnp.asarray(pose_distances)
        if pose_distances.shape != (batch, batch):
            raise PrposeError(
                f"{where}: pose_distances has shape {pose_distances.shape}, expected (B, B) = ({batch}, {batch})"
            )
    return _mine_core(anchor_mean, positive_mean, pose_distances, kappa, key, strategy)


@functools.partial(jax.jit, static_argnames="strategy")
def _mine_core(anchor_mean, positive_mean, pose_distances, kappa, key, strategy):
    batch = anchor_mean.shape[0]
    pose_distances = jax.lax.stop_gradient(pose_distances)
    not_self = ~jnp.eye(batch, dtype=bool)  # i's own positive is never its negative, whatever kappa is
    candidate = (pose_distances >= kappa) & not_self  # (B, B)
    emb = embedding_distance_matrix(anchor_mean, positive_mean)  # (B, B)
    if strategy == "semi_hard":
        own = jnp.diagonal(emb)[:, None]
        candidate = candidate & (emb > own)
    if strategy == "random":
        score = jax.random.uniform(key, (batch, batch))  # argmax of iid uniforms = uniform choice
        score = jnp.where(candidate, score, -1.0)
        index = jnp.argmax(score, axis=1)
    else:
        index = jnp.argmin(jnp.where(candidate, emb, jnp.inf), axis=1)
    valid = jnp.any(candidate, axis=1)
    index = jnp.where(valid, index, jnp.arange(batch))
    return index.astype(jnp.int32), valid


# Mining from poses compares each anchor first with only its SHORTLIST nearest eligible positives (by embedding
# mean); on mocap batches of 128 even embeddings that mirror the 3D pose never needed more than 16
# (bench/bench_train_step.py times it; tests/test_mining.py checks the picks against the full matrix).
SHORTLIST = 16
# A shortlisted NP-MPJPE this close to kappa could round to the other side in the full matrix's kernel (their
# float32 values agree to ~1e-6): such a batch takes the full matrix.
_KAPPA_GUARD = 1e-5


@functools.partial(jax.jit, static_argnames="strategy")
def _mine_shortlist(anchor_mean, positive_mean, poses3d, joint_mask, kappa, strategy):
    """Exact "semi_hard" / "hardest" mining without the full (B, B) NP-MPJPE matrix.

    The pose label only removes candidates, so for each anchor the chosen negative is the first item, in order
    of embedding distance, among the label-free eligible ones (not itself; semi-hard: farther than its own
    positive) whose NP-MPJPE is >= kappa. The NP-MPJPE is computed for the SHORTLIST nearest eligible items
    only; a row whose shortlist holds no candidate although more eligible items exist (or a near-kappa value
    decides it) is undecided, and a batch with any undecided row computes the full matrix (lax.cond: one
    branch runs). Same picks as ``_mine_core`` on ``pose_distance_matrix``.
    """
    from prpose.procrustes import np_mpjpe

    batch = anchor_mean.shape[0]
    emb = embedding_distance_matrix(anchor_mean, positive_mean)
    eligible = ~jnp.eye(batch, dtype=bool)
    if strategy == "semi_hard":
        eligible = eligible & (emb > jnp.diagonal(emb)[:, None])
    neg_score, order = jax.lax.top_k(jnp.where(eligible, -emb, -jnp.inf), min(SHORTLIST, batch))  # (B, S)
    listed = jnp.isfinite(neg_score)
    mask = joint_mask[:, None] & joint_mask[order]
    # The anchors are gathered (B, S, 17, 3) like the items, not broadcast: XLA's CPU fusion of the broadcast
    # into the centroid reduction took 1.5x longer (3.4 vs 2.2 ms at B=128 on one core; same values to ~4e-7).
    anchors = poses3d[jnp.broadcast_to(jnp.arange(batch)[:, None], order.shape)]
    dist = np_mpjpe(anchors, poses3d[order], mask=mask)  # [i, s]: anchor i's pose onto item order[i, s]
    candidate = listed & (dist >= kappa)
    first = jnp.argmax(candidate, axis=1)
    found = jnp.any(candidate, axis=1)
    # Rows decided: a candidate found, or every eligible item listed (the last slot empty) and none qualifies.
    decided = found | ~listed[:, -1]
    before = jnp.arange(order.shape[1])[None, :] <= jnp.where(found, first, order.shape[1])[:, None]
    close = jnp.any(listed & before & (jnp.abs(dist - kappa) < _KAPPA_GUARD))

    def shortlist(_):
        index = jnp.where(found, jnp.take_along_axis(order, first[:, None], 1)[:, 0], jnp.arange(batch))
        return index.astype(jnp.int32), found

    def full(_):
        return _mine_core(anchor_mean, positive_mean, pose_distance_matrix(poses3d, joint_mask), kappa, None, strategy)

    return jax.lax.cond(jnp.all(decided) & ~close, shortlist, full, None)
