"""Retrieval methods evaluated by the cross-view protocol (eval.protocol.RetrievalMethod).

Rows of the results table, all on the same queries:
  * `OracleMethod`: ranks by the true NP-MPJPE between 3D poses: the dataset's upper bound (Hit@1 = 1 whenever
    the query's own frame is in the index, which the cross-view protocol guarantees).
  * `RandomMethod`: a uniformly random ranking: the lower bound (its expectation is
    eval.protocol.expected_random_result).
  * `Keypoints2DMethod`: nearest neighbour by L2 on normalised 2D keypoints (the paper's "2D keypoints" row).
  * `EmbeddingMethod`: a trained embedder (prpose.inference.PoseEmbedder): Pr-VIPE ranked by the match
    probability distance -log P (the paper's ranking), or by L2 between embedding means; also L2-VIPE.
  * `LiftingMethod`: a network regressing normalised 3D from 2D; ranking by NP-MPJPE between lifted poses.
"""

from __future__ import annotations

import numpy as np

from prpose.eval.protocol import Candidates, Features
from prpose import keypoints as kp
from prpose.buckets import pad_rows
from prpose.errors import PrposeError

# Two-stage ranking: rank exactly (match distance, NP-MPJPE) only this many candidates per query, found by a cheap
# distance (L2 of embedding means; L2 of pose-distance matrices). `prpose eval --exact` ranks all entries.
DEFAULT_CANDIDATES = 100


def _check_keypoints(keypoints2d, visible, profile: str = "input13"):
    """(M, J, 2) keypoints in `profile` and (M, J) bool visibility (all visible when None), checked."""
    j = kp.get_profile(profile).num_joints
    keypoints2d = np.asarray(keypoints2d, np.float32)
    if keypoints2d.ndim != 3 or keypoints2d.shape[1:] != (j, 2):
        raise PrposeError(f"keypoints2d: shape {keypoints2d.shape}, expected (M, {j}, 2) {profile}")
    visible = np.ones(keypoints2d.shape[:2], bool) if visible is None else np.asarray(visible, bool)
    if visible.shape != keypoints2d.shape[:2]:
        raise PrposeError(f"visible: shape {visible.shape}, expected {keypoints2d.shape[:2]}")
    return keypoints2d, visible


def input13_views(keypoints2d, visible, profile: str = "input13"):
    """Any profile -> the paper's 13 input keypoints (M, 13, 2) and visibility (M, 13), by joint name.

    REFERENCE.md's first input joint is "nose (or head)": where the nose is missing and the profile has a visible
    head (Stacked Hourglass gives a head top and no nose), the head takes the nose's place. Used by the model-free
    rows and the lifting baseline, so that they use the joints both views of a pair have.
    """
    keypoints2d, visible = _check_keypoints(keypoints2d, visible, profile)
    k13 = kp.convert(keypoints2d, profile, "input13")
    v13 = kp.convert(visible, profile, "input13", axis=-1)
    prof = kp.get_profile(profile)
    if "head" in prof.joints:
        head = prof.joints.index("head")
        swap = ~v13[:, 0] & visible[:, head]
        k13[swap, 0] = keypoints2d[swap, head]
        v13[swap, 0] = True
    return k13, v13


def two_stage(coarse: np.ndarray, candidates: int | None, exact_fn):
    """Two-stage ranking: exact_fn(cand (Q, C) int) -> (Q, C) exact distances on the `candidates` entries nearest by
    `coarse` (Q, N). Returns Candidates(ids, distances); with candidates None or >= N, the dense (Q, N) exact
    distances of every entry."""
    q, n = coarse.shape
    if candidates is None or candidates >= n:
        return np.asarray(exact_fn(np.ascontiguousarray(np.broadcast_to(np.arange(n), (q, n)))), np.float64)
    cand = np.ascontiguousarray(np.argpartition(coarse, candidates - 1, axis=1)[:, :candidates])
    return Candidates(cand, np.asarray(exact_fn(cand), np.float64))


