"""Benchmark the pose index: two-stage search (FAISS candidates + exact re-rank) against brute force.

    .venv/bin/python bench/bench_index.py                    # 1,000,000 entries, 10,000 queries, k = 20
    .venv/bin/python bench/bench_index.py --size 100000      # development size
    .venv/bin/python bench/bench_index.py --model RUN_DIR --data DATASET_DIR   # a trained model's embeddings

Reference: the exact probabilistic ranking (every entry, all K x K sample pairs; `PoseIndex.search_exact`) on
the first --exact-queries queries (it costs ~N x 400 sample distances per query), its QPS measured there.
For each candidate-stage setting the table gives build time, memory per entry (means + samples + FAISS
structure), batched queries/s over all queries, p50/p99 single-query latency (--single-queries queries, one
call each) and recall@1 / recall@k of the two-stage top-k against the exact top-k (same subset).
Synthetic embeddings (default): means from a mixture of Gaussian clusters, per-entry stddevs in [0.1, 0.5],
K samples mean + stddev * eps; queries are fresh draws from the same mixture.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _threads_from_argv(argv):
    """--threads must act before numpy/faiss start their thread pools, so it is read before importing them."""
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return "1"


_THREADS = _threads_from_argv(sys.argv)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = _THREADS

import numpy as np  # noqa: E402

from prpose.errors import PrposeError  # noqa: E402
from prpose.index import PoseIndex  # noqa: E402

# a = ELU(raw_a) + 1 with raw_a = -0.65, b = -0.5, s = 0.1: the model's starting values (REFERENCE.md).
DEFAULT_MATCH = (float(np.exp(-0.65)), -0.5, 0.1)


def synthetic(n, q, dim, k, seed, clusters=2000, centre_scale=1.0, spread=0.3):
    """Clustered Gaussian embeddings: (means (n, D), samples (n, K, D)) and the same for q queries."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=centre_scale, size=(clusters, dim)).astype(np.float32)

    def draw(count):
        means = centres[rng.integers(clusters, size=count)]
        means = means + rng.normal(scale=spread, size=(count, dim)).astype(np.float32)
        # Per-entry scale in [0.1, 0.5] with mild per-dimension variation, as a trained sigma head gives.
        std = rng.uniform(0.1, 0.5, size=(count, 1)).astype(np.float32)
        std = std * rng.uniform(0.8, 1.2, size=(count, dim)).astype(np.float32)
        samples = np.empty((count, k, dim), np.float32)
        for lo in range(0, count, 100_000):  # bounded temporaries
            hi = min(lo + 100_000, count)
            eps = rng.standard_normal(size=(hi - lo, k, dim), dtype=np.float32)
            samples[lo:hi] = means[lo:hi, None] + std[lo:hi, None] * eps
        return means, samples

    return draw(n), draw(q)


