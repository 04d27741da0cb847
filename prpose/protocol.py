"""The cross-view retrieval protocol (REFERENCE.md, "Evaluation protocol"), for any retrieval method.

For every ordered pair of distinct cameras (c_q, c_i): the queries are the frames seen from c_q, the index is
the same frames seen from c_i (a prpose.views.ViewSet). A query *hits at k* when at least one of its k nearest
index entries has NP-MPJPE < kappa to the query's 3D pose. Hit@k is the fraction of queries that hit; the
protocol reports the per-pair table and the unweighted mean over camera pairs (the paper's number).

One implementation serves training validation (prpose.training.validate), ``prpose eval`` (prpose.eval: the
baselines, analyses and report build on it) and the benchmarks (bench/). Everything that differs between
methods (Pr-VIPE by match probability or by embedding-mean L2 (:class:`EmbeddingMethod`, here); the baselines
of prpose.eval.baselines) is behind a two-function :class:`RetrievalMethod` interface: ``features`` turns a
batch of views into per-row arrays, ``distances`` scores queries against index entries (smaller = closer), or
returns :class:`Candidates` (two-stage ranking: exact distances for the few entries nearest by a cheap one).
The queries, the index, the frame subsampling and the hit test are shared, so every row of a results table is
computed on exactly the same queries.

NP-MPJPE convention: the retrieved pose is Procrustes-aligned onto the query's pose (`np_mpjpe(retrieved,
query)`), i.e. "a retrieved pose with NP-MPJPE < kappa to the query's 3D pose". The hit test's error function
is an argument of :func:`cross_view_hit_at_k` (``pose_error``), so that other labels (e.g. windows of poses)
can reuse the protocol.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Callable, Mapping, NamedTuple, Protocol, Sequence

import numpy as np

from prpose.buckets import pad_rows
from prpose.errors import PrposeError
from prpose.views import ViewSet, check_keypoints, input13_views

KS = (1, 5, 10, 20)
KAPPA = 0.1

Features = Mapping[str, np.ndarray]  # per-row arrays, all with the same leading dimension


# --------------------------------------------------------------------------------------------------------------
# Methods.


class RetrievalMethod(Protocol):
    """What the protocol needs from a retrieval method."""

    name: str

    def features(self, keypoints2d: np.ndarray, visible: np.ndarray, poses3d: np.ndarray,
                 profile: str = "input13", camera: int = 0) -> Features:
        """Per-view features: keypoints2d (M, J, 2) in `profile` (a prpose.keypoints name), visible (M, J),
        poses3d (M, 17, 3) normalised (only oracles may look at it) -> dict of arrays with leading dimension M.
        camera: which camera the views come from; a method that draws random numbers keys them by it
        (:func:`camera_key`), so two cameras' views of one frame get independent draws."""

    def distances(self, query: Features, index: Features) -> "np.ndarray | Candidates":
        """(Q, N) dissimilarities, smaller = closer; or Candidates (two-stage methods: only the nearest few
        entries per query, with their exact distances)."""


class Candidates(NamedTuple):
    """A sparse answer of `RetrievalMethod.distances`: per query, `ids` (Q, C) index positions and their exact
    `distances` (Q, C); every other entry counts as farther than all of them."""

    ids: np.ndarray
    distances: np.ndarray

    def dense(self, num_index: int) -> np.ndarray:
        """(Q, num_index) with +inf outside the candidates."""
        out = np.full((len(self.ids), num_index), np.inf)
        np.put_along_axis(out, self.ids, self.distances, axis=1)
        return out


def take(features: Features, rows) -> dict[str, np.ndarray]:
    """Rows of every per-row array in `features`."""
    return {k: v[rows] for k, v in features.items()}


def squared_l2(query: np.ndarray, index: np.ndarray, dtype=np.float64) -> np.ndarray:
    """(Q, D), (N, D) -> (Q, N) squared Euclidean distances, in float64 (ranking-exact for small D; float32 for
    the candidate stage of two-stage ranking)."""
    q = np.asarray(query, dtype)
    x = np.asarray(index, dtype)
    d = (q * q).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2.0 * q @ x.T
    return np.maximum(d, 0.0)


