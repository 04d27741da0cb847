"""The index's candidate stage: a FAISS index over the embedding means proposes entries to re-rank exactly.

Mean distance is a cheap proxy for the match distance; `prpose.index.core.PoseIndex.search` re-ranks the
candidates found here with the exact match distance (`prpose.index.kernels`). faiss is imported lazily.
"""

from __future__ import annotations

import numpy as np

from prpose.errors import PrposeError

#: "auto" switches from exact flat search to HNSW at this many entries: flat search over means costs
#: ~0.7 ms/query per 100k entries here (NOTES-ECOSYSTEM.md), which breaks a 5 ms single-query budget past ~500k
#: and is slower than HNSW in batches well before that.
AUTO_HNSW_THRESHOLD = 200_000
#: HNSW graph construction depth; the faiss default (40) caps recall near 0.986 at 1M (NOTES-ECOSYSTEM.md).
HNSW_EF_CONSTRUCTION = 100
#: Default HNSW efSearch floor (raised to the number of candidates requested) and default IVF nprobe.
DEFAULT_EF_SEARCH = 128
DEFAULT_NPROBE = 16
#: IVF training uses at most this many means per inverted list (k-means gains nothing beyond ~100).
IVF_TRAIN_POINTS_PER_LIST = 64


def resolve_factory(factory: str, count: int) -> str:
    """The FAISS factory string in use for `count` entries ("auto": Flat below AUTO_HNSW_THRESHOLD, else HNSW32)."""
    if factory == "auto":
        return "Flat" if count < AUTO_HNSW_THRESHOLD else "HNSW32"
    return factory


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


def nearest_candidates(index, means: np.ndarray, query_means: np.ndarray, num: int, wide: int) -> np.ndarray:
    """The `num` candidates (Q, num) int64 ids (-1 pad) nearest by mean for query_means (Q, D).

    FAISS is asked for `wide` >= num, then the `num` nearest by means recomputed here per query are kept (ties by
    id): FAISS batches switch to BLAS distances (different rounding), so its boundary could depend on the batch.
    """
    _, cand = index.search(query_means, wide)
    valid = cand >= 0
    safe = np.where(valid, cand, 0)
    diff = means[safe] - query_means[:, None, :]
    mean_dist = np.einsum("qcd,qcd->qc", diff, diff)
    mean_dist[~valid] = np.inf
    order = np.lexsort((np.where(valid, cand, np.iinfo(np.int64).max), mean_dist), axis=-1)[:, :num]
    return np.take_along_axis(np.where(valid, cand, -1), order, axis=1)
