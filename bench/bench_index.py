"""Benchmark the pose index: two-stage search (FAISS candidates + exact re-rank) against brute force.

    .venv/bin/python bench/bench_index.py                    # 1,000,000 entries, 10,000 queries, k = 20
    .venv/bin/python bench/bench_index.py --size 100000      # development size
    .venv/bin/python bench/bench_index.py --model RUN_DIR --data DATASET_DIR   # a trained model's embeddings
    .venv/bin/python bench/bench_index.py --cache DIR ...    # keep data + exact reference for the next run
    .venv/bin/python bench/bench_index.py --settings "HNSW32:ef=64:C=40:moments" "IVF4096,Flat:nprobe=24:C=40:moments:T=1"

Reference: the exact probabilistic ranking (every entry, all K x K sample pairs; `PoseIndex.search_exact`) on
the first --exact-queries queries (it costs ~N x 400 sample distances per query), its QPS measured there.
For each candidate-stage setting the table gives build time, memory per entry (means + samples + FAISS
structure), batched queries/s over all queries, p50/p99 single-query latency (--single-queries queries, one
call each) and recall@1 / recall@k of the two-stage top-k against the exact top-k (same subset).
Synthetic embeddings (default): means from a mixture of Gaussian clusters, per-entry stddevs in [0.1, 0.5],
K samples mean + stddev * eps; queries are fresh draws from the same mixture.

A setting is FACTORY:PARAM:C=N:VECTORS[:T=N]: the FAISS factory ("auto": what PoseIndex picks for this size), its
search knob (ef=N for HNSW, nprobe=N for IVF, - for the index's default), the candidates re-ranked per query (C=auto:
the index's default), what FAISS indexes ("moments" or "means", see prpose.index.candidates) and the search threads
(T=N, `PoseIndex.threads`; default --threads, which defaults to every core). The first row after brute force is the
BASELINE: the search as it was before issue 12 (HNSW32 over the means, efSearch 128, C = 8k = 160, one thread);
every row gives its QPS as a ratio to it, measured in the same run. QPS is given per wall second and per CPU second
of this process (the machine is shared: wall time includes other people's load; CPU time does not; with T > 1 the
wall rate is the one that can exceed what one core gives). --breakdown splits each setting's batched time into its
phases, run on one thread so that the phases do not overlap (wall and CPU microseconds per query): FAISS search,
candidate selection (distances recomputed, the nearest kept), gathering the candidates' samples, the exact
match-distance kernel, the running top-k merge, and metadata/result assembly. With --cache the built FAISS
structures are kept there too (HNSW32 over 1M entries takes ~10 minutes to build here).
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


def synthetic(n, q, dim, k, seed, clusters=2000, centre_scale=1.0, spread=0.3, with_stddev=False, entry_samples=True,
              stddev_dtype=np.float16):
    """Clustered Gaussian embeddings: (means (n, D), samples (n, K, D)) and the same for q queries; with_stddev:
    (means, stddevs (n, D) in stddev_dtype, samples) with the samples drawn from those stddevs;
    entry_samples=False (with with_stddev): the n entries' samples are None (a "gaussian" index needs none)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=centre_scale, size=(clusters, dim)).astype(np.float32)

    def draw(count, with_samples=True):
        means = centres[rng.integers(clusters, size=count)]
        means = means + rng.normal(scale=spread, size=(count, dim)).astype(np.float32)
        # Per-entry scale in [0.1, 0.5] with mild per-dimension variation, as a trained sigma head gives.
        std = rng.uniform(0.1, 0.5, size=(count, 1)).astype(np.float32)
        std = std * rng.uniform(0.8, 1.2, size=(count, dim)).astype(np.float32)
        if with_stddev:
            std = std.astype(stddev_dtype)
        if not with_samples:
            return means, std, None
        samples = np.empty((count, k, dim), np.float32)
        for lo in range(0, count, 100_000):  # bounded temporaries
            hi = min(lo + 100_000, count)
            eps = rng.standard_normal(size=(hi - lo, k, dim), dtype=np.float32)
            samples[lo:hi] = means[lo:hi, None] + std[lo:hi, None] * eps
        return (means, std, samples) if with_stddev else (means, samples)

    return draw(n, entry_samples), draw(q)


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