def two_stage(coarse: np.ndarray, candidates: int | None, exact_fn):
    """Two-stage ranking: exact_fn(cand (Q, C) int) -> (Q, C) exact distances on the `candidates` entries nearest by
    `coarse` (Q, N). Returns Candidates(ids, distances); with candidates None or >= N, the dense (Q, N) exact
    distances of every entry."""
    q, n = coarse.shape
    if candidates is None or candidates >= n:
        return np.asarray(exact_fn(np.ascontiguousarray(np.broadcast_to(np.arange(n), (q, n)))), np.float64)
    cand = np.ascontiguousarray(np.argpartition(coarse, candidates - 1, axis=1)[:, :candidates])
    return Candidates(cand, np.asarray(exact_fn(cand), np.float64))


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
    """A trained embedder: `embedder.embed(keypoints, profile=..., scores=..., key=...) -> Embeddings(mean, stddev,
    samples)` and `embedder.match_params` = (a, b, smoothing) (prpose.inference.PoseEmbedder).

    ranking: "match" (distance -log P averaged over K x K samples, the paper's), or "l2" (L2 between means).
    candidates: with "match", rank by match distance only that many entries per query, nearest by L2 of the means
    (two-stage, like the pose index); None ranks every entry by match distance (exact,
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

    def features(self, keypoints2d, visible, poses3d, profile: str = "input13", camera: int = 0) -> Features:
        if self.head_as_nose:
            keypoints2d, visible = input13_views(keypoints2d, visible, profile)
            profile = "input13"
        keypoints2d, visible = check_keypoints(keypoints2d, visible, profile)
        scores = None if visible.all() else visible.astype(np.float32)
        emb = self.embedder.embed(keypoints2d, profile=profile, scores=scores, key=camera_key(camera))
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


# --------------------------------------------------------------------------------------------------------------
# Ranking and the hit test.


def top_k(distances: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k smallest entries per row of distances (Q, N), nearest first -> (Q, min(k, N)).

    Ties are broken by the lower index, so the result does not depend on the partition algorithm.
    """
    distances = np.asarray(distances)
    q, n = distances.shape
    k = min(k, n)
    if k == n:
        part = np.broadcast_to(np.arange(n), (q, n))
    else:
        part = np.argpartition(distances, k - 1, axis=1)[:, :k]
        # Entries tied with the k-th value may have been cut arbitrarily: take all of them, then sort and cut.
        kth = np.take_along_axis(distances, part, axis=1).max(axis=1, keepdims=True)
        if np.count_nonzero(distances <= kth) > q * k:
            cand = [np.flatnonzero(row <= t) for row, t in zip(distances, kth[:, 0])]
            out = np.empty((q, k), np.int64)
            for i, c in enumerate(cand):
                out[i] = c[np.lexsort((c, distances[i, c]))][:k]
            return out
    vals = np.take_along_axis(distances, part, axis=1)
    order = np.lexsort((part, vals), axis=1)
    return np.take_along_axis(part, order, axis=1).astype(np.int64)


_NP_MPJPE_JIT = None


