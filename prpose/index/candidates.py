"""The index's candidate stage: a FAISS index over the embedding means proposes entries to re-rank exactly.

Mean distance is a cheap proxy for the match distance; `prpose.index.core.PoseIndex.search` re-ranks the
candidates found here with the exact match distance (`prpose.index.kernels`). faiss is imported lazily.
"""

from __future__ import annotations

import math

import numpy as np

from prpose.errors import PrposeError

#: "auto" switches from exact flat search to an inverted file (IVF) at this many entries, with about
#: AUTO_IVF_LIST_SIZE entries per list (the number of lists a power of two, at most AUTO_IVF_MAX_LISTS): constant
#: list sizes keep what DEFAULT_NPROBE lists cover about constant. Measured (bench/bench_index.py, k = 20, 40
#: candidates over moments, recall vs the exact ranking): flat search costs ~1 ms CPU per query at 190k entries,
#: IVF1024 nprobe 16 ~0.15 ms with recall@1/@20 1.000/0.991 on the packaged model's mocap embeddings (190k entries;
#: nprobe 8: 0.998/0.979; IVF2048 at 400k: 0.996/0.989, nprobe 8 0.992/0.972); at 1M synthetic entries IVF4096
#: nprobe 16 costs 137 us CPU per query against 228 for HNSW32 over moments (the choice before), at recall 1.000/1.000
#: for both, and builds in 18 s instead of 395 s (docs/SCALING.md).
AUTO_IVF_THRESHOLD = 200_000
AUTO_IVF_LIST_SIZE = 256
AUTO_IVF_MAX_LISTS = 16_384
#: HNSW graph construction depth; the faiss default (40) caps recall near 0.986 at 1M (NOTES-ECOSYSTEM.md).
HNSW_EF_CONSTRUCTION = 100
#: Default HNSW efSearch floor (raised to the number of candidates requested) and default IVF nprobe.
DEFAULT_EF_SEARCH = 128
DEFAULT_NPROBE = 16
#: IVF training uses at most this many means per inverted list (k-means gains nothing beyond ~100).
IVF_TRAIN_POINTS_PER_LIST = 64
#: (query, candidate) pairs whose vectors are gathered at once when recomputing candidate distances.
_RECOMPUTE_BUDGET = 1 << 16


#: What the FAISS stage indexes (the candidate proxy). "moments": an entry's sample mean c and sqrt(v), v the mean
#: squared distance of its samples from c, as a (D + 1)-vector; a query's (c, 0). Their squared L2 distance is the
#: mean over all K x K sample pairs of the squared pair distance r^2, minus the query's own v (the same for every
#: entry), exactly: the second moment of the distances the match distance averages a sigmoid over. "means": the
#: embedding means (indexes written before format version 3), blind to an entry's spread.
VECTOR_KINDS = ("moments", "means")
_VECTOR_CHUNK = 65_536  # entries per block when computing vectors (bounded temporaries)


def vector_dim(embedding_dim: int, kind: str) -> int:
    """Dimension of the candidate vectors of `kind` for embeddings of size D."""
    return embedding_dim + 1 if kind == "moments" else embedding_dim


def entry_vectors(means, samples, kind: str) -> np.ndarray:
    """Candidate vectors (N, vector_dim) float32 of entries: means (N, D), samples (N, K, D)."""
    if kind == "means":
        return np.ascontiguousarray(means, np.float32)
    n, _, d = samples.shape
    out = np.empty((n, d + 1), np.float32)
    for lo in range(0, n, _VECTOR_CHUNK):
        x = np.asarray(samples[lo : lo + _VECTOR_CHUNK], np.float32)
        centre = x.mean(axis=1)
        dev = x - centre[:, None]
        out[lo : lo + len(x), :d] = centre
        out[lo : lo + len(x), d] = np.sqrt(np.einsum("nkd,nkd->n", dev, dev) / x.shape[1])
    return out


def query_vectors(query_means, query_samples, kind: str) -> np.ndarray:
    """Candidate vectors (Q, vector_dim) float32 of queries: (c, 0) for "moments", the means for "means"."""
    if kind == "means":
        return np.ascontiguousarray(query_means, np.float32)
    qs = np.asarray(query_samples, np.float32)
    return np.concatenate([qs.mean(axis=1), np.zeros((len(qs), 1), np.float32)], axis=1)


