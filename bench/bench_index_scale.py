"""10M entries on one machine: build, memory, save/load, queries/s and recall of a "gaussian" pose index.

    .venv/bin/python bench/bench_index_scale.py --out /work/scratch/scale/idx10m     # 10,000,000 entries
    .venv/bin/python bench/bench_index_scale.py --size 1000000                       # the 1M baseline

Synthetic entries (bench/bench_index.py's clustered Gaussian mixture, means + float16 stddevs; no samples are
ever drawn for the entries: the index regenerates them), one `PoseIndex.add`, the FAISS candidate stage built
(--factory, default "auto" as `prpose index build`: IVF16384,Flat at 10M, IVF4096,Flat at 1M; HNSW32's graph
takes about an hour to build at 10M on this 2-core machine and 4.6x the memory), optionally saved to --out and
loaded back (checksums verified; the load rebuilds the candidate vectors, which are not saved). Prints peak RSS of
the process (ru_maxrss), the index's bytes per entry in memory (means, stddevs, candidate vectors, FAISS) and on
disk, build / save / load seconds, batched queries/s (k = 20, default candidates; CPU time per batch of 1000),
p50 / p99 of single-query latency, and recall@1 / recall@20 of the two-stage search against the exact ranking
over all entries on the first --exact-queries queries (the exact ranking costs ~N x 400 sample distances per query).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time

# bench_index sets the BLAS/OpenMP threads from --threads before numpy starts its pools.
from bench_index import DEFAULT_MATCH, faiss_bytes, recall, synthetic

import numpy as np  # noqa: E402

from prpose.index import PoseIndex  # noqa: E402

GIB = 1 << 30


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # Linux: kilobytes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=10_000_000)
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--exact-queries", type=int, default=20)
    p.add_argument("--single-queries", type=int, default=200)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--factory", default="auto")
    p.add_argument("--match", type=float, nargs=3, default=DEFAULT_MATCH, metavar=("A", "B", "S"))
    p.add_argument("--out", default=None, help="save the index here, load it back, then delete it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (read before numpy starts)")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    print(f"# machine: {os.cpu_count()} cores, {args.threads} thread(s) used, load average {os.getloadavg()[0]:.2f}; "
          f"RAM {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GIB:.1f} GiB", flush=True)
    (means, stddevs, _), (qm, _, qs) = synthetic(args.size, args.queries, 16, 20, args.seed, with_stddev=True,
                                                 entry_samples=False)
    n, k, fp, match = len(means), args.k, "synthetic", tuple(args.match)
    print(f"# SYNTHETIC clustered Gaussian embeddings: N={n:,} entries, {len(qm):,} queries, k={k}, D=16, K=20, "
          f"match (a, b, s)={tuple(round(v, 4) for v in match)}; generated in {time.perf_counter() - t0:.0f} s, "
          f"peak RSS {peak_rss_gib():.2f} GiB", flush=True)

    t = time.perf_counter()
    index = PoseIndex(16, 20, match, fp, factory=args.factory, sample_storage="gaussian")
    index.add(means, stddevs=stddevs)
    del means, stddevs
    added = time.perf_counter() - t
    t = time.perf_counter()
    index._ensure_faiss()
    built = time.perf_counter() - t
    per_faiss = faiss_bytes(index) / n
    per_vectors = index._vectors.nbytes / n  # the candidate vectors the search re-sorts candidates by
    per_entry = index.means().nbytes / n + index.stored().nbytes / n + per_vectors + per_faiss
    print(f"build: add {added:.0f} s + {index.faiss_factory} {built:.0f} s; in memory {per_entry:.1f} B/entry (means "
          f"{index.means().nbytes / n:.0f} + stddevs {index.stored().nbytes / n:.0f} + candidate vectors "
          f"{per_vectors:.0f} + FAISS {per_faiss:.1f}) = {per_entry * n / GIB:.2f} GiB; peak RSS "
          f"{peak_rss_gib():.2f} GiB", flush=True)

    if args.out:
        t = time.perf_counter()
        index.save(args.out)
        saved = time.perf_counter() - t
        disk = sum(f.stat().st_size for f in os.scandir(args.out) if f.is_file())
        t = time.perf_counter()
        index = PoseIndex.load(args.out, expected_fingerprint=fp)
        loaded = time.perf_counter() - t
        print(f"disk: {disk / n:.1f} B/entry ({disk / GIB:.2f} GiB), save {saved:.0f} s, load (SHA-256 verified, "
              f"candidate vectors rebuilt) {loaded:.0f} s; peak RSS {peak_rss_gib():.2f} GiB", flush=True)
        shutil.rmtree(args.out)

    t, cpu = time.perf_counter(), time.process_time()
    ids, batch_cpu = [], []  # per batch of 1000: the first batch after a load costs what the next ones do
    for lo in range(0, len(qm), 1000):
        c = time.process_time()
        ids.append(index.search(qm[lo:lo + 1000], qs[lo:lo + 1000], k, fingerprint=fp).ids)
        batch_cpu.append((time.process_time() - c) / len(ids[-1]) * 1000)
    ids = np.concatenate(ids)
    qps, cpu_qps = len(qm) / (time.perf_counter() - t), len(qm) / (time.process_time() - cpu)
    latency, cpu_latency = [], []
    for i in range(min(args.single_queries, len(qm))):
        t, cpu = time.perf_counter(), time.process_time()
        index.search(qm[i:i + 1], qs[i:i + 1], k, fingerprint=fp)
        latency.append(time.perf_counter() - t)
        cpu_latency.append(time.process_time() - cpu)
    p50, p99 = np.percentile(np.array(latency) * 1000, [50, 99])
    print(f"search (k={k}, default candidates): batched {qps:.0f} queries/s wall, {cpu_qps:.0f} per CPU "
          f"second (CPU ms per query by batch of 1000: {' '.join(f'{v:.2f}' for v in batch_cpu)}); single query "
          f"wall p50 {p50:.2f} ms p99 {p99:.2f} ms, CPU p50 "
          f"{np.median(cpu_latency) * 1000:.2f} ms (wall time includes the machine's other load); peak RSS "
          f"{peak_rss_gib():.2f} GiB", flush=True)

    ne = min(args.exact_queries, len(qm))
    t = time.perf_counter()
    exact = index.search_exact(qm[:ne], qs[:ne], k, fingerprint=fp).ids
    exact_s = time.perf_counter() - t
    r1, rk = recall(ids[:ne], exact, k)
    print(f"recall vs the exact ranking over all {n:,} entries on {ne} queries: R@1 {r1:.3f} R@{k} {rk:.3f} "
          f"(exact: {exact_s / ne:.1f} s per query); peak RSS {peak_rss_gib():.2f} GiB")
    print(f"# total {time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
