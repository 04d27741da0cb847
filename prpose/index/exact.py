"""Exact reference search: the match distance from each query to every entry (all K x K sample pairs).

The two-stage search of `prpose.index.core.PoseIndex` is measured against this ranking (bench/bench_index.py,
tests/test_index.py). It costs ~N x K^2 sample distances per query (about 1.5 s per query at 1M entries here).
Entries are taken in blocks (`entry_samples(lo, hi)`: stored samples sliced, or regenerated ones for the
"gaussian" storage) and each block is scored against a group of queries, so every block is produced once per
group and memory stays bounded (no per-entry cache, no (Q, N) distance matrix) whatever N.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from prpose.index.kernels import sample_norms, scan_distances

#: Entries per block of the scan: keeps a (K, block * K) block of sample distances in cache.
ENTRY_BLOCK = 1024
#: Entries whose samples are produced at once (~42 MB of float32 samples at K = 20, D = 16).
SCAN_BLOCK = 32 * ENTRY_BLOCK
#: Queries scored against one produced block (their (group, SCAN_BLOCK) float64 distances: 32 MB).
QUERY_GROUP = 128


def exact_search(entry_samples: Callable[[int, int], np.ndarray], count: int, query_samples, k: int,
                 match_params) -> tuple[np.ndarray, np.ndarray]:
    """The min(k, count) entries nearest by match distance to each query, sorted by (distance, id).

    entry_samples(lo, hi): the samples (hi - lo, K2, D) (any float dtype) of entries lo..hi-1; count: N entries;
    query_samples: (Q, K1, D) float32; match_params: (a, b, smoothing) checked.
    Returns (distances (Q, min(k, N)) float64, ids (Q, min(k, N)) int64).
    """
    a, b, s = match_params
    keep = min(k, count)
    nq = len(query_samples)
    out_d = np.empty((nq, keep))
    out_i = np.empty((nq, keep), np.int64)
    for qlo in range(0, nq, QUERY_GROUP):
        group = query_samples[qlo : qlo + QUERY_GROUP]
        best_d = np.empty((len(group), 0))
        best_i = np.empty((len(group), 0), np.int64)
        for lo in range(0, count, SCAN_BLOCK):
            hi = min(lo + SCAN_BLOCK, count)
            x = entry_samples(lo, hi)
            norms = sample_norms(x)
            kk = x.shape[1]
            d = np.empty((len(group), hi - lo))
            for qi, q in enumerate(group):
                for blo in range(0, hi - lo, ENTRY_BLOCK):
                    bhi = min(blo + ENTRY_BLOCK, hi - lo)
                    d[qi, blo:bhi] = scan_distances(q, x[blo:bhi], norms[blo * kk : bhi * kk], a, b, s)
            ids = np.broadcast_to(np.arange(lo, hi), d.shape)
            best = [_best(np.concatenate([best_d[r], d[r]]), np.concatenate([best_i[r], ids[r]]), keep)
                    for r in range(len(group))]
            best_d = np.stack([bd for bd, _ in best])
            best_i = np.stack([bi for _, bi in best])
        out_d[qlo : qlo + QUERY_GROUP] = best_d
        out_i[qlo : qlo + QUERY_GROUP] = best_i
    return out_d, out_i


def _best(d, ids, keep):
    """The `keep` smallest (distance, id) of one query's distances d (n,) and ids (n,), in that order; distances
    compared as reported, in float32 (like `PoseIndex` orders its hits)."""
    d = d.astype(np.float32).astype(np.float64)
    if len(d) > keep:
        top = np.argpartition(d, keep - 1)[:keep]
        # Every entry tied with the keep-th distance stays, so that the (distance, id) order decides.
        top = np.flatnonzero(d <= d[top].max())
        d, ids = d[top], ids[top]
    order = np.lexsort((ids, d))[:keep]
    return d[order], ids[order]