def resolve_factory(factory: str, count: int) -> str:
    """The FAISS factory string in use for `count` entries ("auto": Flat below AUTO_IVF_THRESHOLD, else
    "IVF{nlist},Flat" with nlist the power of two nearest count / AUTO_IVF_LIST_SIZE, at most AUTO_IVF_MAX_LISTS)."""
    if factory != "auto":
        return factory
    if count < AUTO_IVF_THRESHOLD:
        return "Flat"
    nlist = 1 << max(0, round(math.log2(max(count, 1) / AUTO_IVF_LIST_SIZE)))
    return f"IVF{min(nlist, AUTO_IVF_MAX_LISTS)},Flat"


def saved_factories(factory: str, count: int) -> tuple[str, ...]:
    """FAISS structures an index saved with `factory` and `count` entries may hold: today's resolution and, for
    "auto" from AUTO_IVF_THRESHOLD entries on, "HNSW32" (what "auto" chose there before IVF; such indexes load and
    keep it until entries are added)."""
    resolved = resolve_factory(factory, count)
    return (resolved, "HNSW32") if factory == "auto" and count >= AUTO_IVF_THRESHOLD else (resolved,)


def make_faiss(dim: int, factory: str):
    """An empty FAISS index (L2) from a factory string; HNSW gets efConstruction >= HNSW_EF_CONSTRUCTION."""
    import faiss

    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_L2)
    except RuntimeError as err:
        raise PrposeError(f"PoseIndex: FAISS factory {factory!r} was refused by faiss: {err}") from None
    hnsw = faiss.downcast_index(index)
    if hasattr(hnsw, "hnsw"):
        hnsw.hnsw.efConstruction = max(hnsw.hnsw.efConstruction, HNSW_EF_CONSTRUCTION)
    return index


def build_faiss(factory: str, means: np.ndarray):
    """A FAISS index of `factory` (resolved) holding `means` (N, D) float32, trained on them when it needs it."""
    index = make_faiss(means.shape[1], factory)
    if not index.is_trained:
        _train(index, factory, means)
    index.add(means)
    return index


def _train(index, factory, means):
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    nlist = ivf.nlist if ivf is not None else 1
    if len(means) < nlist:
        raise PrposeError(
            f"PoseIndex: FAISS factory {factory!r} has {nlist} inverted lists and needs at least that many "
            f"entries to train; the index holds {len(means)}. Use factory='Flat' or 'auto' for small indexes"
        )
    budget = max(nlist * IVF_TRAIN_POINTS_PER_LIST, 10_000)
    # A fixed-seed subsample: the same data always gives the same trained index.
    rows = np.random.default_rng(0).choice(len(means), budget, replace=False) if len(means) > budget else None
    index.train(means if rows is None else means[np.sort(rows)])


def set_search_params(index, factory: str, num_candidates: int, ef_search: int | None, nprobe: int | None):
    """HNSW efSearch = max(ef_search or DEFAULT_EF_SEARCH, num_candidates); IVF nprobe = nprobe or DEFAULT_NPROBE."""
    import faiss

    space = faiss.ParameterSpace()
    if "HNSW" in factory:
        ef = ef_search if ef_search is not None else DEFAULT_EF_SEARCH
        space.set_index_parameter(index, "efSearch", int(max(ef, num_candidates)))
    if "IVF" in factory:
        space.set_index_parameter(index, "nprobe", int(nprobe if nprobe is not None else DEFAULT_NPROBE))


def nearest_candidates(index, vectors: np.ndarray, query_vectors: np.ndarray, num: int, wide: int) -> np.ndarray:
    """The `num` candidates (Q, num) int64 ids (-1 pad) nearest to query_vectors (Q, V) among vectors (N, V).

    FAISS is asked for `wide` >= num, then the `num` nearest by distances recomputed here per query are kept (ties by
    id): FAISS batches switch to BLAS distances (different rounding), so its boundary could depend on the batch.
    The recomputation runs in column blocks, so its temporaries stay bounded for any `wide`.
    """
    _, cand = index.search(query_vectors, wide)
    valid = cand >= 0
    dist = np.empty(cand.shape, np.float32)
    cols = max(1, _RECOMPUTE_BUDGET // max(len(cand), 1))
    for lo in range(0, wide, cols):
        block = cand[:, lo : lo + cols]
        diff = np.take(vectors, np.where(block >= 0, block, 0), axis=0) - query_vectors[:, None, :]
        dist[:, lo : lo + cols] = np.einsum("qcv,qcv->qc", diff, diff)
    dist[~valid] = np.inf
    order = np.lexsort((np.where(valid, cand, np.iinfo(np.int64).max), dist), axis=-1)[:, :num]
    return np.take_along_axis(np.where(valid, cand, -1), order, axis=1)
