"""Exact reference search: the match distance from each query to every entry (all K x K sample pairs).

The two-stage search of `prpose.index.core.PoseIndex` is measured against this ranking (bench/bench_index.py,
tests/test_index.py). It costs ~N x K^2 sample distances per query (about 1.5 s per query at 1M entries here).
"""

from __future__ import annotations

import numpy as np

from prpose.index.kernels import scan_distances

#: Entries per block of the scan: keeps a (K, block * K) block of sample distances in cache.
ENTRY_BLOCK = 1024


def exact_search(samples, norms, query_samples, k: int, match_params) -> tuple[np.ndarray, np.ndarray]:
    """The min(k, N) entries nearest by match distance to each query, sorted by (distance, id).

    samples: (N, K2, D) entries (any float dtype); norms: (N * K2,) `kernels.sample_norms(samples)`;
    query_samples: (Q, K1, D) float32; match_params: (a, b, smoothing) checked.
    Returns (distances (Q, min(k, N)) float64, ids (Q, min(k, N)) int64).
    """
    a, b, s = match_params
    n, kk, _ = samples.shape
    keep = min(k, n)
    out_d = np.empty((len(query_samples), keep))
    out_i = np.empty((len(query_samples), keep), np.int64)
    for qi, q in enumerate(query_samples):
        d = np.empty(n)
        for lo in range(0, n, ENTRY_BLOCK):
            hi = min(lo + ENTRY_BLOCK, n)
            d[lo:hi] = scan_distances(q, samples[lo:hi], norms[lo * kk : hi * kk], a, b, s)
        top = np.argpartition(d, keep - 1)[:keep] if keep < n else np.arange(n)
        # Include every entry tied with the k-th distance so that the (distance, id) order decides.
        kth = d[top].max()
        top = np.flatnonzero(d <= kth)
        order = np.lexsort((top, d[top]))[:keep]
        out_d[qi] = d[top[order]]
        out_i[qi] = top[order]
    return out_d, out_i