def from_model(run_dir, data_dir, n, q, seed, jitter_px=3.0):
    """Embeddings of a prepared dataset's 2D keypoints (every camera view is one entry) by a trained model.

    Views whose torso is hidden (not normalisable) are left out and counted. When the data holds fewer
    views than --size + --queries, it is replicated with Gaussian pixel jitter (``jitter_px``) per copy.
    """
    import jax

    from prpose.dataset import load_dataset
    from prpose.inference import load_model

    model = load_model(run_dir)
    data = load_dataset(data_dir)
    kp = np.asarray(data.keypoints2d)  # (F, C, 17, 2) h36m17 pixels
    views = kp.reshape(-1, *kp.shape[2:])
    visible = np.asarray(data.visibility).reshape(-1, kp.shape[2])
    _, usable, skipped = model.embed_usable(views, profile="h36m17", visible=visible)
    views, visible = views[usable], visible[usable]
    rng = np.random.default_rng(seed)
    copies = -(-(n + q) // len(views))
    print(f"# data: {len(views)} usable views ({len(skipped)} left out: torso hidden); "
          f"{copies} cop{'y' if copies == 1 else 'ies'} (jitter {jitter_px} px after the first)")
    rows = rng.permutation(copies * len(views))[: n + q]
    source = rows % len(views)
    points = views[source] + (rows >= len(views))[:, None, None] * rng.normal(
        0.0, jitter_px, size=(len(rows), *views.shape[1:])).astype(np.float32)
    means, samples = [], []
    for lo in range(0, len(rows), 100_000):
        hi = min(lo + 100_000, len(rows))
        emb = model.embed(points[lo:hi], profile="h36m17", visible=visible[source[lo:hi]],
                          key=jax.random.fold_in(jax.random.key(seed), lo))
        means.append(np.asarray(emb.mean, np.float32)), samples.append(np.asarray(emb.samples, np.float32))
    mean, samples = np.concatenate(means), np.concatenate(samples)
    return (mean[:n], samples[:n]), (mean[n:], samples[n:]), tuple(model.match_params), model.fingerprint


def recall(found, exact, k):
    r1 = float(np.mean(found[:, 0] == exact[:, 0]))
    rk = float(np.mean([len(np.intersect1d(f[:k], e[:k])) / k for f, e in zip(found, exact)]))
    return r1, rk


def faiss_bytes(index):
    import faiss

    if index._faiss is None:
        return 0
    return int(faiss.serialize_index(index._faiss).nbytes)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--exact-queries", type=int, default=200, help="queries scored by brute force (reference)")
    p.add_argument("--single-queries", type=int, default=300, help="queries timed one call at a time")
    p.add_argument("--match", type=float, nargs=3, default=DEFAULT_MATCH, metavar=("A", "B", "S"))
    p.add_argument("--model", help="training run directory (uses its embeddings and match parameters)")
    p.add_argument("--data", help="prepared dataset to embed with --model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS/OpenMP threads (default 1: on a shared 2-core machine spinning thread pools made "
                   "both the reference and FAISS ~9x slower under load)")
    p.add_argument("--quick", action="store_true", help="fewer settings (development)")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    if args.model:
        if not args.data:
            p.error("--model needs --data (the prepared dataset to embed)")
        (means, samples), (qm, qs), match, fingerprint = from_model(
            args.model, args.data, args.size, args.queries, args.seed
        )
        source = f"embeddings of {args.data} by the trained model {args.model}"
    else:
        (means, samples), (qm, qs) = synthetic(args.size, args.queries, args.dim, args.samples, args.seed)
        match, fingerprint = tuple(args.match), "synthetic"
        source = "SYNTHETIC clustered Gaussian embeddings (2000 clusters, centre sd 1.0, spread sd 0.3, sigma 0.1-0.5)"
    n, q, k = len(means), len(qm), args.k
    print(f"# data: {source}")
    print(f"# N={n:,} entries, Q={q:,} queries, k={k}, D={means.shape[1]}, K={samples.shape[1]}, "
          f"match (a, b, s)={tuple(round(v, 4) for v in match)}; generated in {time.perf_counter() - t0:.1f} s")
    print(f"# machine: {os.cpu_count()} cores, {args.threads} thread(s) used, load average "
          f"{os.getloadavg()[0]:.2f} at start")
    sys.stdout.flush()

    ne = min(args.exact_queries, q)
    base = PoseIndex(means.shape[1], samples.shape[1], match, fingerprint, factory="Flat")
    base.add(means, samples)
    t = time.perf_counter()
    exact = base.search_exact(qm[:ne], qs[:ne], k, fingerprint=fingerprint)
    exact_time = time.perf_counter() - t
    exact_qps = ne / exact_time
    per_entry_samples = samples[0].nbytes
    print(f"# exact brute force on the first {ne} queries: {exact_time:.1f} s -> {exact_qps:.3f} QPS "
          f"(measured on {ne} queries; a full {q:,}-query run would take ~{q / exact_qps / 3600:.1f} h)")
    sys.stdout.flush()

    default_c = max(8 * k, 64)  # PoseIndex.search default
    c4 = max(4 * k, 64)  # the first default; kept to show what doubling the candidates buys
    if args.quick:
        settings = [("Flat", None, default_c, "float32"), ("HNSW32", 128, default_c, "float32"),
                    ("IVF1024,Flat", 16, default_c, "float32")]
    else:
        settings = [
            ("Flat", None, 2 * k, "float32"),
            ("Flat", None, c4, "float32"),
            ("Flat", None, 2 * c4, "float32"),
            ("Flat", None, c4, "float16"),
            ("HNSW32", 96, c4, "float32"),
            ("HNSW32", 128, c4, "float32"),
            ("HNSW32", 256, c4, "float32"),
            ("HNSW32", 128, 2 * c4, "float32"),
            ("IVF1024,Flat", 8, c4, "float32"),
            ("IVF1024,Flat", 32, c4, "float32"),
        ]
    header = (f"{'setting':<34} {'build s':>8} {'B/entry':>8} {'QPS':>8} {'x exact':>8} {'p50 ms':>7} "
              f"{'p99 ms':>7} {'R@1':>6} {f'R@{k}':>6}")
    print(header)
    print("-" * len(header))
    print(f"{'exact brute force (reference)':<34} {'-':>8} {means[0].nbytes + per_entry_samples:>8} "
          f"{exact_qps:>8.2f} {1.0:>8.1f} {1000 / exact_qps:>7.0f} {'-':>7} {1.0:>6.3f} {1.0:>6.3f}")
    built: dict[tuple[str, str], tuple[PoseIndex, float]] = {}
    rows = []
    for factory, param, cands, dtype in settings:
        key = (factory, dtype)
        if key not in built:
            idx = PoseIndex(means.shape[1], samples.shape[1], match, fingerprint, factory=factory, sample_dtype=dtype)
            t = time.perf_counter()
            idx.add(means, samples)
            idx._ensure_faiss()  # build now so that its time is the build time, not the first search's
            built[key] = (idx, time.perf_counter() - t)
        idx, build_s = built[key]
        if "HNSW" in factory:
            idx.ef_search = param
        if "IVF" in factory:
            idx.nprobe = param
        t = time.perf_counter()
        res_ids = np.empty((q, k), np.int64)
        for lo in range(0, q, 2000):
            res_ids[lo : lo + 2000] = idx.search(qm[lo : lo + 2000], qs[lo : lo + 2000], k, candidates=cands,
                                                   fingerprint=fingerprint).ids
        qps = q / (time.perf_counter() - t)
        lat = []
        for i in range(min(args.single_queries, q)):
            t = time.perf_counter()
            idx.search(qm[i : i + 1], qs[i : i + 1], k, candidates=cands, fingerprint=fingerprint)
            lat.append(time.perf_counter() - t)
        p50, p99 = np.percentile(np.array(lat) * 1000, [50, 99])
        r1, rk = recall(res_ids[:ne], exact.ids, k)
        mem = means[0].nbytes + np.dtype(dtype).itemsize * samples[0].size + faiss_bytes(idx) / n
        label = factory + (f" ef={param}" if "HNSW" in factory else "") + (f" nprobe={param}" if "IVF" in factory else "")
        label += f" C={cands}" + (" f16" if dtype == "float16" else "")
        print(f"{label:<34} {build_s:>8.1f} {mem:>8.0f} {qps:>8.0f} {qps / exact_qps:>8.0f} {p50:>7.2f} "
              f"{p99:>7.2f} {r1:>6.3f} {rk:>6.3f}")
        sys.stdout.flush()
        rows.append((label, r1, qps / exact_qps, p50))
    ok = [r[0] for r in rows if r[1] >= 0.99 and r[2] >= 100 and r[3] < 5.0]
    print(f"# targets (R@1 >= 0.99, >= 100x exact QPS, p50 < 5 ms) met by: {', '.join(ok) if ok else 'none'}")
    print(f"# recall measured on {ne} queries; total wall time {time.perf_counter() - t0:.0f} s; "
          f"load average {os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
