"""Pose retrieval index: FAISS candidates over embedding means, then exact match-distance re-ranking.

Retrieval ranks index entries by the Pr-VIPE match distance (REFERENCE.md, "Matching probability"):

    P(x1, x2) = mean over the K x K sample pairs of (1 - s) sigmoid(-a ||z1_i - z2_j||_2 + b) + s/2
    d(x1, x2) = -log P(x1, x2)

Scoring every entry that way costs K^2 = 400 sample distances per entry, so `PoseIndex.search` works in two
stages: (1) a FAISS index over the embedding means proposes `candidates` entries per query (mean distance is a
cheap proxy for d); (2) d is computed exactly from the stored samples for those candidates only and the
candidates are re-sorted. `PoseIndex.search_exact` scores every entry (brute force) and is the reference the
two-stage search is measured against (bench/bench_index.py).

The interface follows FAISS (`add`, `search`, `save`, `load`, a factory string), with per-entry metadata
(source, subject, sequence, frame, camera, optional pose3d) kept alongside and returned with the hits.

Numerics. Stage 2 runs in float32. Sample distances use |q|^2 + |x|^2 - 2 q.x after centring both sides on the
query's sample mean, so the cancellation error is small exactly where it matters (entries near the query).
The mean over the K x K pairs is taken over sigmoid values, which lie in [0, 1]: their float32 mean has a
relative error ~1e-7 and only fails when every pair underflows (a r - b > ~87); those rows are recomputed in
float64 log space with a log-sum-exp, so d is finite and ordered for any input (also when s = 0). This is
~4x faster than evaluating log-sigmoid and a log-sum-exp for every pair, with the same result (tests compare
with an independent float64 log-space reference).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import json
import math
import os
import pathlib
import re
import stat
from typing import Any, Mapping

import numpy as np

from prpose import atomic
from prpose.errors import PrposeError

FORMAT_NAME = "prpose-index"
#: 2: every file (faiss.index included) hashed and confined to the directory; the manifest hashes itself.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
FAISS_FILE = "faiss.index"
#: Written beside the index files by `prpose index build`: the model (run directory) that built it.
MODEL_REF = "model.json"

#: Metadata fields every entry carries when metadata is given (pose3d and extra fields are optional).
REQUIRED_METADATA_FIELDS = ("source", "subject", "sequence", "frame", "camera")

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

_SAMPLE_DTYPES = ("float32", "float16")
_ENTRY_CHUNK = 1024  # entries per block in the brute-force scan: keeps a (K, chunk*K) block in cache
#: (query, candidate) pairs per block of the exact re-rank: bounds its working memory to about
#: _PAIR_BUDGET x K x (K + 2 D) floats (~40 MB at K = 20, D = 16) whatever the number of queries and k.
_PAIR_BUDGET = 8192
#: (query, candidate) pairs per block of the FAISS candidate stage (~ pairs x (D + 6) x 4 bytes, ~11 MB at D = 16):
#: larger than the re-rank blocks because FAISS answers big query batches faster.
_CANDIDATE_BUDGET = 16 * _PAIR_BUDGET
_MANIFEST_MAX_BYTES = 16 << 20
_LOAD_ATTEMPTS = 50  # re-reads when a concurrent save replaces the directory while it is read
_UNDERFLOW = 1e-30  # mean sigmoid below this -> recompute the row in float64 log space


# ----------------------------------------------------------------------------------------------------------
# Results


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """Hits for Q queries, best first.

    distances: (Q, k) float32 match distance d = -log P (ascending; +inf where fewer than k entries exist).
    probabilities: (Q, k) float32 match probability exp(-d) (0 for padding).
    ids: (Q, k) int64 entry ids (insertion order, from 0); -1 for padding.
    metadata: field -> (Q, k, ...) metadata of each hit (zero / empty string for padding).
    """

    distances: np.ndarray
    probabilities: np.ndarray
    ids: np.ndarray
    metadata: dict[str, np.ndarray]

    def rows(self, query: int = 0) -> list[dict[str, Any]]:
        """The hits of one query as a list of dicts (id, distance, probability and the metadata fields)."""
        out = []
        for j in range(self.ids.shape[1]):
            if self.ids[query, j] < 0:
                break
            row = {
                "id": int(self.ids[query, j]),
                "distance": float(self.distances[query, j]),
                "probability": float(self.probabilities[query, j]),
            }
            for name, values in self.metadata.items():
                value = values[query, j]
                row[name] = value.item() if np.ndim(value) == 0 else value
            out.append(row)
        return out


# ----------------------------------------------------------------------------------------------------------
# Match distance kernels (float32, vectorised)


def _sigmoid_sum_to_distance(total, num_pairs, smoothing):
    """Sum of sigmoid values over K x K pairs (...) -> d = -log((1-s) mean + s/2), float64 (...)."""
    mean = np.asarray(total, np.float64) / num_pairs
    with np.errstate(divide="ignore"):  # s = 0 and an underflowed mean give +inf; those rows are redone
        return -np.log((1.0 - smoothing) * mean + smoothing / 2.0)


def _distance_logspace64(query, entries, a, b, smoothing):
    """Exact float64 log-space d for one query (K1, D) against entries (n, K2, D) -> (n,).

    Used only for rows whose float32 sigmoid mean underflowed (all sample pairs very far apart).
    """
    q = np.asarray(query, np.float64)
    x = np.asarray(entries, np.float64)
    diff = x[:, None, :, :] - q[None, :, None, :]  # (n, K1, K2, D)
    r = np.sqrt(np.sum(diff * diff, axis=-1)).reshape(len(x), -1)
    t = b - a * r
    log_sig = np.minimum(t, 0.0) - np.log1p(np.exp(-np.abs(t)))  # log sigmoid(t), stable both signs
    peak = log_sig.max(axis=1, keepdims=True)
    log_mean = np.log(np.exp(log_sig - peak).sum(axis=1)) + peak[:, 0] - np.log(r.shape[1])
    with np.errstate(divide="ignore"):
        log_smooth = np.log(smoothing / 2.0) if smoothing > 0 else -np.inf
    return -np.logaddexp(np.log1p(-smoothing) + log_mean, log_smooth)


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
    """
    q = np.asarray(query_samples, np.float32)
    x = np.asarray(candidate_samples, np.float32)
    nq, nc, k2, _ = x.shape
    k1 = q.shape[1]
    centre = q.mean(axis=1, keepdims=True)  # (Q, 1, D)
    qc = q - centre
    xc = (x - centre[:, None]).reshape(nq, nc * k2, -1)
    # Squared distances from the centred norms; (Q, C*K2, K1).
    r = np.matmul(xc, qc.transpose(0, 2, 1))
    r *= -2.0
    r += np.einsum("qnd,qnd->qn", xc, xc)[:, :, None]
    r += np.einsum("qkd,qkd->qk", qc, qc)[:, None, :]
    np.maximum(r, 0.0, out=r)
    np.sqrt(r, out=r)
    _sigmoid_in_place(r, a, b)
    total = r.reshape(nq, nc, k2 * k1).sum(axis=-1)
    d = _sigmoid_sum_to_distance(total, k1 * k2, smoothing)
    low = total < _UNDERFLOW * k1 * k2
    for qi, ci in zip(*np.nonzero(low)):
        d[qi, ci] = _distance_logspace64(q[qi], x[qi, ci][None], a, b, smoothing)[0]
    return d