BASELINE = "HNSW32:ef=128:C=160:means:T=1"
#: S=float32: entries keep their K samples; S=gaussian (what `prpose index build` writes): mean + float16 stddev, the
#: samples regenerated (here the stddevs are estimated from each entry's K samples; recall is then measured against
#: the exact ranking of the gaussian entries, a reference of its own).
STORAGES = ("float32", "gaussian")
#: What "auto" chose above 200k entries before IVF (HNSW32 over moments, efSearch max(128, 48), 40 candidates).
OLD_DEFAULT = "HNSW32:ef=128:C=40:moments"
DEFAULT_SETTINGS = [BASELINE, OLD_DEFAULT, "auto:-:C=auto:moments:T=1", "auto:-:C=auto:moments",
                    "IVF4096,Flat:nprobe=8:C=40:moments"]


def parse_setting(text, default_threads):
    """'FACTORY:PARAM:C=N:VECTORS[:T=N][:S=STORAGE]' -> (factory, knob name or None, knob value or None, candidates
    or None, vectors, threads, storage)."""
    try:
        factory, param, cands, vectors, *rest = text.split(":")
        name, value = (None, None) if param == "-" else param.split("=")
        extra = dict(field.split("=") for field in rest)
        if set(extra) - {"T", "S"} or not cands.startswith("C=") or extra.get("S", "float32") not in STORAGES:
            raise ValueError
        threads = int(extra["T"]) if "T" in extra else default_threads
        count = None if cands == "C=auto" else int(cands.removeprefix("C="))
        return factory, name, None if value is None else int(value), count, vectors, threads, extra.get("S", "float32")
    except ValueError:
        raise SystemExit(f"--settings {text!r}: expected FACTORY:PARAM:C=N:VECTORS[:T=N][:S=float32|gaussian], e.g. "
                         f"{BASELINE}") from None


class PhaseTimer:
    """Wall and CPU seconds per phase of PoseIndex.search on one thread, by wrapping the functions it calls (the real
    code path)."""

    def __init__(self):
        from prpose.index import candidates, core

        self.seconds = {}
        self.cpu = {}
        self._undo = []
        self._wrap(candidates, "nearest_candidates", "candidate stage (FAISS + selection)")
        self._wrap(core, "rerank_distances", "exact kernel")
        self._wrap(core, "_best", "top-k merge")
        self._wrap(core.PoseIndex, "_result", "metadata + result")
        self._wrap(core.PoseIndex, "_top_k", "final top-k + result")
        self._wrap(core.PoseIndex, "_rerank", "re-rank (gather + kernel + merge)")

    def _wrap(self, owner, name, label):
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            start, cpu = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.add(label, time.perf_counter() - start, time.thread_time() - cpu)

        setattr(owner, name, timed)
        self._undo.append((owner, name, original))

    def add(self, label, wall, cpu):
        self.seconds[label] = self.seconds.get(label, 0.0) + wall
        self.cpu[label] = self.cpu.get(label, 0.0) + cpu

    def faiss(self, real):
        """A stand-in for the FAISS index `real` whose search is timed as its own phase."""
        timer = self

        class Timed:
            def __getattr__(self, attr):
                return getattr(real, attr)

            def search(self, *args):
                start, cpu = time.perf_counter(), time.thread_time()
                try:
                    return real.search(*args)
                finally:
                    timer.add("FAISS search", time.perf_counter() - start, time.thread_time() - cpu)

        return Timed()

    def close(self):
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)