def _padded_np_mpjpe(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np_mpjpe(a, b) for (M, 17, 3) pairs, padded to a power-of-two M (prpose.buckets) so that few shapes get
    compiled."""
    global _NP_MPJPE_JIT
    if _NP_MPJPE_JIT is None:
        import jax

        from prpose.procrustes import np_mpjpe

        _NP_MPJPE_JIT = jax.jit(np_mpjpe)
    m = a.shape[0]
    return np.asarray(_NP_MPJPE_JIT(pad_rows(a, 1024), pad_rows(b, 1024)))[:m]


def retrieved_np_mpjpe(query_poses: np.ndarray, retrieved_poses: np.ndarray, batch: int = 32768) -> np.ndarray:
    """NP-MPJPE of each retrieved pose aligned onto its query: (Q, 17, 3), (Q, k, 17, 3) -> (Q, k)."""
    q, k = retrieved_poses.shape[:2]
    a = retrieved_poses.reshape(q * k, 17, 3).astype(np.float32)
    b = np.repeat(query_poses.astype(np.float32), k, axis=0)
    out = np.empty(q * k, np.float64)
    for s in range(0, q * k, batch):
        out[s:s + batch] = _padded_np_mpjpe(a[s:s + batch], b[s:s + batch])
    return out.reshape(q, k)


def hits_from_errors(errors: np.ndarray, ks: Sequence[int], kappa: float) -> np.ndarray:
    """errors (Q, k_max) of the ranked results -> hits (Q, len(ks)) bool: any of the first k below kappa.

    With fewer than k retrieved entries (a tiny index), Hit@k uses all of them.
    """
    match = np.asarray(errors) < kappa
    first = np.cumsum(match, axis=1) > 0
    cols = [min(k, first.shape[1]) - 1 for k in ks]
    return first[:, cols]


def pairwise_np_mpjpe_chunked(a: np.ndarray, b: np.ndarray, chunk: int = 256) -> np.ndarray:
    """[i, j] = NP-MPJPE of a[i] aligned onto b[j]; a (N, 17, 3), b (M, 17, 3) -> (N, M), chunked over N."""
    from prpose.procrustes import pairwise_np_mpjpe

    out = np.empty((a.shape[0], b.shape[0]), np.float64)
    b32 = pad_rows(np.asarray(b, np.float32))  # few distinct shapes: each new one is an XLA compile
    for s in range(0, a.shape[0], chunk):
        part = np.asarray(a[s:s + chunk], np.float32)
        out[s:s + chunk] = np.asarray(pairwise_np_mpjpe(pad_rows(part), b32))[:len(part), :b.shape[0]]
    return out


def expected_random_hit_rate(num_matches: np.ndarray, num_index: int, ks: Sequence[int]) -> np.ndarray:
    """Expected Hit@k of a uniformly random ranking: per query, 1 - C(N - m, k) / C(N, k).

    num_matches: (Q,) m, index entries within kappa of each query. Returns (len(ks),) the mean over queries.
    """
    m = np.asarray(num_matches, np.float64)
    out = []
    for k in ks:
        miss = np.ones_like(m)
        for t in range(min(k, num_index)):
            miss *= np.clip(num_index - m - t, 0, None) / (num_index - t)
        out.append(float(np.mean(1.0 - miss)))
    return np.array(out)


# --------------------------------------------------------------------------------------------------------------
# The protocol.


@dataclasses.dataclass
class PairResult:
    query_camera: str
    index_camera: str
    hit_rates: np.ndarray  # (len(ks),)
    query_rows: np.ndarray  # (Q,) positions into the ViewSet
    hits: np.ndarray  # (Q, len(ks)) bool
    num_index: int
    first_error: np.ndarray  # (Q,) NP-MPJPE of the top-1 retrieved pose


@dataclasses.dataclass
class CrossViewResult:
    """Per-pair Hit@k and their unweighted mean over ordered camera pairs."""

    method: str
    ks: tuple[int, ...]
    kappa: float
    camera_names: tuple[str, ...]
    pairs: list[PairResult]
    seconds: float
    settings: dict = dataclasses.field(default_factory=dict)

    @property
    def mean(self) -> np.ndarray:
        """(len(ks),) the protocol's number: mean over camera pairs of the per-pair Hit@k."""
        return np.mean([p.hit_rates for p in self.pairs], axis=0)

    def pair_matrix(self, k: int) -> np.ndarray:
        """(C, C) Hit@k with rows = query camera, columns = index camera; NaN on the diagonal."""
        c = len(self.camera_names)
        out = np.full((c, c), np.nan)
        j = self.ks.index(k)
        for p in self.pairs:
            out[self.camera_names.index(p.query_camera), self.camera_names.index(p.index_camera)] = p.hit_rates[j]
        return out

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "ks": list(self.ks),
            "kappa": self.kappa,
            "mean": {f"hit@{k}": float(v) for k, v in zip(self.ks, self.mean)},
            "pairs": [
                {"query_camera": p.query_camera, "index_camera": p.index_camera, "queries": int(p.hits.shape[0]),
                 "index": p.num_index, **{f"hit@{k}": float(v) for k, v in zip(self.ks, p.hit_rates)}}
                for p in self.pairs
            ],
            "seconds": round(self.seconds, 3),
            **({"settings": self.settings} if self.settings else {}),
        }


def camera_key(camera: int):
    """The PRNG key of camera `camera`'s embedding samples. Row i of a camera's views draws from fold_in(key, i)
    (prpose.inference), so one key for every camera would give a query and its own frame seen by another camera
    the same noise, pulling their samples together (about +0.5 Hit@1, bench/bench_regenerated_hitk.py)."""
    import jax

    return jax.random.fold_in(jax.random.key(0), camera)


def camera_pairs(num_cameras: int) -> list[tuple[int, int]]:
    """Every ordered pair of distinct cameras."""
    return [(a, b) for a, b in itertools.permutations(range(num_cameras), 2)]


def compute_features(method: RetrievalMethod, views: ViewSet, query_visible: np.ndarray | None = None,
                     query_keypoints: np.ndarray | None = None):
    """Features of every (frame, camera) view: list over cameras of Features (leading dim N)."""
    kps = views.keypoints2d if query_keypoints is None else query_keypoints
    vis = views.visible if query_visible is None else query_visible
    return [method.features(kps[:, c], vis[:, c], views.poses3d, profile=views.profile, camera=c)
            for c in range(views.num_cameras)]


