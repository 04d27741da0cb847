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

from eval.protocol import Features
from prpose.errors import PrposeError


def _check_keypoints(keypoints2d, visible):
    keypoints2d = np.asarray(keypoints2d, np.float32)
    if keypoints2d.ndim != 3 or keypoints2d.shape[1:] != (13, 2):
        raise PrposeError(f"keypoints2d: shape {keypoints2d.shape}, expected (M, 13, 2) input13")
    visible = np.ones(keypoints2d.shape[:2], bool) if visible is None else np.asarray(visible, bool)
    return keypoints2d, visible


def squared_l2(query: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(Q, D), (N, D) -> (Q, N) squared Euclidean distances, in float64 (ranking-exact for small D)."""
    q = np.asarray(query, np.float64)
    x = np.asarray(index, np.float64)
    d = (q * q).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2.0 * q @ x.T
    return np.maximum(d, 0.0)


def normalized_2d_features(keypoints2d, visible) -> np.ndarray:
    """(M, 13, 2) input13 keypoints -> (M, 26) normalised (REFERENCE.md), invisible keypoints zeroed."""
    from eval.protocol import jitted

    keypoints2d, visible = _check_keypoints(keypoints2d, visible)
    norm, _ = jitted("normalize_2d")(keypoints2d, visible)
    return np.asarray(norm, np.float32).reshape(len(keypoints2d), 26)


class Keypoints2DMethod:
    """Nearest neighbour by L2 on normalised 2D keypoints."""

    name = "2D keypoints"

    def features(self, keypoints2d, visible, poses3d) -> Features:
        return {"x": normalized_2d_features(keypoints2d, visible)}

    def distances(self, query: Features, index: Features) -> np.ndarray:
        return squared_l2(query["x"], index["x"])


def pad_rows(x: np.ndarray, minimum: int = 64) -> np.ndarray:
    """Pad the first axis to a power of two (>= minimum) by repeating row 0, so that jitted kernels see few
    distinct shapes (alignment calls them on sequences of every length; each new shape is a compile)."""
    n = x.shape[0]
    size = max(minimum, 1 << max(0, n - 1).bit_length())
    if size == n or n == 0:
        return x
    return np.concatenate([x, np.repeat(x[:1], size - n, axis=0)])


def pairwise_pose_distances(query: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(Q, N): NP-MPJPE of each index pose (N, 17, 3) aligned onto each query pose (Q, 17, 3)."""
    from prpose.procrustes import pairwise_np_mpjpe

    q, x = np.asarray(query, np.float32), np.asarray(index, np.float32)
    out = np.asarray(pairwise_np_mpjpe(pad_rows(x), pad_rows(q)))
    return out[:len(x), :len(q)].T


class OracleMethod:
    """Ranks by the true NP-MPJPE (index pose aligned onto the query pose): the dataset's upper bound.

    Its distances do not depend on the cameras, so they are memoised per (query chunk, index) and reused across
    camera pairs (the dominant cost otherwise: C(C-1) identical all-pairs Procrustes passes).
    """

    name = "oracle (3D NP-MPJPE)"

    def __init__(self, cache_entries: int = 256):
        self._cache: dict = {}
        self._cache_entries = cache_entries

    def features(self, keypoints2d, visible, poses3d) -> Features:
        return {"pose3d": np.asarray(poses3d, np.float32)}

    def distances(self, query: Features, index: Features) -> np.ndarray:
        q, x = query["pose3d"], index["pose3d"]
        key = (q.shape, x.shape, hash(q.tobytes()), hash(x.tobytes()))
        if key not in self._cache:
            if len(self._cache) >= self._cache_entries:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = pairwise_pose_distances(q, x)
        return self._cache[key]


class RandomMethod:
    """A uniformly random ranking (fresh random scores for every query): the lower bound."""

    name = "random"

    def __init__(self, seed: int = 0):
        self._rng = np.random.default_rng(seed)

    def features(self, keypoints2d, visible, poses3d) -> Features:
        return {"row": np.arange(len(poses3d))}

    def distances(self, query: Features, index: Features) -> np.ndarray:
        return self._rng.random((len(query["row"]), len(index["row"])))


class EmbeddingMethod:
    """A trained embedder: `embedder.embed(keypoints, profile="input13", scores=...) -> Embeddings(mean, stddev,
    samples)` and `embedder.match_params` = (a, b, smoothing) (prpose.inference.PoseEmbedder).

    ranking: "match" (distance -log P averaged over K x K samples, the paper's), or "l2" (L2 between means).
    Invisible keypoints are passed as score 0 (visible ones 1), so the embedder's own missing-keypoint handling
    applies.
    """

    def __init__(self, embedder, ranking: str = "match", name: str | None = None, index_chunk: int | None = None):
        if ranking not in ("match", "l2"):
            raise PrposeError(f"ranking: got {ranking!r}, expected 'match' or 'l2'")
        self.embedder = embedder
        self.ranking = ranking
        self.index_chunk = index_chunk
        self.name = name or ("Pr-VIPE (match probability)" if ranking == "match" else "Pr-VIPE (mean L2)")

    def features(self, keypoints2d, visible, poses3d) -> Features:
        keypoints2d, visible = _check_keypoints(keypoints2d, visible)
        scores = None if visible.all() else visible.astype(np.float32)
        emb = self.embedder.embed(keypoints2d, profile="input13", scores=scores)
        out = {"mean": np.asarray(emb.mean, np.float32), "stddev": np.asarray(emb.stddev, np.float32)}
        if self.ranking == "match":
            out["samples"] = np.asarray(emb.samples, np.float32)
        return out

    def distances(self, query: Features, index: Features) -> np.ndarray:
        if self.ranking == "l2":
            return squared_l2(query["mean"], index["mean"])
        from prpose.matching import pairwise_match_distance

        a, b, s = self.embedder.match_params
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
    """Wraps `embed_fn(keypoints (M, 13, 2), visible (M, 13)) -> (M, D)` with L2 ranking (probes, tests, the
    untrained network)."""

    def __init__(self, name: str, embed_fn):
        self.name = name
        self.embed_fn = embed_fn

    def features(self, keypoints2d, visible, poses3d) -> Features:
        keypoints2d, visible = _check_keypoints(keypoints2d, visible)
        return {"x": np.asarray(self.embed_fn(keypoints2d, visible), np.float32)}

    def distances(self, query: Features, index: Features) -> np.ndarray:
        return squared_l2(query["x"], index["x"])


class LiftingMethod:
    """3D lifting baseline: `lift_fn(keypoints (M, 13, 2), visible (M, 13)) -> (M, 17, 3)` normalised 3D, then
    retrieval by NP-MPJPE between lifted poses (index pose aligned onto the query's)."""

    def __init__(self, lift_fn, name: str = "3D lifting + NP-MPJPE"):
        self.lift_fn = lift_fn
        self.name = name

    def features(self, keypoints2d, visible, poses3d) -> Features:
        keypoints2d, visible = _check_keypoints(keypoints2d, visible)
        lifted = np.asarray(self.lift_fn(keypoints2d, visible), np.float32)
        if lifted.shape != (len(keypoints2d), 17, 3):
            raise PrposeError(f"lift_fn returned shape {lifted.shape}, expected {(len(keypoints2d), 17, 3)}")
        return {"pose3d": lifted}

    def distances(self, query: Features, index: Features) -> np.ndarray:
        return pairwise_pose_distances(query["pose3d"], index["pose3d"])
