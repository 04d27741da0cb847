"""NumPy match-distance kernels: the one NumPy implementation of the Pr-VIPE match distance.

The match distance (REFERENCE.md, "Matching probability") between two inputs with K1 and K2 samples is

    P(x1, x2) = mean over the K1 x K2 sample pairs of (1 - s) sigmoid(-a ||z1_i - z2_j||_2 + b) + s/2
    d(x1, x2) = -log P(x1, x2)

`prpose.matching` holds the JAX version (training, batched evaluation); this module holds the NumPy one used
without JAX by the pose index (its re-rank and its exact reference search) and hence the pose library:

* `match_distance_np` / `pairwise_match_distance_np`: float64, exact differences, log space throughout (a
  log-sum-exp over pairs): the reference, finite and ordered for any input.
* `rerank_distances` (each query against its own candidates) and `scan_distances` (one query against a block of
  entries): float32, fast. Sample distances use |q|^2 + |x|^2 - 2 q.x (a matmul over D); the re-rank first
  centres both sides on the query's sample mean, so the cancellation error is small exactly where it matters
  (entries near the query). The mean over the K x K pairs is taken over sigmoid values, which lie in [0, 1]:
  their float32 mean has a relative error ~1e-7 and only fails when every pair underflows (a r - b > ~87);
  those rows are recomputed with the float64 reference, so d is finite and ordered for any input (also when
  s = 0). This is ~4x faster than evaluating log-sigmoid and a log-sum-exp for every pair, with the same result
  (tests compare with an independent float64 log-space reference).
"""

from __future__ import annotations

import math

import numpy as np

from prpose.errors import PrposeError

#: A float32 mean sigmoid below this (per pair) -> the row is recomputed with the float64 reference.
UNDERFLOW = 1e-30


def validate_match_params(match_params, where: str) -> tuple[float, float, float]:
    """(a, b, smoothing) as floats, checked: a finite and > 0, b finite, 0 <= smoothing < 1."""
    try:
        a, b, s = (float(v) for v in match_params)
    except (TypeError, ValueError):
        raise PrposeError(f"{where}: match_params={match_params!r}, expected three numbers (a, b, smoothing)")
    if not (math.isfinite(a) and a > 0):
        raise PrposeError(f"{where}: match parameter a={a!r}, expected a finite number > 0")
    if not math.isfinite(b):
        raise PrposeError(f"{where}: match parameter b={b!r}, expected a finite number")
    if not (0.0 <= s < 1.0):
        raise PrposeError(f"{where}: smoothing={s!r}, expected 0 <= smoothing < 1")
    return a, b, s


# ----------------------------------------------------------------------------------------------------------
# float64 reference (log space)


def _distance_from_pair_distances64(dist, a, b, smoothing):
    """dist (..., K1, K2) float64 sample distances -> (...) match distance, in log space."""
    log_sig = -np.logaddexp(0.0, a * dist - b)  # log sigmoid(b - a r), stable for both signs
    peak = log_sig.max(axis=(-2, -1), keepdims=True)
    lse = np.log(np.exp(log_sig - peak).sum(axis=(-2, -1))) + peak[..., 0, 0]
    log_mean_sig = lse - np.log(dist.shape[-2] * dist.shape[-1])
    with np.errstate(divide="ignore"):  # log(0) = -inf when s == 0, which logaddexp handles
        log_smooth = np.log(smoothing / 2.0)
    return -np.logaddexp(np.log1p(-smoothing) + log_mean_sig, log_smooth)


def match_distance_np(samples1, samples2, a, b, smoothing):
    """float64 match distance, broadcasting over leading axes (twin of `prpose.matching.match_distance`).

    samples1: (..., K1, D), samples2: (..., K2, D) (leading shapes broadcast, e.g. (1, K, D) against
    (C, K, D) scores C entries for one query) -> (...) float64.
    """
    a, b, smoothing = validate_match_params((a, b, smoothing), "match_distance_np")
    s1 = np.asarray(samples1, np.float64)
    s2 = np.asarray(samples2, np.float64)
    if s1.ndim < 2 or s2.ndim < 2 or s1.shape[-1] != s2.shape[-1]:
        raise PrposeError(
            f"match_distance_np: samples1 {s1.shape} and samples2 {s2.shape}, expected (..., K, D) with equal D"
        )
    diff = s1[..., :, None, :] - s2[..., None, :, :]
    dist = np.sqrt(np.sum(diff * diff, axis=-1))  # (..., K1, K2)
    return _distance_from_pair_distances64(dist, a, b, smoothing)


def pairwise_match_distance_np(queries, entries, a, b, smoothing, chunk_size: int = 256):
    """float64 all-pairs match distance: queries (Q, K1, D), entries (N, K2, D) -> (Q, N).

    Exact differences, processed `chunk_size` entries at a time so memory stays ~Q x chunk x K1 x K2 x D.
    """
    q = np.asarray(queries, np.float64)
    x = np.asarray(entries, np.float64)
    if q.ndim != 3 or x.ndim != 3 or q.shape[-1] != x.shape[-1]:
        raise PrposeError(
            f"pairwise_match_distance_np: queries {q.shape} and entries {x.shape}, expected (Q, K, D) and "
            "(N, K, D) with equal D"
        )
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise PrposeError(f"pairwise_match_distance_np: chunk_size={chunk_size!r}, expected a positive integer")
    out = np.empty((q.shape[0], x.shape[0]), np.float64)
    for start in range(0, x.shape[0], chunk_size):
        block = x[start : start + chunk_size]
        out[:, start : start + block.shape[0]] = match_distance_np(q[:, None], block[None], a, b, smoothing)
    return out