def pose_shape_descriptor(poses3d) -> np.ndarray:
    """(M, 17, 3) -> (M, 136): distances between every pair of joints, divided by their root mean square.

    Invariant to rotation, translation and scale, like NP-MPJPE, so L2 between descriptors finds candidates for
    the exact NP-MPJPE ranking of poses lifted from different cameras."""
    x = np.asarray(poses3d, np.float32)
    i, j = np.triu_indices(x.shape[1], 1)
    d = np.linalg.norm(x[:, i] - x[:, j], axis=-1)
    return d / np.maximum(np.sqrt((d * d).mean(axis=1, keepdims=True)), 1e-9)


def squared_l2(query: np.ndarray, index: np.ndarray, dtype=np.float64) -> np.ndarray:
    """(Q, D), (N, D) -> (Q, N) squared Euclidean distances, in float64 (ranking-exact for small D; float32 for
    the candidate stage of two-stage ranking)."""
    q = np.asarray(query, dtype)
    x = np.asarray(index, dtype)
    d = (q * q).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2.0 * q @ x.T
    return np.maximum(d, 0.0)


def normalized_2d_features(keypoints2d, visible, profile: str = "input13") -> np.ndarray:
    """(M, J, 2) keypoints in `profile` -> (M, 26) normalised input13 (REFERENCE.md; `input13_views`), invisible
    keypoints zeroed."""
    from prpose.eval.protocol import jitted

    keypoints2d, visible = input13_views(keypoints2d, visible, profile)
    norm, _ = jitted("normalize_2d")(keypoints2d, visible)
    return np.asarray(norm, np.float32).reshape(len(keypoints2d), 26)


class Keypoints2DMethod:
    """Nearest neighbour by L2 on normalised 2D keypoints."""

    name = "2D keypoints"

    def features(self, keypoints2d, visible, poses3d, profile: str = "input13") -> Features:
        return {"x": normalized_2d_features(keypoints2d, visible, profile)}

    def distances(self, query: Features, index: Features) -> np.ndarray:
        return squared_l2(query["x"], index["x"])


