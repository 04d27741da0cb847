"""Cross-view retrieval Hit@k on a prepared dataset split (the paper's protocol, REFERENCE.md).

For every ordered pair of distinct cameras (c_q, c_i): the queries are the split's frames seen from c_q, the
index is the same frames seen from c_i. A query scores a hit at k when at least one of its k nearest index
entries has NP-MPJPE < kappa to the query's 3D pose (both normalised h36m17; the retrieved pose is aligned
onto the query's). Hit@k is reported per camera pair and as the mean over pairs.

Ranking is by the match distance d = -log P (default, what the authors' Hit@k uses) or by the L2 distance of
the embedding means (cheaper; an ablation). Work is chunked over queries so that the (chunk, N, K, K) sample
distances stay within a fixed memory budget.

The same frames enter every camera pair: a frame is evaluated only if its view is usable in every camera
(``prpose.pairs.prepare_views``) and its 3D normalisation is valid; the dropped count is reported.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from prpose.errors import PrposeError
from prpose.normalize import normalize_3d
from prpose.pairs import prepare_views

# Elements of the (chunk, N, K, K) sample-distance tensor per query chunk (float32: 4 bytes each).
_ELEMENT_BUDGET = 1 << 25


def _as_embeddings(out, where: str):
    """Accept an Embeddings-like object (.mean, .samples) or a (mean, stddev, samples) tuple."""
    if hasattr(out, "mean") and hasattr(out, "samples"):
        mean, samples = out.mean, out.samples
    elif isinstance(out, (tuple, list)) and len(out) == 3:
        mean, _, samples = out
    else:
        raise PrposeError(f"{where}: embed_fn must return Embeddings(mean, stddev, samples) or a 3-tuple, "
                          f"got {type(out).__name__}")
    return np.asarray(mean, np.float32), np.asarray(samples, np.float32)


@functools.partial(jax.jit, static_argnames=("maxk", "ranking"))
def _top_k_chunk(q_mean, q_samples, x_mean, x_samples, a, b, s, maxk: int, ranking: str):
    """Indices (Q, maxk) of the nearest index entries for a chunk of queries."""
    if ranking == "match":
        from prpose.matching import pairwise_match_distance

        dist = pairwise_match_distance(q_samples, x_samples, a, b, s)
    else:
        dist = (jnp.sum(q_mean ** 2, -1)[:, None] - 2.0 * q_mean @ x_mean.T + jnp.sum(x_mean ** 2, -1)[None, :])
    return jax.lax.top_k(-dist, maxk)[1]


@functools.partial(jax.jit, static_argnames=("maxk", "candidates"))
def _top_k_rerank_chunk(q_mean, q_samples, x_mean, x_samples, a, b, s, maxk: int, candidates: int):
    """Top ``maxk`` by match distance among the ``candidates`` nearest entries by L2 of means: (Q, maxk)."""
    from prpose.matching import match_distance

    l2 = jnp.sum(q_mean ** 2, -1)[:, None] - 2.0 * q_mean @ x_mean.T + jnp.sum(x_mean ** 2, -1)[None, :]
    cand = jax.lax.top_k(-l2, candidates)[1]  # (Q, C)
    q, c = cand.shape
    k, d = q_samples.shape[1:]
    queries = jnp.broadcast_to(q_samples[:, None], (q, c, k, d)).reshape(q * c, k, d)
    dist = match_distance(queries, x_samples[cand].reshape(q * c, -1, d), a, b, s).reshape(q, c)
    order = jax.lax.top_k(-dist, maxk)[1]
    return jnp.take_along_axis(cand, order, axis=1)


@jax.jit
def _np_mpjpe_rows(query_poses, retrieved_poses):
    """query (Q, 17, 3), retrieved (Q, k, 17, 3) -> (Q, k) NP-MPJPE of each retrieved pose onto its query."""
    from prpose.procrustes import np_mpjpe

    return np_mpjpe(retrieved_poses, jnp.broadcast_to(query_poses[:, None], retrieved_poses.shape))


def cross_view_hit_at_k(
    embed_fn: Callable,
    dataset,
    split: str = "test",
    ks=(1, 5, 10, 20),
    kappa: float = 0.1,
    ranking: str = "match",
    every: int = 1,
    *,
    match_params=None,
    max_frames: int | None = None,
    cameras=None,
    candidates: int | None = None,
) -> dict:
    """Cross-view Hit@k of an embedding function on one split.

    Args:
      embed_fn: keypoints (N, 17, 2) h36m17 pixels float32 -> Embeddings(mean (N, D), stddev, samples
        (N, K, D)) or a (mean, stddev, samples) tuple. ``PoseEmbedder`` users pass
        ``lambda k: model.embed(k, profile="h36m17")``.
      dataset: a ``PreparedDataset`` or its path.
      split: "train", "val" or "test".
      ks: the k of Hit@k (each <= number of frames).
      kappa: NP-MPJPE threshold of a match (0.1 in the paper).
      ranking: "match" (match distance; needs ``match_params``) or "l2" (L2 of means).
      every: keep every n-th frame of the split (the authors subsample test frames ~10x).
      match_params: (a, b, smoothing) of the model (``PoseEmbedder.match_params``); required for "match".
      max_frames: after ``every``, keep at most this many frames, evenly spaced.
      cameras: optional list of camera slots to evaluate (default all).
      candidates: with ranking="match", rank by match distance only the ``candidates`` nearest entries by L2 of
        the means (two-stage, like the pose index; ~N/candidates times cheaper); None = exact over all entries.
    Returns:
      dict with "hit@k" (mean over ordered pairs) for every k, "per_pair" (list of dicts with query/index
      camera names and their hit@k), "num_frames", "dropped_frames", "num_pairs", "split", "kappa", "ranking".
    """
    if ranking not in ("match", "l2"):
        raise PrposeError(f"cross_view_hit_at_k: ranking={ranking!r}, expected 'match' or 'l2'")
    if ranking == "match" and match_params is None:
        raise PrposeError("cross_view_hit_at_k: ranking='match' needs match_params=(a, b, smoothing)")
    if not isinstance(every, int) or every < 1:
        raise PrposeError(f"cross_view_hit_at_k: every={every!r}, expected an integer >= 1")
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise PrposeError(f"cross_view_hit_at_k: ks={ks!r}, expected positive integers")
    if not hasattr(dataset, "keypoints2d"):
        from prpose.dataset import load_dataset

        dataset = load_dataset(dataset)

    rows = np.asarray(dataset.indices(split=split))[::every]
    if max_frames and rows.size > max_frames:
        rows = rows[np.linspace(0, rows.size - 1, max_frames).round().astype(np.int64)]
    if rows.size == 0:
        raise PrposeError(f"cross_view_hit_at_k: split {split!r} has no frames")
    num_cameras = dataset.keypoints2d.shape[1]
    cams = list(range(num_cameras)) if cameras is None else [int(c) for c in cameras]
    if len(cams) < 2 or min(cams) < 0 or max(cams) >= num_cameras:
        raise PrposeError(f"cross_view_hit_at_k: cameras={cams!r}, expected >= 2 slots in [0, {num_cameras})")

    keypoints = np.asarray(dataset.keypoints2d[rows], np.float32)[:, cams]  # (N, C, 17, 2)
    _, usable = prepare_views(keypoints, np.asarray(dataset.visibility[rows])[:, cams])
    poses, pose_valid = jax.jit(normalize_3d)(np.asarray(dataset.poses3d[rows], np.float32))
    keep = usable.all(axis=1) & np.asarray(pose_valid)
    dropped = int((~keep).sum())
    keypoints, poses = keypoints[keep], jnp.asarray(np.asarray(poses)[keep])
    n = int(keep.sum())
    if n == 0:
        raise PrposeError(f"cross_view_hit_at_k: no frame of split {split!r} is usable in all cameras")
    maxk = min(max(ks), n)
    if max(ks) > n:
        raise PrposeError(f"cross_view_hit_at_k: k={max(ks)} exceeds the {n} frames evaluated")

    means, samples = [], []
    for c in range(len(cams)):
        m, s = _as_embeddings(embed_fn(keypoints[:, c]), "cross_view_hit_at_k")
        if m.shape[0] != n or samples and s.shape != samples[0].shape:
            raise PrposeError(f"cross_view_hit_at_k: embed_fn returned {m.shape[0]} rows for {n} keypoints")
        means.append(jnp.asarray(m)), samples.append(jnp.asarray(s))
    k_samples = samples[0].shape[1]
    a, b, s = (match_params if match_params is not None else (1.0, 0.0, 0.0))
    a, b, s = jnp.float32(a), jnp.float32(b), jnp.float32(s)
    rerank = ranking == "match" and candidates is not None and maxk <= candidates < n
    if candidates is not None and candidates < 1:
        raise PrposeError(f"cross_view_hit_at_k: candidates={candidates!r}, expected a positive integer or None")
    width = candidates if rerank else n
    chunk = max(1, min(n, _ELEMENT_BUDGET // max(1, width * k_samples * k_samples)))

    names = list(getattr(dataset, "camera_names", [str(c) for c in range(num_cameras)]))
    per_pair = []
    for qi, cq in enumerate(cams):
        for xi, ci in enumerate(cams):
            if qi == xi:
                continue
            hits = np.zeros((len(ks),), np.int64)
            for start in range(0, n, chunk):
                stop = min(n, start + chunk)
                args = (means[qi][start:stop], samples[qi][start:stop], means[xi], samples[xi], a, b, s)
                if rerank:
                    top = _top_k_rerank_chunk(*args, maxk=maxk, candidates=int(candidates))
                else:
                    top = _top_k_chunk(*args, maxk=maxk, ranking=ranking)
                err = np.asarray(_np_mpjpe_rows(poses[start:stop], poses[top]))  # (q, maxk)
                match = np.logical_or.accumulate(err < kappa, axis=1)  # match[:, j]: a hit within the top j+1
                hits += np.array([match[:, k - 1].sum() for k in ks])
            row = {"query_camera": names[cq], "index_camera": names[ci]}
            row.update({f"hit@{k}": float(h) / n for k, h in zip(ks, hits)})
            per_pair.append(row)

    result = {f"hit@{k}": float(np.mean([p[f"hit@{k}"] for p in per_pair])) for k in ks}
    result.update(per_pair=per_pair, num_frames=n, dropped_frames=dropped, num_pairs=len(per_pair),
                  split=split, kappa=float(kappa), ranking=ranking, candidates=candidates if rerank else None)
    return result


def format_table(result: dict) -> str:
    """A plain-text table of a :func:`cross_view_hit_at_k` result (per pair, then the mean)."""
    keys = [k for k in result if k.startswith("hit@")]
    header = f"{'query':>12} {'index':>12} " + " ".join(f"{k:>8}" for k in keys)
    lines = [header]
    for row in result["per_pair"]:
        lines.append(f"{row['query_camera']:>12} {row['index_camera']:>12} "
                     + " ".join(f"{100 * row[k]:8.1f}" for k in keys))
    lines.append(f"{'mean':>12} {'':>12} " + " ".join(f"{100 * result[k]:8.1f}" for k in keys))
    lines.append(f"({result['num_frames']} frames of split {result['split']!r}, {result['dropped_frames']} dropped, "
                 f"kappa {result['kappa']}, ranking {result['ranking']})")
    return "\n".join(lines)