def breakdown(idx, qm, qs, k, cands, fingerprint, batch):
    """Phase table of one batched pass on one thread: {phase: (wall seconds, CPU seconds)}, (total wall, CPU)."""
    from prpose.index import candidates as cand_stage

    timer = PhaseTimer()
    real, set_params, threads = idx._faiss, cand_stage.set_search_params, idx.threads
    idx._faiss, idx.threads = timer.faiss(real), 1
    cand_stage.set_search_params = lambda index, *rest: set_params(real, *rest)
    try:
        start, cpu = time.perf_counter(), time.thread_time()
        for lo in range(0, len(qm), batch):
            idx.search(qm[lo : lo + batch], qs[lo : lo + batch], k, candidates=cands, fingerprint=fingerprint)
        total = (time.perf_counter() - start, time.thread_time() - cpu)
    finally:
        idx._faiss, idx.threads, cand_stage.set_search_params = real, threads, set_params
        timer.close()
    phases = {}
    for j, clock in enumerate((timer.seconds, timer.cpu)):
        sec = {name: clock.get(name, 0.0) for name in (
            "FAISS search", "candidate stage (FAISS + selection)", "exact kernel", "top-k merge", "metadata + result",
            "final top-k + result", "re-rank (gather + kernel + merge)")}
        final_sort = sec["final top-k + result"] - sec["metadata + result"]
        merge = sec["top-k merge"] - final_sort  # _best inside the re-rank (the final sort calls it too)
        parts = {
            "FAISS search": sec["FAISS search"],
            "candidate selection": sec["candidate stage (FAISS + selection)"] - sec["FAISS search"],
            "gather samples": sec["re-rank (gather + kernel + merge)"] - sec["exact kernel"] - merge,
            "exact kernel": sec["exact kernel"],
            "streamed top-k merge": merge,
            "final sort": final_sort,
            "metadata + result": sec["metadata + result"],
        }
        parts["other (checks, vectors)"] = total[j] - sum(parts.values())
        for name, value in parts.items():
            phases.setdefault(name, [0.0, 0.0])[j] = value
    return phases, total


def new_index(means, samples, match, fingerprint, factory, vectors, storage):
    """A PoseIndex of the entries: their samples (float32) or, for "gaussian", their means + estimated stddevs."""
    idx = PoseIndex(means.shape[1], samples.shape[1], match, fingerprint, factory=factory, candidate_vectors=vectors)
    if storage == "gaussian":
        idx.add(means, stddevs=gaussian_stddevs(samples))
    else:
        idx.add(means, samples)
    return idx


_STDDEVS = {}


def gaussian_stddevs(samples):
    """Per-entry stddevs (N, D) estimated from the samples (N, K, D), computed once per array."""
    key = id(samples)
    if key not in _STDDEVS:
        out = np.empty(samples.shape[::2], np.float32)
        for lo in range(0, len(samples), 65_536):
            out[lo : lo + 65_536] = samples[lo : lo + 65_536].std(axis=1)
        _STDDEVS[key] = out
    return _STDDEVS[key]


def pruned_reference(means, samples, qm, qs, k, match, fingerprint, n, storage="float32"):
    """Top-k by exact match distance over the union of the n nearest entries by mean and by moments."""
    found = []
    for kind in ("means", "moments"):
        idx = new_index(means, samples, match, fingerprint, "Flat", kind, storage)
        found.append(idx.search(qm, qs, k, candidates=n, fingerprint=fingerprint))
    d = np.concatenate([f.distances.astype(np.float64) for f in found], axis=1)
    i = np.concatenate([f.ids for f in found], axis=1)
    ids = np.empty((len(qm), k), np.int64)
    for row in range(len(qm)):
        uniq, first = np.unique(i[row], return_index=True)
        order = np.lexsort((uniq, d[row][first]))[:k]
        ids[row] = uniq[order]
    return {"ids": ids}


def gaussian_reference(args, means, samples, qm, qs, k, match, fingerprint, cache):
    """Exact top-k ids of the gaussian entries (their regenerated samples) for the reference queries (cached)."""
    path = None if cache is None else cache / (f"exact-gaussian-{'-'.join(map(str, match))}-q{len(qm)}-k{k}"
                                               f"-r{args.reference_candidates}.npz")
    if path is not None and path.exists():
        return np.load(path)["ids"]
    t = time.perf_counter()
    if args.reference_candidates:
        ids = pruned_reference(means, samples, qm, qs, k, match, fingerprint, args.reference_candidates, "gaussian")["ids"]
    else:
        idx = new_index(means, samples, match, fingerprint, "Flat", "moments", "gaussian")
        ids = idx.search_exact(qm, qs, k, fingerprint=fingerprint).ids
    print(f"# reference for the gaussian entries computed in {time.perf_counter() - t:.0f} s")
    if path is not None:
        np.savez(path, ids=ids)
    return ids


