"""Bytes per index entry against ranking quality: how the samples are stored, and which FAISS candidate stage.

    .venv/bin/python bench/bench_index_storage.py                        # 200,000 synthetic entries
    .venv/bin/python bench/bench_index_storage.py --size 100000 --reference-samples 400   # + the large-K context

Part 1, sample storage (exact "Flat" candidate stage, so that only the storage differs). Each entry is a Gaussian
(mean, float32 stddev) and its K = 20 samples are `regenerate_samples(mean, stddev)` (prpose.index.storage: a fixed
function of the entry, what `PoseIndex.add(means, stddevs=)` and `prpose index build` give in every storage):
  * float32  - those samples stored in float32: the exact ranking of the entries' distribution (the baseline),
  * float16  - the same samples stored in float16,
  * gaussian - mean (float32, the candidate stage needs it anyway) + stddev (float16); the samples regenerated
               from them at search time: differs from float32 by the stddev's float16 rounding only,
  * PQ means - a candidate option: product-quantised means (PQ 16 x 8 bits, 16 B) + float16 stddev, measured at
               its best (the same noise as float32's, around the decoded mean; the index does not implement it),
  * float32, embedder's draw - the same Gaussians sampled with a random key (what an index stored before it
               regenerated samples): the Monte Carlo noise of K = 20 samples, for context.
For each: bytes per entry (mean + sample part), the exact ranking on it against the float32 baseline's exact ranking
(recall@1 / recall@k on --exact-queries queries), optionally against a large-K reference (every entry's Gaussian
with --reference-samples fresh samples: closer to the ranking by the true match probability; context for the noise
all K = 20 rankings share), the two-stage search against its own exact ranking, and batched queries/s with its
ratio to float32 (same run).

Part 2, candidate stage (gaussian storage): FAISS structures over the candidate vectors: build s, FAISS bytes per
entry, recall of the two-stage search against the exact ranking, queries/s. Part 3: bytes per entry of every
combination and what 10M entries take (16 GiB budget).

Synthetic embeddings: bench/bench_index.py's clustered Gaussian mixture with float32 stddevs (the queries' samples
are float32 draws).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# bench_index sets the BLAS/OpenMP threads from --threads before numpy starts its pools.
from bench_index import DEFAULT_MATCH, faiss_bytes, recall, synthetic

import numpy as np  # noqa: E402

from prpose.index import PoseIndex  # noqa: E402
from prpose.index.kernels import rerank_distances  # noqa: E402
from prpose.index.storage import regenerate_samples  # noqa: E402

GIB = 1 << 30


def reference_ranking(means, stddevs, query_samples, k, num_samples, match, seed=1, block=1000):
    """Exact top-k ids (Q, k) when every entry is represented by `num_samples` fresh samples of its Gaussian."""
    a, b, s = match
    n = len(means)
    d = np.empty((len(query_samples), n))
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        eps = np.random.default_rng([seed, lo]).standard_normal((hi - lo, num_samples, means.shape[1]), np.float32)
        x = means[lo:hi, None] + stddevs[lo:hi, None] * eps
        for qi, q in enumerate(query_samples):
            d[qi, lo:hi] = rerank_distances(q[None], x[None], a, b, s)[0]
    return np.stack([np.lexsort((np.arange(n), row))[:k] for row in d])


def pq_decoded(means, seed, subquantizers=16, bits=8, train=65_536):
    """The means after product quantisation (FAISS ProductQuantizer, `subquantizers` x `bits` bits per entry,
    trained on `train` of them) and decoding: what a re-rank that kept only PQ codes would see."""
    import faiss

    pq = faiss.ProductQuantizer(means.shape[1], subquantizers, bits)
    rows = np.random.default_rng(seed).choice(len(means), min(train, len(means)), replace=False)
    pq.train(np.ascontiguousarray(means[np.sort(rows)]))
    return pq.decode(pq.compute_codes(means))


def regenerate_in_blocks(means, stddevs, centres, block=1 << 16):
    """The samples `regenerate_samples(means, stddevs)` moved to other centres (n, D): the same noise around them."""
    out = np.empty((len(means), 20, means.shape[1]), np.float32)
    for lo in range(0, len(means), block):
        hi = min(lo + block, len(means))
        out[lo:hi] = regenerate_samples(means[lo:hi], stddevs[lo:hi], 20) - means[lo:hi, None] + centres[lo:hi, None]
    return out


def batched_qps(index, qm, qs, k, fingerprint):
    start = time.perf_counter()
    ids = np.concatenate([index.search(qm[lo:lo + 1000], qs[lo:lo + 1000], k, fingerprint=fingerprint).ids
                          for lo in range(0, len(qm), 1000)])
    return ids, len(qm) / (time.perf_counter() - start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=200_000)
    p.add_argument("--queries", type=int, default=2000, help="queries timed in batches of 1000")
    p.add_argument("--exact-queries", type=int, default=100, help="queries ranked exactly (recall reference)")
    p.add_argument("--reference-samples", type=int, default=0,
                   help="also rank against every entry's Gaussian with this many samples (0: skip; 400 costs "
                   "20x the exact ranking)")
    p.add_argument("--storage-only", action="store_true",
                   help="part 1 with the float32 baseline and gaussian rows only (to rank many queries exactly)")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--nlist", type=int, default=1024, help="inverted lists of the IVF candidate stages")
    p.add_argument("--match", type=float, nargs=3, default=DEFAULT_MATCH, metavar=("A", "B", "S"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (read before numpy starts)")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    (means, stddevs, drawn), (qm, _, qs) = synthetic(args.size, args.queries, 16, 20, args.seed, with_stddev=True,
                                                     stddev_dtype=np.float32)
    n, k, ne, fp, match = len(means), args.k, min(args.exact_queries, args.queries), "synthetic", tuple(args.match)
    print(f"# SYNTHETIC clustered Gaussian embeddings: N={n:,}, {len(qm):,} queries ({ne} ranked exactly), k={k}, "
          f"D=16, K=20, match (a, b, s)={tuple(round(v, 4) for v in match)}; generated in "
          f"{time.perf_counter() - t0:.0f} s")
    print(f"# machine: {os.cpu_count()} cores, {args.threads} thread(s) used, load average {os.getloadavg()[0]:.2f}")
    sys.stdout.flush()

    # -- part 1: sample storage -----------------------------------------------------------------------------
    # (label, storage, mean + sample-part bytes per entry, how entries are added)
    pq_means = pq_decoded(means, args.seed)
    variants = [("float32 (baseline)", "float32", 64 + 1280, dict(stddevs=stddevs)),
                ("float16", "float16", 64 + 640, dict(stddevs=stddevs)),
                ("gaussian", "gaussian", 64 + 32, dict(stddevs=stddevs)),
                ("PQ means + f16 stddev", "float32", 16 + 32,
                 dict(samples=regenerate_in_blocks(means, stddevs.astype(np.float16), pq_means))),
                ("float32, embedder's draw", "float32", 64 + 1280, dict(samples=drawn))]
    del drawn
    if args.storage_only:
        variants = [v for v in variants if v[0] in ("float32 (baseline)", "gaussian")]
    built, exact = {}, {}
    for label, storage, _, given in variants:
        index = PoseIndex(16, 20, match, fp, factory="Flat", sample_storage=storage)
        index.add(means, **given)
        t = time.perf_counter()
        exact[label] = index.search_exact(qm[:ne], qs[:ne], k, fingerprint=fp).ids
        print(f"# exact ranking on {label}: {ne / (time.perf_counter() - t):.2f} queries/s", flush=True)
        built[label] = index
        given.clear()
    ref = None
    if args.reference_samples:
        t = time.perf_counter()
        ref = reference_ranking(means, stddevs, qs[:ne], k, args.reference_samples, match)
        print(f"# reference: every entry's Gaussian with K={args.reference_samples} samples "
              f"({time.perf_counter() - t:.0f} s)", flush=True)
    ref_cols = f" {'R@1 ref':>8} {f'R@{k} ref':>9}" if ref is not None else ""
    header = (f"{'sample storage':<26} {'B/entry':>8} {'R@1 f32':>8} {f'R@{k} f32':>9}{ref_cols} "
              f"{'2-stage R@1':>11} {f'R@{k}':>6} {'QPS':>7} {'x f32':>6}")
    print("\n## part 1: sample storage (Flat candidate stage; B/entry = mean + the samples' part; R@ f32 = recall of "
          "the exact ranking against the float32 baseline's exact ranking)")
    print(header)
    print("-" * len(header))
    base_qps = None
    for label, _, per_entry, _ in variants:
        index = built[label]
        ids, qps = batched_qps(index, qm, qs, k, fp)
        base_qps = base_qps or qps
        r1, rk = recall(exact[label], exact["float32 (baseline)"], k)
        refs = "".join(f" {v:>8.3f}" if i == 0 else f" {v:>9.3f}"
                       for i, v in enumerate(recall(exact[label], ref, k))) if ref is not None else ""
        s1, sk = recall(ids[:ne], exact[label], k)
        print(f"{label:<26} {per_entry:>8} {r1:>8.3f} {rk:>9.3f}{refs} {s1:>11.3f} {sk:>6.3f} {qps:>7.0f} "
              f"{qps / base_qps:>6.2f}", flush=True)
    if ref is not None:
        print(f"# R@1 ref / R@{k} ref: recall against the large-K reference; the float32 baseline's own value there "
              "is the noise of K = 20 samples, which every storage shares")
    # What the storage itself costs in the re-rank: producing 160 candidates' samples per query (CPU time).
    cand = np.random.default_rng(args.seed).integers(n, size=(len(qm), max(8 * k, 64)))
    for label in [label for label in ("float32 (baseline)", "float16", "gaussian") if label in built]:
        t = time.process_time()
        for lo in range(0, len(cand), 50):
            built[label].entry_samples(cand[lo:lo + 50])
        print(f"# {label}: {1000 * (time.process_time() - t) / len(cand):.3f} ms CPU per query to produce "
              f"{cand.shape[1]} candidates' samples (random ids)")
    if args.storage_only:
        print(f"# total wall time {time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.2f} at end")
        return 0

    # -- part 2: candidate stage ----------------------------------------------------------------------------
    # (factory, candidate vectors): PQ8 needs a dimension divisible by 8, so it quantises the 16-D means.
    factories = [("Flat", "moments"), ("HNSW32", "moments"), (f"IVF{args.nlist},Flat", "moments"),
                 (f"IVF{args.nlist},SQ8", "moments"), (f"IVF{args.nlist},PQ8", "means")]
    print("\n## part 2: candidate stage (gaussian storage; default search settings; vectors B/entry = the copy of the "
          "candidate vectors the search re-sorts candidates by)")
    header = (f"{'FAISS factory (vectors)':<30} {'build s':>8} {'vectors B':>9} {'FAISS B/entry':>13} {'R@1':>6} "
              f"{f'R@{k}':>6} {'QPS':>7} {'x Flat':>7}")
    print(header)
    print("-" * len(header))
    faiss_per_entry, flat_qps = {}, None
    for factory, vectors in factories:
        index = PoseIndex(16, 20, match, fp, factory=factory, sample_storage="gaussian", candidate_vectors=vectors)
        index.add(means, stddevs=stddevs)
        t = time.perf_counter()
        index._ensure_faiss()
        build = time.perf_counter() - t
        ids, qps = batched_qps(index, qm, qs, k, fp)
        flat_qps = flat_qps or qps
        label = f"{factory} ({vectors})"
        faiss_per_entry[label] = (index._vectors.nbytes / n, faiss_bytes(index) / n)
        r1, rk = recall(ids[:ne], exact["gaussian"], k)
        print(f"{label:<30} {build:>8.1f} {faiss_per_entry[label][0]:>9.0f} {faiss_per_entry[label][1]:>13.1f} "
              f"{r1:>6.3f} {rk:>6.3f} {qps:>7.0f} {qps / flat_qps:>7.2f}", flush=True)

    # -- part 3: projection ---------------------------------------------------------------------------------
    print("\n## part 3: bytes per entry in memory (float32 mean 64 B + sample storage + candidate vectors + FAISS; "
          "metadata not included) and 10M entries")
    print(f"{'sample storage':<10} {'FAISS factory (vectors)':<30} {'B/entry':>8} {'10M GiB':>8} {'fits 16 GiB':>11}")
    for storage, part in (("float32", 1280), ("float16", 640), ("gaussian", 32)):
        for label, (vectors, faiss_part) in faiss_per_entry.items():
            per = 64 + part + vectors + faiss_part
            print(f"{storage:<10} {label:<30} {per:>8.0f} {per * 1e7 / GIB:>8.2f} "
                  f"{'yes' if per * 1e7 < 16 * GIB else 'no':>11}")
    print(f"# total wall time {time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