def cross_view_hit_at_k(method: RetrievalMethod, views: ViewSet, ks: Sequence[int] = KS, kappa: float = KAPPA,
                        pairs: Sequence[tuple[int, int]] | None = None, query_chunk: int = 256,
                        query_visible: np.ndarray | None = None, query_keypoints: np.ndarray | None = None,
                        index_features=None, progress=None, pose_error: Callable | None = None) -> CrossViewResult:
    """Run the cross-view protocol for one method.

    views: the frames and cameras (ViewSet). ks: the k of Hit@k. kappa: the NP-MPJPE match threshold.
    pairs: ordered camera pairs (default: all). query_visible / query_keypoints (N, C, J[, 2]): replace the
    queries' visibility / keypoints (occlusion experiments); the index always uses the clean views.
    index_features: precomputed clean features (list over cameras), to reuse across occlusion settings.
    progress: optional callable(done, total, pair: PairResult), called after each camera pair (`pair_line`
    formats one plain line with an estimate of the time left; `prpose eval` feeds prpose.progress).
    pose_error: the hit test's error, (query labels (Q, ...), retrieved labels (Q, k, ...)) -> (Q, k), compared
    with kappa; the labels are rows of views.poses3d. Default :func:`retrieved_np_mpjpe` (single poses).
    """
    pose_error = retrieved_np_mpjpe if pose_error is None else pose_error
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise PrposeError(f"ks: got {ks}, expected positive integers")
    if not kappa > 0:
        raise PrposeError(f"kappa: got {kappa}, expected a positive NP-MPJPE threshold (paper: 0.1)")
    start = time.perf_counter()
    kmax = max(ks)
    if index_features is None:
        index_features = compute_features(method, views)
    if query_visible is None and query_keypoints is None:
        query_features = index_features
    else:
        query_features = compute_features(method, views, query_visible, query_keypoints)
    results = []
    pairs = list(pairs if pairs is not None else camera_pairs(views.num_cameras))
    for pi, (cq, ci) in enumerate(pairs):
        q_rows = np.flatnonzero(views.valid[:, cq])
        x_rows = np.flatnonzero(views.valid[:, ci])
        if q_rows.size == 0 or x_rows.size == 0:
            raise PrposeError(f"camera pair ({views.camera_names[cq]}, {views.camera_names[ci]}) has no valid "
                              f"{'queries' if q_rows.size == 0 else 'index entries'}")
        fx = take(index_features[ci], x_rows)
        hits, first = [], []
        for s in range(0, q_rows.size, query_chunk):
            rows = q_rows[s:s + query_chunk]
            dist = method.distances(take(query_features[cq], rows), fx)
            if isinstance(dist, Candidates):
                if dist.ids.shape != dist.distances.shape or dist.ids.shape[0] != rows.size:
                    raise PrposeError(f"method {method.name!r} returned candidates {dist.ids.shape} with distances "
                                      f"{dist.distances.shape}, expected ({rows.size}, C) both")
                local = np.take_along_axis(dist.ids, top_k(dist.distances, kmax), axis=1)
            else:
                dist = np.asarray(dist)
                if dist.shape != (rows.size, x_rows.size):
                    raise PrposeError(f"method {method.name!r} returned distances of shape {dist.shape}, "
                                      f"expected {(rows.size, x_rows.size)}")
                local = top_k(dist, kmax)
            ids = x_rows[local]
            err = np.asarray(pose_error(views.poses3d[rows], views.poses3d[ids]))
            hits.append(hits_from_errors(err, ks, kappa))
            first.append(err[:, 0])
        hits = np.concatenate(hits)
        results.append(PairResult(views.camera_names[cq], views.camera_names[ci], hits.mean(axis=0), q_rows,
                                  hits, int(x_rows.size), np.concatenate(first)))
        if progress is not None:
            progress(pi + 1, len(pairs), results[-1])
    return CrossViewResult(method.name, ks, float(kappa), tuple(views.camera_names), results,
                           time.perf_counter() - start, dict(views.settings))