def _validate_match_params(match_params, where):
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


def _resolve_factory(factory: str, count: int) -> str:
    if factory == "auto":
        return "Flat" if count < AUTO_HNSW_THRESHOLD else "HNSW32"
    return factory



# ----------------------------------------------------------------------------------------------------------
# The index


class PoseIndex:
    """Probabilistic pose embeddings with per-entry metadata; search by exact match distance.

    Args:
      embedding_dim: D, the embedding size (16 for Pr-VIPE).
      num_samples: K, samples stored per entry (20).
      match_params: (a, b, smoothing) of the model that produced the embeddings (`PoseEmbedder.match_params`).
      fingerprint: the model's fingerprint (`PoseEmbedder.fingerprint`); `load` can refuse another model's index.
      profile: keypoint profile of the model input, recorded for the user ("input13").
      factory: FAISS factory string for the candidate stage over means ("Flat", "HNSW32", "IVF1024,Flat", ...)
        or "auto": exact "Flat" under AUTO_HNSW_THRESHOLD entries, "HNSW32" (efConstruction 100) above.
        Indexes that need training (IVF) are trained on the stored means when first built.
      sample_dtype: "float32" (default) or "float16" storage of the samples; computation is float32 either way.
        float16 halves memory (640 B/entry at K=20, D=16) at the cost of ~1e-3 sample rounding.

    The FAISS structure is built lazily at the first search/save after `add`, so "auto" sees the real size.
    Search-time knobs, FAISS style: `index.ef_search` (HNSW; None = max(DEFAULT_EF_SEARCH, candidates)) and
    `index.nprobe` (IVF; None = DEFAULT_NPROBE). Not thread-safe (the FAISS parameters are set per call).
    """

    def __init__(
        self,
        embedding_dim: int,
        num_samples: int,
        match_params,
        fingerprint: str,
        profile: str = "input13",
        factory: str = "auto",
        sample_dtype: str = "float32",
    ):
        where = "PoseIndex"
        if not isinstance(embedding_dim, (int, np.integer)) or embedding_dim < 1:
            raise PrposeError(f"{where}: embedding_dim={embedding_dim!r}, expected a positive integer")
        if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise PrposeError(f"{where}: num_samples={num_samples!r}, expected a positive integer")
        if not isinstance(fingerprint, str) or not fingerprint:
            raise PrposeError(f"{where}: fingerprint={fingerprint!r}, expected a non-empty string")
        if not isinstance(factory, str) or not factory:
            raise PrposeError(f"{where}: factory={factory!r}, expected 'auto' or a FAISS factory string")
        if sample_dtype not in _SAMPLE_DTYPES:
            raise PrposeError(f"{where}: sample_dtype={sample_dtype!r}, expected one of {_SAMPLE_DTYPES}")
        self.embedding_dim = int(embedding_dim)
        self.num_samples = int(num_samples)
        self.match_params = _validate_match_params(match_params, where)
        self.fingerprint = fingerprint
        self.profile = str(profile)
        self.factory = factory
        self.sample_dtype = sample_dtype
        self.ef_search: int | None = None
        self.nprobe: int | None = None
        if factory != "auto":
            self._make_faiss(factory)  # fail now, not at the first search, on a bad factory string
        self._means: list[np.ndarray] = []
        self._samples: list[np.ndarray] = []
        self._metadata: dict[str, list[np.ndarray]] | None = None
        self._count = 0
        self._faiss = None
        self._faiss_factory: str | None = None
        self._sample_norms: np.ndarray | None = None

    # -- basic properties ---------------------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        """Number of entries (FAISS naming)."""
        return self._count

    def __len__(self) -> int:
        return self._count

    @property
    def metadata_fields(self) -> tuple[str, ...]:
        return tuple(self._metadata) if self._metadata is not None else ()

    @property
    def faiss_factory(self) -> str:
        """The FAISS structure in use (the resolved "auto" choice)."""
        return _resolve_factory(self.factory, self._count)

    def __repr__(self) -> str:
        return (
            f"PoseIndex(ntotal={self._count}, embedding_dim={self.embedding_dim}, num_samples={self.num_samples}, "
            f"factory={self.factory!r} -> {self.faiss_factory!r}, sample_dtype={self.sample_dtype!r}, "
            f"fingerprint={self.fingerprint!r})"
        )

    def means(self) -> np.ndarray:
        """All stored means (N, D) float32."""
        self._consolidate()
        return self._means[0] if self._means else np.zeros((0, self.embedding_dim), np.float32)

    def samples(self) -> np.ndarray:
        """All stored samples (N, K, D) in the storage dtype."""
        self._consolidate()
        if self._samples:
            return self._samples[0]
        return np.zeros((0, self.num_samples, self.embedding_dim), self.sample_dtype)

    def metadata(self) -> dict[str, np.ndarray]:
        """All stored metadata, field -> (N, ...)."""
        self._consolidate()
        return {name: chunks[0] for name, chunks in (self._metadata or {}).items()}

    # -- adding -------------------------------------------------------------------------------------------

    def _check_embeddings(self, means, samples, where, name_means, name_samples):
        try:
            m = np.asarray(means)
            s = np.asarray(samples)
        except (TypeError, ValueError) as err:
            raise PrposeError(f"{where}: could not read {name_means}/{name_samples} as arrays ({err})")
        for name, arr in ((name_means, m), (name_samples, s)):
            if arr.dtype.kind not in "fiu":
                raise PrposeError(f"{where}: {name} has dtype {arr.dtype}, expected a float array")
        d, k = self.embedding_dim, self.num_samples
        if m.ndim != 2 or m.shape[1] != d:
            raise PrposeError(f"{where}: {name_means} has shape {m.shape}, expected (N, {d})")
        if s.ndim != 3 or s.shape[1:] != (k, d) or s.shape[0] != m.shape[0]:
            raise PrposeError(
                f"{where}: {name_samples} has shape {s.shape}, expected ({m.shape[0]}, {k}, {d}) to match "
                f"{name_means} {m.shape} and the index (K={k}, D={d})"
            )
        m = np.ascontiguousarray(m, np.float32)
        s = np.ascontiguousarray(s, np.float32)
        for name, arr in ((name_means, m), (name_samples, s)):
            finite = np.isfinite(arr).reshape(len(arr), -1).all(axis=1)
            if not finite.all():
                bad = np.flatnonzero(~finite)
                raise PrposeError(
                    f"{where}: {name} has {bad.size} row(s) with NaN/inf values (first rows {bad[:5].tolist()}); "
                    "expected finite embeddings"
                )
        return m, s

    def _check_metadata(self, metadata, n, where):
        if metadata is None:
            if self._metadata:
                raise PrposeError(
                    f"{where}: metadata=None, but the index stores fields {list(self._metadata)}; "
                    "give them for every added entry"
                )
            return None
        if isinstance(metadata, np.ndarray) and metadata.dtype.names:
            metadata = {name: metadata[name] for name in metadata.dtype.names}
        if not isinstance(metadata, Mapping):
            raise PrposeError(
                f"{where}: metadata of type {type(metadata).__name__}, expected a dict of per-entry arrays "
                "or a structured array"
            )
        missing = [f for f in REQUIRED_METADATA_FIELDS if f not in metadata]
        if missing:
            raise PrposeError(
                f"{where}: metadata lacks fields {missing}; expected at least {list(REQUIRED_METADATA_FIELDS)}"
            )
        out = {}
        for name, values in metadata.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise PrposeError(f"{where}: metadata field name {name!r}, expected a Python identifier")
            arr = np.asarray(values)
            if arr.dtype.kind == "O":
                arr = arr.astype(str)  # .npy files are written without pickle: objects become strings
            if arr.dtype.kind not in "biufUS":
                raise PrposeError(f"{where}: metadata[{name!r}] has dtype {arr.dtype}, expected numbers or strings")
            if arr.ndim == 0 or arr.shape[0] != n:
                raise PrposeError(
                    f"{where}: metadata[{name!r}] has shape {arr.shape}, expected {n} rows (one per entry)"
                )
            if name == "pose3d" and arr.shape[1:] != (17, 3):
                raise PrposeError(f"{where}: metadata['pose3d'] has shape {arr.shape}, expected ({n}, 17, 3)")
            out[name] = arr
        if self._metadata is not None and self._count > 0:
            if set(out) != set(self._metadata):
                raise PrposeError(
                    f"{where}: metadata fields {sorted(out)} differ from the index's {sorted(self._metadata)}"
                )
            for name, arr in out.items():
                old = self._metadata[name][0]
                if arr.shape[1:] != old.shape[1:] or (arr.dtype.kind in "US") != (old.dtype.kind in "US"):
                    raise PrposeError(
                        f"{where}: metadata[{name!r}] has per-entry shape {arr.shape[1:]} and dtype {arr.dtype}, "
                        f"expected {old.shape[1:]} and a dtype like {old.dtype} (as already stored)"
                    )
        return out

    def add(self, means, samples, metadata=None) -> np.ndarray:
        """Append N entries; returns their ids (N,) int64.

        means: (N, D) embedding means (stage 1 searches these); samples: (N, K, D) the K samples that define the
        match distance; metadata: dict field -> (N, ...) or a structured array with at least
        source, subject, sequence, frame, camera (pose3d (N, 17, 3) and other fields optional), or None when the
        index carries no metadata. Object arrays are stored as strings.
        """
        where = "PoseIndex.add"
        m, s = self._check_embeddings(means, samples, where, "means", "samples")
        meta = self._check_metadata(metadata, len(m), where)
        if self._count == 0:
            self._metadata = None if meta is None else {name: [] for name in meta}
        if self.sample_dtype == "float16":
            limit = float(np.finfo(np.float16).max)
            if s.size and np.abs(s).max() > limit:
                raise PrposeError(
                    f"{where}: samples reach |{np.abs(s).max():.4g}|, beyond float16 range {limit}; "
                    "use sample_dtype='float32'"
                )
        ids = np.arange(self._count, self._count + len(m), dtype=np.int64)
        self._means.append(m)
        self._samples.append(s.astype(self.sample_dtype, copy=False))
        if meta is not None:
            for name, arr in meta.items():
                self._metadata[name].append(arr)
        self._count += len(m)
        self._sample_norms = None
        return ids

    def _consolidate(self):
        if len(self._means) > 1:
            self._means = [np.concatenate(self._means)]
            self._samples = [np.concatenate(self._samples)]
            for name in self._metadata or {}:
                self._metadata[name] = [np.concatenate(self._metadata[name])]

    # -- the FAISS candidate stage ------------------------------------------------------------------------

    def _make_faiss(self, factory):
        import faiss

        try:
            index = faiss.index_factory(self.embedding_dim, factory, faiss.METRIC_L2)
        except RuntimeError as err:
            raise PrposeError(f"PoseIndex: FAISS factory {factory!r} was refused by faiss: {err}") from None
        hnsw = faiss.downcast_index(index)
        if hasattr(hnsw, "hnsw"):
            hnsw.hnsw.efConstruction = max(hnsw.hnsw.efConstruction, HNSW_EF_CONSTRUCTION)
        return index

    def _ensure_faiss(self):
        """Build (or extend) the FAISS index over the means so that it holds every entry."""
        resolved = _resolve_factory(self.factory, self._count)
        if self._faiss is not None and self._faiss_factory == resolved:
            if self._faiss.ntotal < self._count:
                self._faiss.add(self.means()[self._faiss.ntotal :])
            return self._faiss
        means = self.means()
        index = self._make_faiss(resolved)
        if not index.is_trained:
            index = self._train(index, resolved, means)
        index.add(means)
        self._faiss, self._faiss_factory = index, resolved
        return index

    def _train(self, index, resolved, means):
        import faiss

        ivf = faiss.try_extract_index_ivf(index)
        nlist = ivf.nlist if ivf is not None else 1
        if len(means) < nlist:
            raise PrposeError(
                f"PoseIndex: FAISS factory {resolved!r} has {nlist} inverted lists and needs at least that many "
                f"entries to train; the index holds {len(means)}. Use factory='Flat' or 'auto' for small indexes"
            )
        budget = max(nlist * IVF_TRAIN_POINTS_PER_LIST, 10_000)
        # A fixed-seed subsample: the same data always gives the same trained index.
        rows = np.random.default_rng(0).choice(len(means), budget, replace=False) if len(means) > budget else None
        index.train(means if rows is None else means[np.sort(rows)])
        return index

    def _set_search_params(self, index, num_candidates):
        import faiss

        space = faiss.ParameterSpace()
        if "HNSW" in self._faiss_factory:
            ef = self.ef_search if self.ef_search is not None else DEFAULT_EF_SEARCH
            space.set_index_parameter(index, "efSearch", int(max(ef, num_candidates)))
        if "IVF" in self._faiss_factory:
            space.set_index_parameter(index, "nprobe", int(self.nprobe if self.nprobe is not None else DEFAULT_NPROBE))

    # -- searching ----------------------------------------------------------------------------------------

    def _check_query(self, query_means, query_samples, k, fingerprint, where):
        if fingerprint is not None and fingerprint != self.fingerprint:
            raise PrposeError(
                f"{where}: embeddings from model {fingerprint!r}, but the index was built with model "
                f"{self.fingerprint!r}; embed with that model or rebuild the index (fingerprint=None skips the check)"
            )
        if self._count == 0:
            raise PrposeError(f"{where}: the index is empty; add entries first")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise PrposeError(f"{where}: k={k!r}, expected a positive integer")
        m, s = self._check_embeddings(query_means, query_samples, where, "query_means", "query_samples")
        return m, s, int(k)

    def search(self, query_means, query_samples, k: int, candidates: int | None = None, *,
               fingerprint: str | None) -> SearchResult:
        """Two-stage search: FAISS over means proposes candidates, exact match distance re-ranks them.

        query_means: (Q, D); query_samples: (Q, K, D); k: hits per query; candidates: how many FAISS
        candidates to re-rank per query (default max(8k, 64), at least k). fingerprint (required): the
        fingerprint of the model that embedded the queries (`PoseEmbedder.fingerprint`); another model's
        embeddings are refused, since distances between two models' spaces mean nothing. Pass None only to
        skip that check deliberately. Results are identical whether the queries come in one batch or one at a
        time; the work runs in blocks of a bounded number of (query, candidate) pairs, so memory stays
        bounded for any Q and k (beyond the (Q, k) result itself).

        Why 8k: mean distance is only a proxy for d (an entry's spread also moves d). On 1M synthetic entries
        with the model's initial (flattest) match parameters, 4k = 80 candidates gave recall@20 0.88 against
        brute force and 8k = 160 gave 0.995 (recall@1 0.995 / 1.000); bench/bench_index.py measures this.
        """
        where = "PoseIndex.search"
        qm, qs, k = self._check_query(query_means, query_samples, k, fingerprint, where)
        if candidates is None:
            candidates = max(8 * k, 64)
        if isinstance(candidates, bool) or not isinstance(candidates, (int, np.integer)) or candidates < k:
            raise PrposeError(f"{where}: candidates={candidates!r}, expected an integer >= k={k}")
        n = self._count
        num = min(int(candidates), n)
        # Ask FAISS for a margin more, then keep the `num` nearest by means recomputed here per query: FAISS
        # batches switch to BLAS distances (different rounding) so its boundary could depend on the batch.
        wide = min(n, num + max(8, num // 8))
        index = self._ensure_faiss()
        self._set_search_params(index, wide)
        block = max(1, _CANDIDATE_BUDGET // wide)
        parts = [self._search_block(index, qm[lo : lo + block], qs[lo : lo + block], num, wide, k)
                 for lo in range(0, max(len(qm), 1), block)]
        if len(parts) == 1:
            return parts[0]
        return SearchResult(
            distances=np.concatenate([p.distances for p in parts]),
            probabilities=np.concatenate([p.probabilities for p in parts]),
            ids=np.concatenate([p.ids for p in parts]),
            metadata={name: np.concatenate([p.metadata[name] for p in parts]) for name in parts[0].metadata},
        )

    def _search_block(self, index, qm, qs, num, wide, k) -> SearchResult:
        _, cand = index.search(qm, wide)
        means = self.means()
        valid = cand >= 0
        safe = np.where(valid, cand, 0)
        diff = means[safe] - qm[:, None, :]
        mean_dist = np.einsum("qcd,qcd->qc", diff, diff)
        mean_dist[~valid] = np.inf
        order = np.lexsort((np.where(valid, cand, np.iinfo(np.int64).max), mean_dist), axis=-1)[:, :num]
        cand = np.take_along_axis(np.where(valid, cand, -1), order, axis=1)
        return self._rerank(qs, cand, k)

    def _rerank(self, qs, cand, k) -> SearchResult:
        """Exact d of each query (Q, K, D) to its candidates (Q, C) ids, in blocks of <= _PAIR_BUDGET pairs."""
        a, b, s = self.match_params
        samples = self.samples()
        nq, num = cand.shape
        dist = np.full((nq, num), np.inf)
        rows = max(1, _PAIR_BUDGET // max(num, 1))
        cols = max(1, _PAIR_BUDGET // rows)
        for lo in range(0, nq, rows):
            hi = min(lo + rows, nq)
            for clo in range(0, num, cols):
                chi = min(clo + cols, num)
                c = cand[lo:hi, clo:chi]
                valid = c >= 0
                x = samples[np.where(valid, c, 0)].astype(np.float32, copy=False)
                d = rerank_distances(qs[lo:hi], x, a, b, s)
                dist[lo:hi, clo:chi] = np.where(valid, d, np.inf)
        return self._top_k(dist, cand, k)

    def _top_k(self, dist, ids, k) -> SearchResult:
        """Sort each row by (distance, id) and keep k; pads with id -1 / +inf when a row has fewer entries."""
        nq, width = dist.shape
        if width < k:
            dist = np.concatenate([dist, np.full((nq, k - width), np.inf)], axis=1)
            ids = np.concatenate([ids, np.full((nq, k - width), -1, np.int64)], axis=1)
        tie = np.where(ids >= 0, ids, np.iinfo(np.int64).max)
        order = np.lexsort((tie, dist), axis=-1)[:, :k]
        d = np.take_along_axis(dist, order, axis=1)
        i = np.take_along_axis(ids, order, axis=1)
        i = np.where(np.isfinite(d), i, -1).astype(np.int64)
        return self._result(d, i)

    def _result(self, d, ids) -> SearchResult:
        pad = ids < 0
        meta = {}
        for name, values in self.metadata().items():
            rows = values[np.where(pad, 0, ids)]
            rows[pad] = np.zeros((), values.dtype)
            meta[name] = rows
        d32 = d.astype(np.float32)
        return SearchResult(
            distances=d32,
            probabilities=np.where(pad, 0.0, np.exp(-d)).astype(np.float32),
            ids=ids,
            metadata=meta,
        )

    def search_exact(self, query_means, query_samples, k: int, *, fingerprint: str | None) -> SearchResult:
        """Brute-force reference: exact match distance from every query to every entry (all K x K pairs).

        query_means: (Q, D) (checked, unused: the ranking depends on samples only); query_samples: (Q, K, D);
        fingerprint: as in `search`. Costs ~N x K^2 sample distances per query (about 1.5 s per query at 1M
        entries on this machine).
        """
        where = "PoseIndex.search_exact"
        _, qs, k = self._check_query(query_means, query_samples, k, fingerprint, where)
        a, b, s = self.match_params
        samples = self.samples()
        n, kk, dim = samples.shape
        if self._sample_norms is None:
            flat = samples.reshape(-1, dim).astype(np.float32)
            self._sample_norms = np.einsum("nd,nd->n", flat, flat)
        norms = self._sample_norms
        keep = min(k, n)
        out_d = np.empty((len(qs), keep))
        out_i = np.empty((len(qs), keep), np.int64)
        for qi, q in enumerate(qs):
            qn = np.einsum("kd,kd->k", q, q)[:, None]
            d = np.empty(n)
            for lo in range(0, n, _ENTRY_CHUNK):
                hi = min(lo + _ENTRY_CHUNK, n)
                x = samples[lo:hi].reshape(-1, dim).astype(np.float32, copy=False)
                r = q @ x.T  # (K1, chunk*K2)
                r *= -2.0
                r += norms[lo * kk : hi * kk]
                r += qn
                np.maximum(r, 0.0, out=r)
                np.sqrt(r, out=r)
                _sigmoid_in_place(r, a, b)
                total = r.reshape(len(q), hi - lo, kk).sum(axis=2).sum(axis=0)
                block = _sigmoid_sum_to_distance(total, len(q) * kk, s)
                for j in np.flatnonzero(total < _UNDERFLOW * len(q) * kk):
                    block[j] = _distance_logspace64(q, samples[lo + j][None], a, b, s)[0]
                d[lo:hi] = block
            top = np.argpartition(d, keep - 1)[:keep] if keep < n else np.arange(n)
            # Include every entry tied with the k-th distance so that the (distance, id) order decides.
            kth = d[top].max()
            top = np.flatnonzero(d <= kth)
            order = np.lexsort((top, d[top]))[:keep]
            out_d[qi] = d[top[order]]
            out_i[qi] = top[order]
        return self._top_k(out_d, out_i, k)

    # -- persistence --------------------------------------------------------------------------------------

    def save(self, directory, model_ref: Mapping | None = None) -> pathlib.Path:
        """Write the index to `directory` atomically (prpose.atomic: lock, temp directory, swap).

        model_ref: optional JSON-able description of the model that built the index (`prpose index build`
        gives its run directory and fingerprint), written as model.json in the same atomic replace. It is not
        hashed: a user may edit it (for example after moving the run directory).

        Layout: manifest.json (written last), faiss.index (faiss.write_index), means.npy (N, D) float32,
        samples.npy (N, K, D) float32/float16, meta_<field>.npy per metadata field. The manifest lists every file
        with its size and SHA-256 and carries manifest_sha256, the SHA-256 of its own other fields. An existing
        index at `directory` is replaced only once the new one is complete; anything else there (a prepared
        dataset, a folder of documents) is refused with a PrposeError, and so is a second concurrent writer.
        """
        target = pathlib.Path(directory)
        with atomic.replacing(target, is_ours=is_index_dir, kind="prpose index") as tmp:
            files = {"means.npy": self.means(), "samples.npy": self.samples()}
            for name, values in self.metadata().items():
                files[f"meta_{name}.npy"] = values
            for fname, arr in files.items():
                np.save(tmp / fname, arr, allow_pickle=False)
            faiss_name = None
            if self._count > 0:
                import faiss

                faiss.write_index(self._ensure_faiss(), str(tmp / FAISS_FILE))
                faiss_name = FAISS_FILE
            listed = list(files) + ([faiss_name] if faiss_name else [])
            a, b, s = self.match_params
            manifest = {
                "format": FORMAT_NAME,
                "version": FORMAT_VERSION,
                "fingerprint": self.fingerprint,
                "profile": self.profile,
                "embedding_dim": self.embedding_dim,
                "num_samples": self.num_samples,
                "match_params": {"a": a, "b": b, "smoothing": s},
                "factory": self.factory,
                "faiss_factory": self._faiss_factory if faiss_name else None,
                "faiss_file": faiss_name,
                "count": self._count,
                "sample_dtype": self.sample_dtype,
                "metadata_fields": {
                    name: {"dtype": values.dtype.str, "shape": list(values.shape[1:])}
                    for name, values in self.metadata().items()
                },
                "search": {"ef_search": self.ef_search, "nprobe": self.nprobe},
                "files": {f: {"size": (tmp / f).stat().st_size, "sha256": atomic.sha256_file(tmp / f)} for f in listed},
            }
            manifest["manifest_sha256"] = _manifest_digest(manifest)
            if model_ref is not None:
                (tmp / MODEL_REF).write_text(json.dumps(dict(model_ref), indent=1))
            _write_manifest(tmp / MANIFEST, manifest)
        return target

    @classmethod
    def load(cls, directory, expected_fingerprint: str | None = None, verify: bool = True) -> "PoseIndex":
        """Read an index written by `save`.

        expected_fingerprint: refuse an index built with another model. verify: check every file's SHA-256
        against the manifest (sizes, file names and the manifest's own checksum are always checked). Only the
        index's own regular files inside `directory` are read (no symbolic links, no names from the manifest
        beyond the format's), each exactly once: its bytes are hashed and parsed from the same buffer, all
        through one directory descriptor, so a concurrent rebuild in place cannot mix two builds. A save
        interrupted between its two renames is repaired first (prpose.atomic.recover).
        Raises PrposeError naming the file and problem.
        """
        root = pathlib.Path(directory)
        atomic.recover(root, is_index_dir)
        for _ in range(_LOAD_ATTEMPTS):
            dfd = atomic.open_dir(root, "a prpose index directory (written by `prpose index build`)")
            try:
                return cls._load_from(root, dfd, expected_fingerprint, verify)
            except _Vanished as gone:
                if atomic.same_dir(dfd, root):  # not a concurrent swap: the file really is missing
                    if gone.name == MANIFEST:
                        raise PrposeError(
                            f"{root}: no {MANIFEST}; not a prpose index (or an interrupted save, which never "
                            "writes it)"
                        ) from None
                    raise PrposeError(f"{root / gone.name}: listed in {MANIFEST} but missing") from None
            finally:
                os.close(dfd)
        raise PrposeError(f"{root}: replaced {_LOAD_ATTEMPTS} times while being read; try again")

    @classmethod
    def _load_from(cls, root: pathlib.Path, dfd: int, expected_fingerprint, verify) -> "PoseIndex":
        mpath = root / MANIFEST
        m = _parse_manifest(_read_file(dfd, root, MANIFEST, limit=_MANIFEST_MAX_BYTES), mpath)
        try:
            index = cls(m["embedding_dim"], m["num_samples"], m["match_params"], m["fingerprint"],
                        profile=m["profile"], factory=m["factory"], sample_dtype=m["sample_dtype"])
        except PrposeError as err:
            raise PrposeError(f"{mpath}: {err}") from None
        if expected_fingerprint is not None and m["fingerprint"] != expected_fingerprint:
            raise PrposeError(
                f"{root}: index built with model fingerprint {m['fingerprint']!r}, but the model in use has "
                f"{expected_fingerprint!r}; rebuild the index with this model"
            )
        files, count, dim, k = m["files"], m["count"], m["embedding_dim"], m["num_samples"]

        def read(fname):
            info = files[fname]
            data = _read_file(dfd, root, fname, size=info["size"])
            if verify and hashlib.sha256(data).hexdigest() != info["sha256"]:
                raise PrposeError(f"{root / fname}: SHA-256 differs from {MANIFEST} (corrupt or modified file)")
            return data

        def array(fname, shape, dtype):
            arr = _npy_from_buffer(read(fname), root / fname)
            if arr.shape != shape or arr.dtype != np.dtype(dtype):
                raise PrposeError(f"{root / fname}: array {arr.shape} {arr.dtype}, expected {shape} {np.dtype(dtype)}")
            return arr

        means = array("means.npy", (count, dim), np.float32)
        samples = array("samples.npy", (count, k, dim), index.sample_dtype)
        meta = {name: array(f"meta_{name}.npy", (count, *info["shape"]), info["dtype"])
                for name, info in m["metadata_fields"].items()}
        if count:
            index._means, index._samples = [means], [samples]
            index._metadata = {name: [values] for name, values in meta.items()} if meta else None
            index._count = count
        index.ef_search = m["search"].get("ef_search")
        index.nprobe = m["search"].get("nprobe")
        if m["faiss_file"]:
            import faiss

            data = read(FAISS_FILE)
            try:
                fidx = faiss.deserialize_index(np.frombuffer(data, np.uint8))
            except RuntimeError as err:
                first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
                raise PrposeError(f"{root / FAISS_FILE}: faiss could not read it ({first})") from None
            if fidx.ntotal != count or fidx.d != dim:
                raise PrposeError(
                    f"{root / FAISS_FILE}: FAISS index has {fidx.ntotal} vectors of dim {fidx.d}, "
                    f"expected {count} of dim {dim}"
                )
            index._faiss, index._faiss_factory = fidx, m["faiss_factory"]
        return index


# ----------------------------------------------------------------------------------------------------------
# Storage helpers

_META_FILE = re.compile(r"meta_([A-Za-z_][A-Za-z0-9_]*)\.npy")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_index_dir(path) -> bool:
    """Whether `path` holds a prpose index and nothing else: its manifest.json names format "prpose-index" and
    every entry is one of the index's own regular files (manifest.json, model.json, faiss.index, means.npy,
    samples.npy, meta_<field>.npy). The test `--overwrite` and `save` apply before replacing a directory."""
    path = pathlib.Path(path)
    try:
        with open(path / MANIFEST, "rb") as fh:
            manifest = json.loads(fh.read(_MANIFEST_MAX_BYTES))
        entries = list(os.scandir(path))
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        return False
    own = {MANIFEST, MODEL_REF, FAISS_FILE, "means.npy", "samples.npy"}
    return all((e.name in own or _META_FILE.fullmatch(e.name)) and e.is_file(follow_symlinks=False) for e in entries)


def _manifest_digest(manifest: Mapping) -> str:
    """SHA-256 of the manifest's fields except manifest_sha256, as canonical JSON (sorted keys, no spaces)."""
    body = {key: value for key, value in manifest.items() if key != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class _Vanished(Exception):
    """A file of the directory being read disappeared (a concurrent save may have replaced the directory)."""

    def __init__(self, name):
        super().__init__(name)
        self.name = name


def _read_file(dfd: int, root: pathlib.Path, name: str, size: int | None = None, limit: int | None = None):
    """The bytes (bytearray) of regular file `name` in the directory open as `dfd`; symbolic links refused.

    size: the manifest's size (checked before reading); limit: refuse larger files.
    """
    path = root / name
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    except FileNotFoundError:
        raise _Vanished(name) from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise PrposeError(f"{path}: a symbolic link; index files must be regular files in the index") from None
        raise PrposeError(f"{path}: cannot open ({err.strerror})") from None
    with open(fd, "rb", buffering=0, closefd=True) as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PrposeError(f"{path}: not a regular file")
        if size is not None and info.st_size != size:
            raise PrposeError(f"{path}: {info.st_size} bytes, manifest says {size} (truncated or modified file)")
        if limit is not None and info.st_size > limit:
            raise PrposeError(f"{path}: {info.st_size} bytes, more than the {limit} a manifest may have")
        data = bytearray(info.st_size)
        view, got = memoryview(data), 0
        while got < len(data):
            n = fh.readinto(view[got:])
            if not n:
                raise PrposeError(f"{path}: shrank while being read (modified during load)")
            got += n
    return data


def _npy_from_buffer(data: bytearray, path: pathlib.Path) -> np.ndarray:
    """Parse .npy bytes without copying the array data (no pickled objects)."""
    fmt = np.lib.format
    try:
        major, _ = fmt.read_magic(io.BytesIO(bytes(data[:8])))
        if major not in (1, 2):
            raise ValueError(f"unsupported .npy version {major}")
        width = 2 if major == 1 else 4
        start = 8 + width + int.from_bytes(data[8 : 8 + width], "little")
        head = io.BytesIO(bytes(data[:start]))
        fmt.read_magic(head)
        read_header = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
        shape, fortran, dtype = read_header(head)
    except Exception as err:  # numpy parses the header with ast.literal_eval: any failure means a damaged header
        raise PrposeError(f"{path}: not a readable .npy array ({type(err).__name__}: {err})") from None
    if dtype.hasobject:
        raise PrposeError(f"{path}: array of Python objects (dtype {dtype}); refused (it would need unpickling)")
    count = math.prod(shape)
    if len(data) - start != count * dtype.itemsize:
        raise PrposeError(f"{path}: {len(data) - start} data bytes, its header needs {count * dtype.itemsize}")
    return np.frombuffer(data, dtype, count=count, offset=start).reshape(shape, order="F" if fortran else "C")


def _parse_manifest(raw: bytearray, mpath: pathlib.Path) -> dict:
    """Check a manifest's JSON, format, version, own checksum, field types and file names -> the manifest."""
    try:
        manifest = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PrposeError(f"{mpath}: unreadable manifest ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise PrposeError(f"{mpath}: format {got!r}, expected {FORMAT_NAME!r}")
    version = manifest.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise PrposeError(
            f"{mpath}: index format version {version!r}; this prpose reads version {FORMAT_VERSION} "
            "(upgrade prpose for newer indexes)"
        )
    if version < FORMAT_VERSION:
        raise PrposeError(
            f"{mpath}: index format version {version} predates checksummed manifests (version {FORMAT_VERSION}); "
            "rebuild it with `prpose index build`"
        )
    if manifest.get("manifest_sha256") != _manifest_digest(manifest):
        raise PrposeError(
            f"{mpath}: contents do not match its manifest_sha256 (edited or corrupt manifest); rebuild the index"
        )

    def bad(key, expected):
        value = repr(manifest.get(key))
        value = value if len(value) <= 60 else value[:57] + "..."
        return PrposeError(f"{mpath}: {key} {value}, expected {expected}")

    def integer(key, low):
        value = manifest.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise bad(key, f"an integer >= {low}")
        return value

    out = {"count": integer("count", 0), "embedding_dim": integer("embedding_dim", 1),
           "num_samples": integer("num_samples", 1)}
    for key in ("fingerprint", "profile", "factory", "sample_dtype"):
        if not isinstance(manifest.get(key), str):
            raise bad(key, "a string")
        out[key] = manifest[key]
    params = manifest.get("match_params")
    if not isinstance(params, dict) or not all(
        isinstance(params.get(p), (int, float)) and not isinstance(params.get(p), bool) for p in ("a", "b", "smoothing")
    ):
        raise bad("match_params", 'an object {"a", "b", "smoothing"} of numbers')
    out["match_params"] = (params["a"], params["b"], params["smoothing"])
    search = manifest.get("search", {})
    if not isinstance(search, dict) or not all(
        v is None or (isinstance(v, int) and not isinstance(v, bool) and v > 0) for v in search.values()
    ):
        raise bad("search", "an object of positive integers or null")
    out["search"] = search
    out["faiss_file"] = manifest.get("faiss_file")
    if out["faiss_file"] not in (None, FAISS_FILE):
        raise PrposeError(f"{mpath}: faiss_file {out['faiss_file']!r}, expected {FAISS_FILE!r} or null")
    out["faiss_factory"] = manifest.get("faiss_factory")
    if out["faiss_file"] and out["faiss_factory"] != _resolve_factory(out["factory"], out["count"]):
        raise bad("faiss_factory", f"{_resolve_factory(out['factory'], out['count'])!r} (factory {out['factory']!r})")
    fields = manifest.get("metadata_fields")
    if not isinstance(fields, dict):
        raise bad("metadata_fields", "an object field -> {dtype, shape}")
    out["metadata_fields"] = {}
    for name, info in fields.items():
        if not name.isidentifier():
            raise PrposeError(f"{mpath}: metadata field name {name!r}, expected a Python identifier")
        try:
            dtype = np.dtype(info["dtype"]) if isinstance(info["dtype"], str) else None
            shape = tuple(info["shape"]) if isinstance(info["shape"], list) else None
            ok = dtype is not None and shape is not None and dtype.kind in "biufUS" and all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in shape)
        except (KeyError, TypeError, ValueError, SyntaxError):
            ok = False
        if not ok:
            raise PrposeError(
                f"{mpath}: metadata_fields[{name!r}] {info!r:.60}, expected {{dtype: a numeric or string dtype, "
                "shape: a list of sizes}"
            )
        out["metadata_fields"][name] = {"dtype": dtype, "shape": shape}
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise bad("files", "an object file name -> {size, sha256}")
    wanted = {"means.npy", "samples.npy", *(f"meta_{name}.npy" for name in fields)}
    wanted |= {FAISS_FILE} if out["faiss_file"] else set()
    for name, info in files.items():
        if name not in wanted:
            raise PrposeError(
                f"{mpath}: files entry {name!r} is not a file of this index (expected {sorted(wanted)}, all inside "
                "the index directory)"
            )
        if not (isinstance(info, dict) and isinstance(info.get("size"), int) and not isinstance(info["size"], bool)
                and info["size"] >= 0 and isinstance(info.get("sha256"), str) and _SHA256.fullmatch(info["sha256"])):
            raise PrposeError(f"{mpath}: files[{name!r}] {info!r:.60}, expected {{size: bytes, sha256: 64 hex digits}}")
    missing = sorted(wanted - set(files))
    if missing:
        raise PrposeError(f"{mpath}: files lacks {missing}; every file of the index must be listed with its SHA-256")
    out["files"] = files
    out["fingerprint"] = manifest["fingerprint"]
    return out


def _write_manifest(path: pathlib.Path, manifest: dict) -> None:
    with open(path, "w") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