def load_or_make(args):
    """(means, samples), (qm, qs), match, fingerprint, source, exact ids or None (from --cache)."""
    cache = None
    if args.cache and not args.model:
        import pathlib

        cache = pathlib.Path(args.cache) / (f"synthetic-n{args.size}-q{args.queries}-d{args.dim}-k{args.samples}"
                                            f"-s{args.seed}")
    if cache is not None and (cache / "samples.npy").exists():
        arrays = {name: np.load(cache / f"{name}.npy", mmap_mode="r") for name in ("means", "samples", "qm", "qs")}
        (means, samples, qm, qs) = (np.ascontiguousarray(arrays[n]) for n in ("means", "samples", "qm", "qs"))
        exact_file = cache / f"exact-{'-'.join(map(str, args.match))}-q{args.exact_queries}-k{args.k}.npz"
        exact = dict(np.load(exact_file)) if exact_file.exists() else None
        return (means, samples), (qm, qs), tuple(args.match), "synthetic", "SYNTHETIC (cached)", exact, cache
    if args.model:
        if not args.data:
            raise SystemExit("--model needs --data (the prepared dataset to embed)")
        (means, samples), (qm, qs), match, fingerprint = from_model(args.model, args.data, args.size, args.queries,
                                                                    args.seed)
        source = f"embeddings of {args.data} by the trained model {args.model}"
    else:
        (means, samples), (qm, qs) = synthetic(args.size, args.queries, args.dim, args.samples, args.seed)
        match, fingerprint = tuple(args.match), "synthetic"
        source = "SYNTHETIC clustered Gaussian embeddings (2000 clusters, centre sd 1.0, spread sd 0.3, sigma 0.1-0.5)"
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            for name, arr in (("means", means), ("samples", samples), ("qm", qm), ("qs", qs)):
                np.save(cache / f"{name}.npy", arr)
    return (means, samples), (qm, qs), match, fingerprint, source, None, cache