# ----------------------------------------------------------------------------------------------------------
# float32 kernels (the index's re-rank and exact search)


def _sigmoid_sum_to_distance(total, num_pairs, smoothing):
    """Sum of sigmoid values over K x K pairs (...) -> d = -log((1-s) mean + s/2), float64 (...)."""
    mean = np.asarray(total, np.float64) / num_pairs
    with np.errstate(divide="ignore"):  # s = 0 and an underflowed mean give +inf; those rows are redone
        return -np.log((1.0 - smoothing) * mean + smoothing / 2.0)


def _sigmoid_in_place(r, a, b):
    """r (...) sample distances -> sigmoid(b - a r) = 1 / (1 + exp(a r - b)), overwriting r."""
    r *= a
    r -= b
    with np.errstate(over="ignore"):  # exp overflow -> inf -> sigmoid exactly 0, which is the right limit
        np.exp(r, out=r)
    r += 1.0
    np.reciprocal(r, out=r)
    return r


def rerank_distances(query_samples, candidate_samples, a, b, smoothing):
    """Exact match distance of each query against its own candidates, float32 arithmetic.

    query_samples: (Q, K1, D); candidate_samples: (Q, C, K2, D) -> (Q, C) float64 distances d.

    Both sides are centred on the query's sample mean (small cancellation error near the query), then one matmul
    per query gives a^2 r^2 for all C x K2 x K1 sample pairs at once: candidate rows [x, |x|^2, 1] against query
    rows [-2 a^2 q, a^2, a^2 |q|^2]. What remains is element-wise: |.| (a^2 r^2 >= 0 up to rounding; abs is ~5x
    cheaper than a clamp here and differs only inside the rounding error), sqrt, exp, reciprocal, and the sum over
    the K1 x K2 pairs as a matrix-vector product (~4x cheaper than a reduction along the axis).
    """
    q = np.asarray(query_samples, np.float32)
    nq, nc, k2, dim = np.shape(candidate_samples)
    k1 = q.shape[1]
    centre = q.mean(axis=1, keepdims=True)  # (Q, 1, D)
    qc = q - centre
    x = np.empty((nq, nc * k2, dim + 2), np.float32)
    np.subtract(np.reshape(candidate_samples, (nq, nc * k2, dim)), centre, out=x[..., :dim])
    x[..., dim] = np.einsum("qnd,qnd->qn", x[..., :dim], x[..., :dim])
    x[..., dim + 1] = 1.0
    a2 = np.float32(a * a)
    qa = np.empty((nq, k1, dim + 2), np.float32)
    np.multiply(qc, -2.0 * a2, out=qa[..., :dim])
    qa[..., dim] = a2
    qa[..., dim + 1] = a2 * np.einsum("qkd,qkd->qk", qc, qc)
    r = np.matmul(x, qa.transpose(0, 2, 1))  # (Q, C*K2, K1): a^2 r^2
    np.abs(r, out=r)
    np.sqrt(r, out=r)  # a r
    r -= np.float32(b)
    with np.errstate(over="ignore"):  # exp overflow -> inf -> sigmoid exactly 0, which is the right limit
        np.exp(r, out=r)
    r += 1.0
    np.reciprocal(r, out=r)  # sigmoid(b - a r)
    total = (r.reshape(nq * nc, k2 * k1) @ np.ones(k2 * k1, np.float32)).reshape(nq, nc)
    d = _sigmoid_sum_to_distance(total, k1 * k2, smoothing)
    low = total < UNDERFLOW * k1 * k2
    for qi, ci in zip(*np.nonzero(low)):
        d[qi, ci] = match_distance_np(q[qi], candidate_samples[qi, ci], a, b, smoothing)
    return d


def sample_norms(samples) -> np.ndarray:
    """Squared norms (N * K,) float32 of every sample of entries (N, K, D), for `scan_distances`."""
    flat = np.asarray(samples).reshape(-1, np.shape(samples)[-1]).astype(np.float32)
    return np.einsum("nd,nd->n", flat, flat)


def scan_distances(query, entries, entry_norms, a, b, smoothing):
    """Match distance of one query against a block of entries, float32 arithmetic.

    query: (K1, D) float32; entries: (n, K2, D); entry_norms: (n * K2,) their `sample_norms` -> (n,) float64.
    """
    k1 = len(query)
    n, k2, dim = entries.shape
    x = entries.reshape(-1, dim).astype(np.float32, copy=False)
    r = query @ x.T  # (K1, n*K2)
    r *= -2.0
    r += entry_norms
    r += np.einsum("kd,kd->k", query, query)[:, None]
    np.maximum(r, 0.0, out=r)
    np.sqrt(r, out=r)
    _sigmoid_in_place(r, a, b)
    total = r.reshape(k1, n, k2).sum(axis=2).sum(axis=0)
    d = _sigmoid_sum_to_distance(total, k1 * k2, smoothing)
    for j in np.flatnonzero(total < UNDERFLOW * k1 * k2):
        d[j] = match_distance_np(query, entries[j], a, b, smoothing)
    return d