def embedder_hit_at_k(embedder, dataset, split: str = "test", ks: Sequence[int] = KS, kappa: float = KAPPA,
                      ranking: str = "match", every: int = 1, *, max_frames: int | None = None,
                      candidates: int | None = None, cameras: Sequence[str] | None = None) -> dict:
    """Cross-view Hit@k of one embedder on a dataset split, as a flat JSON-able dict (training validation's
    metrics row, prpose.training.validate).

    embedder: `embed(keypoints, profile=..., scores=..., key=...)` and `match_params` (prpose.inference.PoseEmbedder).
    dataset: a PreparedDataset or its path. split, every, max_frames, cameras: the frames (views_from_dataset,
    projected ground-truth 2D; the views keep every h36m17 joint, the embedder takes its input joints by name).
    ranking, candidates: as :class:`EmbeddingMethod` (candidates None: exact).
    Returns {"hit@k" (mean over ordered camera pairs) for every k, "per_pair": [{"query_camera",
    "index_camera", "hit@k"...}], "num_frames", "dropped_frames", "num_pairs", "split", "kappa", "ranking",
    "candidates" (None when every entry was ranked exactly)}.
    """
    from prpose.views import views_from_dataset

    views = views_from_dataset(dataset, split, every, max_frames, cameras, profile="h36m17")
    result = cross_view_hit_at_k(EmbeddingMethod(embedder, ranking, candidates=candidates), views, ks, kappa)
    out = {f"hit@{k}": float(v) for k, v in zip(result.ks, result.mean)}
    out.update(per_pair=[{"query_camera": p.query_camera, "index_camera": p.index_camera,
                          **{f"hit@{k}": float(v) for k, v in zip(result.ks, p.hit_rates)}} for p in result.pairs],
               num_frames=views.num_frames, dropped_frames=views.settings["dropped_frames"],
               num_pairs=len(result.pairs), split=split, kappa=float(kappa), ranking=ranking,
               candidates=candidates if ranking == "match" and candidates is not None
               and candidates < views.num_frames else None)
    return out


def pair_line(name: str, ks: Sequence[int], start: float):
    """A `progress` callback for cross_view_hit_at_k that returns one plain line per camera pair: its Hit@k,
    the time since `start` (time.perf_counter()) and an estimate of the time left. Use as
    `progress=lambda *a: print(line(*a))` with `line = pair_line(name, ks, time.perf_counter())`."""

    def line(done: int, total: int, pair: PairResult) -> str:
        spent = time.perf_counter() - start
        return (f"{name}: pair {done}/{total} ({pair.query_camera} -> {pair.index_camera}, {pair.hits.shape[0]} "
                f"queries) Hit@{ks[0]} {100 * pair.hit_rates[0]:.1f}%; {spent:.0f} s, about "
                f"{spent / done * (total - done):.0f} s left")

    return line


def expected_random_result(views: ViewSet, ks: Sequence[int] = KS, kappa: float = KAPPA) -> dict:
    """The random baseline's expected Hit@k, per pair and mean, from the exact count of matches per query.

    Costs a full (N, N) NP-MPJPE matrix; use on subsampled frames.
    """
    ks = tuple(ks)
    err = pairwise_np_mpjpe_chunked(views.poses3d, views.poses3d)  # [x, q]: x aligned onto q
    per_pair = []
    for cq, ci in camera_pairs(views.num_cameras):
        q_rows = np.flatnonzero(views.valid[:, cq])
        x_rows = np.flatnonzero(views.valid[:, ci])
        m = (err[np.ix_(x_rows, q_rows)] < kappa).sum(axis=0)
        per_pair.append(expected_random_hit_rate(m, x_rows.size, ks))
    mean = np.mean(per_pair, axis=0)
    return {"method": "random (expected)", "ks": list(ks), "kappa": kappa,
            "mean": {f"hit@{k}": float(v) for k, v in zip(ks, mean)}}


def format_table(rows: Sequence[Mapping], ks: Sequence[int] = KS, title: str | None = None) -> str:
    """A plain-text table: one row per result dict (`to_dict()` form), Hit@k in percent."""
    ks = tuple(ks)
    name_w = max([len("method")] + [len(r["method"]) for r in rows])
    head = f"{'method':<{name_w}}  " + "  ".join(f"{'Hit@' + str(k):>7}" for k in ks)
    lines = ([title] if title else []) + [head, "-" * len(head)]
    for r in rows:
        vals = [r["mean"].get(f"hit@{k}") for k in ks]
        lines.append(f"{r['method']:<{name_w}}  " + "  ".join(
            f"{100 * v:7.1f}" if v is not None else f"{'-':>7}" for v in vals))
    return "\n".join(lines)


def format_pair_table(result: CrossViewResult, k: int = 1) -> str:
    """Per-camera-pair Hit@k (percent), rows = query camera, columns = index camera."""
    m = result.pair_matrix(k)
    names = result.camera_names
    w = max(8, max(len(n) for n in names))
    lines = [f"{result.method}: Hit@{k} per camera pair (row: query camera, column: index camera)",
             f"{'':<{w}}  " + "  ".join(f"{n:>{w}}" for n in names)]
    for i, n in enumerate(names):
        lines.append(f"{n:<{w}}  " + "  ".join(
            f"{'-':>{w}}" if np.isnan(v) else f"{100 * v:>{w}.1f}" for v in m[i]))
    return "\n".join(lines)
