"""Baseline retrieval methods for the cross-view protocol (prpose.protocol.RetrievalMethod).

Rows of the results table beside Pr-VIPE (prpose.protocol.EmbeddingMethod), all on the same queries:
  * `OracleMethod`: ranks by the true NP-MPJPE between 3D poses: the dataset's upper bound (Hit@1 = 1 whenever
    the query's own frame is in the index, which the cross-view protocol guarantees).
  * `RandomMethod`: a uniformly random ranking: the lower bound (its expectation is
    prpose.protocol.expected_random_result).
  * `Keypoints2DMethod`: nearest neighbour by L2 on normalised 2D keypoints (the paper's "2D keypoints" row).
  * `FunctionMethod`: any function of the input13 keypoints, ranked by L2 (probes, the untrained network).
  * `LiftingMethod`: a network regressing normalised 3D from 2D; ranking by NP-MPJPE between lifted poses.
"""

from __future__ import annotations

import numpy as np

from prpose.buckets import pad_rows
from prpose.errors import PrposeError
from prpose.normalize import jit_normalize_2d
from prpose.protocol import Features, retrieved_np_mpjpe, squared_l2, two_stage
from prpose.views import input13_views

# Two-stage ranking: rank exactly (match distance, NP-MPJPE) only this many candidates per query, found by a cheap
# distance (L2 of embedding means; L2 of pose-distance matrices). `prpose eval --exact` ranks all entries.
DEFAULT_CANDIDATES = 100


def pose_shape_descriptor(poses3d) -> np.ndarray:
    """(M, 17, 3) -> (M, 136): distances between every pair of joints, divided by their root mean square.

    Invariant to rotation, translation and scale, like NP-MPJPE, so L2 between descriptors finds candidates for
    the exact NP-MPJPE ranking of poses lifted from different cameras."""
    x = np.asarray(poses3d, np.float32)
    i, j = np.triu_indices(x.shape[1], 1)
    d = np.linalg.norm(x[:, i] - x[:, j], axis=-1)
    return d / np.maximum(np.sqrt((d * d).mean(axis=1, keepdims=True)), 1e-9)


def normalized_2d_features(keypoints2d, visible, profile: str = "input13") -> np.ndarray:
    """(M, J, 2) keypoints in `profile` -> (M, 26) normalised input13 (REFERENCE.md; `input13_views`), invisible
    keypoints zeroed."""
    keypoints2d, visible = input13_views(keypoints2d, visible, profile)
    norm, _ = jit_normalize_2d(keypoints2d, visible)
    return np.asarray(norm, np.float32).reshape(len(keypoints2d), 26)


class Keypoints2DMethod:
    """Nearest neighbour by L2 on normalised 2D keypoints."""

    name = "2D keypoints"

    def features(self, keypoints2d, visible, poses3d, profile: str = "input13", camera: int = 0) -> Features:
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

    def features(self, keypoints2d, visible, poses3d, profile: str = "input13", camera: int = 0) -> Features:
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

    def features(self, keypoints2d, visible, poses3d, profile: str = "input13", camera: int = 0) -> Features:
        return {"row": np.arange(len(poses3d))}

    def distances(self, query: Features, index: Features) -> np.ndarray:
        return self._rng.random((len(query["row"]), len(index["row"])))


class FunctionMethod:
    """Wraps `embed_fn(keypoints (M, 13, 2), visible (M, 13)) -> (M, D)` (input13, `input13_views`) with L2
    ranking (probes, tests, the untrained network)."""

    def __init__(self, name: str, embed_fn):
        self.name = name
        self.embed_fn = embed_fn

    def features(self, keypoints2d, visible, poses3d, profile: str = "input13", camera: int = 0) -> Features:
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

    def features(self, keypoints2d, visible, poses3d, profile: str = "input13", camera: int = 0) -> Features:
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