def build_index(means, samples, match, fingerprint, factory, vectors, storage, cache):
    """A PoseIndex over the entries with its FAISS stage built -> (index, build seconds); with a cache directory the
    FAISS structure is read from / written to it (the build time then is the one recorded when it was built)."""
    import faiss

    idx = new_index(means, samples, match, fingerprint, factory, vectors, storage)
    resolved = idx.faiss_factory
    name = f"faiss-{resolved.replace(',', '_')}-{vectors}{'-gaussian' if storage == 'gaussian' else ''}.index"
    path = None if cache is None else cache / name
    if path is not None and path.exists():
        idx._faiss, idx._faiss_factory = faiss.read_index(str(path)), resolved
        assert idx._faiss.ntotal == len(means), f"{path} holds {idx._faiss.ntotal} entries, expected {len(means)}"
        idx._ensure_faiss()  # computes the candidate vectors, keeps the FAISS structure that holds every entry
        return idx, float(path.with_suffix(".seconds").read_text())
    t = time.perf_counter()
    idx._ensure_faiss()  # build now so that its time is the build time, not the first search's
    build_s = time.perf_counter() - t
    if path is not None:
        faiss.write_index(idx._faiss, str(path))
        path.with_suffix(".seconds").write_text(f"{build_s:.3f}")
    return idx, build_s


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--exact-queries", type=int, default=200, help="queries scored by brute force (reference)")
    p.add_argument("--exact-timed", type=int, default=5,
                   help="with a cached reference: brute-force queries re-timed in this run (its QPS baseline)")
    p.add_argument("--single-queries", type=int, default=300, help="queries timed one call at a time")
    p.add_argument("--batch", type=int, default=10_000, help="queries per search call in the batched pass")
    p.add_argument("--repeat", type=int, default=1,
                   help="batched passes per setting; the fastest is reported (with its CPU rate)")
    p.add_argument("--search-queries", type=int, default=None,
                   help="queries in each setting's batched pass (default: all --queries)")
    p.add_argument("--match", type=float, nargs=3, default=DEFAULT_MATCH, metavar=("A", "B", "S"))
    p.add_argument("--model", help="training run directory (uses its embeddings and match parameters)")
    p.add_argument("--data", help="prepared dataset to embed with --model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="search threads of the settings without T= (PoseIndex.threads; default every core); when "
                   "given, also the BLAS/OpenMP threads of builds and the reference (default 1: on a shared 2-core "
                   "machine spinning thread pools made "
                   "both the reference and FAISS ~9x slower under load)")
    p.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS,
                   help=f"FACTORY:PARAM:C=N:VECTORS rows (default: {' '.join(DEFAULT_SETTINGS)}); the baseline "
                   f"{BASELINE} is always measured first")
    p.add_argument("--breakdown", action="store_true", help="print each setting's time per phase")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the BASELINE row (e.g. a recall check on real embeddings; ratios are then to the first row)")
    p.add_argument("--reference-candidates", type=int, default=0,
                   help="0 (default): the reference is brute force. N > 0: the exact re-rank of the union of the N "
                   "entries nearest by mean and the N nearest by moments (exact FAISS Flat over each), for sizes "
                   "where brute force takes hours on a shared machine; the top-k of the union is exact unless a "
                   "true top-k entry lies beyond rank N under both proxies")
    p.add_argument("--cache", help="directory keeping the synthetic data and the exact reference between runs")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    (means, samples), (qm, qs), match, fingerprint, source, exact, cache = load_or_make(args)
    n, k = len(means), args.k
    q = min(args.search_queries or len(qm), len(qm))
    print(f"# data: {source}")
    print(f"# N={n:,} entries, Q={q:,} queries, k={k}, D={means.shape[1]}, K={samples.shape[1]}, "
          f"match (a, b, s)={tuple(round(v, 4) for v in match)}; ready in {time.perf_counter() - t0:.1f} s")
    from prpose.index.parallel import available_cores

    threads = args.threads or available_cores()
    print(f"# machine: {os.cpu_count()} cores; search threads {threads} unless a setting says T=N; BLAS/OpenMP threads "
          f"{_THREADS}; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())} (1/5/15 min) at start")
    sys.stdout.flush()

    ne = min(args.exact_queries, q)
    base = PoseIndex(means.shape[1], samples.shape[1], match, fingerprint, factory="Flat")
    base.add(means, samples)
    timed = ne if exact is None and not args.reference_candidates else min(args.exact_timed, ne)
    t, c = time.perf_counter(), time.process_time()
    got = base.search_exact(qm[:timed], qs[:timed], k, fingerprint=fingerprint)
    exact_wall, exact_cpu = (time.perf_counter() - t) / timed, (time.process_time() - c) / timed
    cached = exact is not None
    if not cached and args.reference_candidates:
        exact = pruned_reference(means, samples, qm[:ne], qs[:ne], k, match, fingerprint, args.reference_candidates)
        same = np.mean(exact["ids"][:timed] == got.ids)
        print(f"# reference: exact re-rank of the union of {args.reference_candidates} candidates by mean and by "
              f"moments; equals brute force on the {timed} brute-force queries: {same:.3f} of ids")
    elif not cached:
        exact = {"ids": got.ids}
    if cached:
        assert np.array_equal(got.ids, exact["ids"][:timed]), "cached exact reference differs from this run's"
    elif cache is not None:
        np.savez(cache / f"exact-{'-'.join(map(str, args.match))}-q{args.exact_queries}-k{args.k}.npz", **exact)
    exact_ids = exact["ids"]
    references = {"float32": exact_ids}
    print(f"# exact brute force: {1 / exact_wall:.3f} QPS wall, {1 / exact_cpu:.3f} QPS per CPU second (timed on "
          f"{timed} queries{'; reference ids of ' + str(ne) + ' queries from the cache, checked' if cached else ''})")
    sys.stdout.flush()

    header = (f"{'setting':<48} {'build s':>7} {'B/entry':>7} {'QPS':>7} {'QPS/cpu':>8} {'x base':>7} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'R@1':>6} {f'R@{k}':>6}")
    print(header)
    print("-" * len(header))
    print(f"{'exact brute force (reference)':<48} {'-':>7} {means[0].nbytes + samples[0].nbytes:>7} "
          f"{1 / exact_wall:>7.2f} {1 / exact_cpu:>8.2f} {'-':>7} {1000 * exact_wall:>7.0f} {'-':>7} "
          f"{1.0:>6.3f} {1.0:>6.3f}")
    settings = ([] if args.no_baseline else [BASELINE]) + [s for s in args.settings if s != BASELINE]
    built: dict[tuple[str, str], tuple[PoseIndex, float]] = {}
    rows, phases_of = [], {}
    base_cpu_qps = None
    for text in settings:
        factory, knob, value, cands, vectors, search_threads, storage = parse_setting(text, threads)
        key = (factory, vectors, storage)
        if key not in built:
            built[key] = build_index(means, samples, match, fingerprint, factory, vectors, storage, cache)
        idx, build_s = built[key]
        idx.ef_search = value if knob == "ef" else None
        idx.nprobe = value if knob == "nprobe" else None
        idx.threads = search_threads
        idx.search(qm[:1], qs[:1], k, candidates=cands, fingerprint=fingerprint)  # warm-up
        res_ids = np.empty((q, k), np.int64)
        qps, cpu_qps = 0.0, 0.0
        for _ in range(args.repeat):  # the fastest pass (others' load only ever slows a pass down)
            t, c = time.perf_counter(), time.process_time()
            for lo in range(0, q, args.batch):
                res_ids[lo : lo + args.batch] = idx.search(qm[lo : lo + args.batch], qs[lo : lo + args.batch], k,
                                                           candidates=cands, fingerprint=fingerprint).ids
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            if q / wall > qps:
                qps, cpu_qps = q / wall, q / cpu
        base_cpu_qps = base_cpu_qps or cpu_qps
        lat = []
        for i in range(min(args.single_queries, q)):
            t = time.perf_counter()
            idx.search(qm[i : i + 1], qs[i : i + 1], k, candidates=cands, fingerprint=fingerprint)
            lat.append(time.perf_counter() - t)
        p50, p99 = np.percentile(np.array(lat) * 1000, [50, 99])
        if storage not in references:
            references[storage] = gaussian_reference(args, means, samples, qm[:ne], qs[:ne], k, match, fingerprint,
                                                     cache)
        r1, rk = recall(res_ids[:ne], references[storage][:, :k], k)
        stored = idx.stored()[0].nbytes
        mem = means[0].nbytes + stored + faiss_bytes(idx) / n
        label = text + (" (BASELINE)" if text == BASELINE else f" [{idx.faiss_factory}]" if factory == "auto" else "")
        print(f"{label:<48} {build_s:>7.1f} {mem:>7.0f} {qps:>7.0f} {cpu_qps:>8.0f} {cpu_qps / base_cpu_qps:>7.2f} "
              f"{p50:>7.2f} {p99:>7.2f} {r1:>6.3f} {rk:>6.3f}")
        sys.stdout.flush()
        rows.append((text, r1, rk, qps, cpu_qps, p50))
        if args.breakdown:
            phases_of[text] = breakdown(idx, qm[:q], qs[:q], k, cands, fingerprint, args.batch)
    if args.breakdown:
        print(f"\n# where a batched query's time goes on one thread (microseconds per query, wall and CPU, share of "
              f"the CPU; batches of {args.batch})")
        for text, (phases, (total, total_cpu)) in phases_of.items():
            print(f"{text}{' (BASELINE)' if text == BASELINE else ''}: {1e6 * total / q:.0f} us/query wall, "
                  f"{1e6 * total_cpu / q:.0f} CPU")
            for name, (sec, cpu) in phases.items():
                print(f"    {name:<26} {1e6 * sec / q:>8.1f} us  {1e6 * cpu / q:>8.1f} us CPU  {100 * cpu / total_cpu:>5.1f}%")
    targets = "R@1 >= 0.99, R@k >= 0.98, >= 10,000 QPS, p50 < 1 ms"
    ok = [r[0] for r in rows if r[1] >= 0.99 and r[2] >= 0.98 and r[3] >= 10_000 and r[5] < 1.0]
    ok_cpu = [r[0] for r in rows if r[1] >= 0.99 and r[2] >= 0.98 and r[4] >= 10_000 and r[5] < 1.0]
    print(f"# targets ({targets}) met by (wall QPS): {', '.join(ok) if ok else 'none'}; "
          f"(QPS per CPU second): {', '.join(ok_cpu) if ok_cpu else 'none'}")
    print(f"# recall measured on {ne} queries; total wall time {time.perf_counter() - t0:.0f} s; "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