def pairwise_pose_distances(query: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(Q, N): NP-MPJPE of each index pose (N, 17, 3) aligned onto each query pose (Q, 17, 3)."""
    from prpose.procrustes import pairwise_np_mpjpe

    q, x = np.asarray(query, np.float32), np.asarray(index, np.float32)
    out = np.asarray(pairwise_np_mpjpe(pad_rows(x), pad_rows(q)))
    return out[:len(x), :len(q)].T


def _candidate_np_mpjpe(query_poses: np.ndarray, index_poses: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """NP-MPJPE of index_poses[cand[q, c]] aligned onto query_poses[q]: (Q, C)."""
    from prpose.eval.protocol import retrieved_np_mpjpe

    return retrieved_np_mpjpe(np.asarray(query_poses, np.float32), np.asarray(index_poses, np.float32)[cand])


class OracleMethod:
    """Ranks by the true NP-MPJPE (index pose aligned onto the query pose): the dataset's upper bound.

    candidates: rank exactly only that many entries per query, nearest by the pose-shape descriptor
    (`pose_shape_descriptor`); None ranks all (exact). Exact distances do not depend on the cameras, so they are
    memoised per (query chunk, index) and reused across camera pairs (otherwise C(C-1) identical all-pairs
    Procrustes passes).
    """

    name = "oracle (3D NP-MPJPE)"

    def __init__(self, cache_entries: int = 256, candidates: int | None = DEFAULT_CANDIDATES):
        self._cache: dict = {}
        self._cache_entries = cache_entries
        self.candidates = candidates

    def features(self, keypoints2d, visible, poses3d, profile: str = "input13") -> Features:
        poses3d = np.asarray(poses3d, np.float32)
        return {"pose3d": poses3d, "shape": pose_shape_descriptor(poses3d)}

    def distances(self, query: Features, index: Features) -> np.ndarray:
        q, x = query["pose3d"], index["pose3d"]
        key = (q.shape, x.shape, hash(q.tobytes()), hash(x.tobytes()))
        if key not in self._cache:
            if len(self._cache) >= self._cache_entries:
                self._cache.pop(next(iter(self._cache)))
            if self.candidates is None or self.candidates >= len(x):
                self._cache[key] = pairwise_pose_distances(q, x)
            else:
                coarse = squared_l2(query["shape"], index["shape"], np.float32)
                self._cache[key] = two_stage(coarse, self.candidates, lambda cand: _candidate_np_mpjpe(q, x, cand))
        return self._cache[key]


class RandomMethod:
    """A uniformly random ranking (fresh random scores for every query): the lower bound."""

    name = "random"

    def __init__(self, seed: int = 0):
        self._rng = np.random.default_rng(seed)

    def features(self, keypoints2d, visible, poses3d, profile: str = "input13") -> Features:
        return {"row": np.arange(len(poses3d))}

    def distances(self, query: Features, index: Features) -> np.ndarray:
        return self._rng.random((len(query["row"]), len(index["row"])))


_RERANK_JIT: dict = {}


def _match_rerank(q_samples, x_samples, a, b, s) -> np.ndarray:
    """Match distance of each query (Q, K, D) to its candidates (Q, C, K, D) -> (Q, C), jitted, padded over Q.

    Squared sample distances as |q|^2 + |x|^2 - 2 q.x (the D axis a matmul, like
    prpose.matching.pairwise_match_distance). With smoothing s > 0 the mean of the K x K sigmoids is taken
    directly (P >= s/2 keeps -log P finite; ~2x faster on a CPU than the log-space form, whose transcendentals
    dominate; equal to ~1e-6); with s = 0 the log-space form of prpose.matching, which stays finite for far pairs.
    """
    import jax
    import jax.numpy as jnp

    direct = float(s) > 0.0
    if direct not in _RERANK_JIT:
        from prpose.matching import pairwise_match_distance

        def sigmoid_mean(q, x, a, b, s):
            sq = (jnp.sum(q * q, -1)[:, None, :, None] + jnp.sum(x * x, -1)[:, :, None, :]
                  - 2.0 * jnp.einsum("bkd,bcld->bckl", q, x))
            p = jnp.mean(jax.nn.sigmoid(-a * jnp.sqrt(jnp.maximum(sq, 0.0)) + b), axis=(-2, -1))
            return -jnp.log((1.0 - s) * p + s / 2.0)

        log_space = jax.vmap(lambda q, x, a, b, s: pairwise_match_distance(q[None], x, a, b, s)[0],
                             in_axes=(0, 0, None, None, None))
        _RERANK_JIT[direct] = jax.jit(sigmoid_mean if direct else log_space)
    n = len(q_samples)
    return np.asarray(_RERANK_JIT[direct](pad_rows(q_samples), pad_rows(x_samples), a, b, s))[:n]


class EmbeddingMethod:
    """A trained embedder: `embedder.embed(keypoints, profile=..., scores=...) -> Embeddings(mean, stddev,
    samples)` and `embedder.match_params` = (a, b, smoothing) (prpose.inference.PoseEmbedder).

    ranking: "match" (distance -log P averaged over K x K samples, the paper's), or "l2" (L2 between means).
    candidates: with "match", rank by match distance only that many entries per query, nearest by L2 of the means
    (two-stage, as training validation and the pose index do); None ranks every entry by match distance (exact,
    ~N/candidates times slower). Invisible keypoints are passed as score 0 (visible ones 1), so the embedder's own
    handling of missing joints applies (the keypoints go in the views' profile; the embedder converts by name).
    head_as_nose: feed the paper's 13 joints from `input13_views` instead (the head top standing in for a missing
    nose, as for the model-free rows), for models that have no input for a head top.
    """

    def __init__(self, embedder, ranking: str = "match", name: str | None = None, index_chunk: int | None = None,
                 candidates: int | None = None, head_as_nose: bool = False):
        if ranking not in ("match", "l2"):
            raise PrposeError(f"ranking: got {ranking!r}, expected 'match' or 'l2'")
        if candidates is not None and candidates < 1:
            raise PrposeError(f"candidates: got {candidates!r}, expected a positive integer or None (exact)")
        self.embedder = embedder
        self.ranking = ranking
        self.index_chunk = index_chunk
        self.candidates = candidates
        self.head_as_nose = head_as_nose
        self.name = name or ("Pr-VIPE (match probability)" if ranking == "match" else "Pr-VIPE (mean L2)")

    def features(self, keypoints2d, visible, poses3d, profile: str = "input13") -> Features:
        if self.head_as_nose:
            keypoints2d, visible = input13_views(keypoints2d, visible, profile)
            profile = "input13"
        keypoints2d, visible = _check_keypoints(keypoints2d, visible, profile)
        scores = None if visible.all() else visible.astype(np.float32)
        emb = self.embedder.embed(keypoints2d, profile=profile, scores=scores)
        out = {"mean": np.asarray(emb.mean, np.float32), "stddev": np.asarray(emb.stddev, np.float32)}
        if self.ranking == "match":
            out["samples"] = np.asarray(emb.samples, np.float32)
        return out

    def distances(self, query: Features, index: Features) -> np.ndarray:
        if self.ranking == "l2":
            return squared_l2(query["mean"], index["mean"])
        a, b, s = self.embedder.match_params
        if self.candidates is not None and self.candidates < len(index["samples"]):
            return two_stage(squared_l2(query["mean"], index["mean"], np.float32), self.candidates,
                             lambda cand: _match_rerank(query["samples"], index["samples"][cand], a, b, s))
        from prpose.matching import pairwise_match_distance

        n, nq = len(index["samples"]), len(query["samples"])
        q = pad_rows(query["samples"])
        out = np.empty((nq, n), np.float64)
        # Chunk the index so that the (Q, N, K, K) pair distances never exist at once; pad every chunk to one
        # of a few sizes so that the jitted kernel is not recompiled for every sequence length.
        k1, k2 = q.shape[1], index["samples"].shape[1]
        # Default: ~2^24 pair distances per kernel call (a few 64 MB buffers), a power of two for few shapes.
        step = self.index_chunk or max(16, 1 << ((1 << 24) // (len(q) * k1 * k2)).bit_length() - 1)
        for st in range(0, n, step):
            chunk = index["samples"][st:st + step]
            d = np.asarray(pairwise_match_distance(q, pad_rows(chunk), a, b, s))
            out[:, st:st + len(chunk)] = d[:nq, :len(chunk)]
        return out


class FunctionMethod:
    """Wraps `embed_fn(keypoints (M, 13, 2), visible (M, 13)) -> (M, D)` (input13, `input13_views`) with L2
    ranking (probes, tests, the untrained network)."""

    def __init__(self, name: str, embed_fn):
        self.name = name
        self.embed_fn = embed_fn

    def features(self, keypoints2d, visible, poses3d, profile: str = "input13") -> Features:
        keypoints2d, visible = input13_views(keypoints2d, visible, profile)
        return {"x": np.asarray(self.embed_fn(keypoints2d, visible), np.float32)}

    def distances(self, query: Features, index: Features) -> np.ndarray:
        return squared_l2(query["x"], index["x"])


class LiftingMethod:
    """3D lifting baseline: `lift_fn(keypoints (M, 13, 2), visible (M, 13)) -> (M, 17, 3)` normalised 3D (input13,
    `input13_views`), then retrieval by NP-MPJPE between lifted poses (index pose aligned onto the query's).

    candidates: rank by exact NP-MPJPE only that many entries per query, nearest by L2 of the pose-shape
    descriptor (`pose_shape_descriptor`, rotation/scale invariant); None ranks all (an all-pairs Procrustes pass
    per camera pair: minutes per pair at 10k frames on a CPU).
    """

    def __init__(self, lift_fn, name: str = "3D lifting + NP-MPJPE", candidates: int | None = None):
        self.lift_fn = lift_fn
        self.name = name
        self.candidates = candidates

    def features(self, keypoints2d, visible, poses3d, profile: str = "input13") -> Features:
        keypoints2d, visible = input13_views(keypoints2d, visible, profile)
        lifted = np.asarray(self.lift_fn(keypoints2d, visible), np.float32)
        if lifted.shape != (len(keypoints2d), 17, 3):
            raise PrposeError(f"lift_fn returned shape {lifted.shape}, expected {(len(keypoints2d), 17, 3)}")
        return {"pose3d": lifted, "shape": pose_shape_descriptor(lifted)}

    def distances(self, query: Features, index: Features) -> np.ndarray:
        q, x = query["pose3d"], index["pose3d"]
        if self.candidates is None or self.candidates >= len(x):
            return pairwise_pose_distances(q, x)
        return two_stage(squared_l2(query["shape"], index["shape"], np.float32), self.candidates,
                         lambda cand: _candidate_np_mpjpe(q, x, cand))
