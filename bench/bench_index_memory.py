"""Working memory of `PoseIndex.search` against k: blocked (the default) vs one unbounded block (the old way).

Issue 9 item 14: `prpose query` grew without bound with --k (2.9 GB for 32 queries at k = 2,500). The search now
runs in blocks of a bounded number of (query, candidate) pairs (`prpose.index.core._PAIR_BUDGET` in the re-rank,
`_CANDIDATE_BUDGET` in the FAISS stage). This script prints, for 32
queries against N random Pr-VIPE-shaped entries (K = 20, D = 16), the peak memory allocated during one search
(tracemalloc, which numpy reports to) and its wall time, with the blocked search and with one block holding
every pair (budget = infinity, the behaviour before) in the same run.

    python bench/bench_index_memory.py [--entries 50000] [--queries 32] [--k 10 250 2500]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from prpose.index import core as index_mod
from prpose.index import PoseIndex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--k", type=int, nargs="+", default=[10, 250, 2500])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n, kk, d = args.entries, 20, 16
    idx = PoseIndex(d, kk, (1.0, 0.0, 0.1), "bench", factory="Flat")
    means = rng.normal(size=(n, d)).astype(np.float32)
    idx.add(means, (means[:, None] + 0.2 * rng.normal(size=(n, kk, d))).astype(np.float32))
    qm = means[: args.queries] + 0.05 * rng.normal(size=(args.queries, d)).astype(np.float32)
    qs = (qm[:, None] + 0.2 * rng.normal(size=(args.queries, kk, d))).astype(np.float32)
    idx.search(qm[:1], qs[:1], k=1, fingerprint="bench")  # build the FAISS stage outside the measurement
    default_budget = index_mod._PAIR_BUDGET, index_mod._CANDIDATE_BUDGET
    print(f"{n} entries (K={kk}, D={d}), {args.queries} queries, candidates = max(8k, 64)")
    print(f"{'k':>6} {'search':<22} {'peak MB':>8} {'seconds':>8}")
    for k in args.k:
        ids = {}
        for label, budget in (("blocked", default_budget), ("one block (before)", (1 << 62, 1 << 62))):
            index_mod._PAIR_BUDGET, index_mod._CANDIDATE_BUDGET = budget
            tracemalloc.start()
            start = time.perf_counter()
            ids[label] = idx.search(qm, qs, k=k, fingerprint="bench").ids
            seconds = time.perf_counter() - start
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            print(f"{k:>6} {label:<22} {peak / 1e6:>8.0f} {seconds:>8.2f}")
        index_mod._PAIR_BUDGET, index_mod._CANDIDATE_BUDGET = default_budget
        first, second = ids.values()
        assert np.array_equal(first, second), "blocked and one-block searches disagree"


if __name__ == "__main__":
    main()
