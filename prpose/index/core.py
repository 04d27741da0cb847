"""The pose index: per-entry probabilistic embeddings and metadata, searched by exact match distance.

`PoseIndex.search` works in two stages: (1) a FAISS index over the embedding means proposes `candidates`
entries per query (`prpose.index.candidates`; mean distance is a cheap proxy for the match distance d);
(2) d is computed exactly from the stored samples for those candidates only (`prpose.index.kernels`) and the
candidates are re-sorted. `PoseIndex.search_exact` scores every entry (`prpose.index.exact`) and is the reference
the two-stage search is measured against (bench/bench_index.py). `save`/`load` go through `prpose.index.storage`.

The interface follows FAISS (`add`, `search`, `save`, `load`, a factory string), with per-entry metadata
(source, subject, sequence, frame, camera, optional pose3d) kept alongside and returned with the hits.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Mapping

import numpy as np

from prpose.errors import PrposeError
from prpose.index import candidates as cand_stage
from prpose.index import storage
from prpose.index.exact import exact_search
from prpose.index.kernels import rerank_distances, validate_match_params
from prpose.index.parallel import resolve_threads, run_blocks

#: Metadata fields every entry carries when metadata is given (pose3d and extra fields are optional).
REQUIRED_METADATA_FIELDS = ("source", "subject", "sequence", "frame", "camera")

#: Default candidates re-ranked per query, max(per hit * k, minimum), by candidate vectors (see `PoseIndex.search`).
DEFAULT_CANDIDATES = {"moments": (2, 32), "means": (8, 64)}
#: (query, candidate) pairs per block of the exact re-rank: bounds its working memory to about
#: _PAIR_BUDGET x K x (K + D + 2) floats (~6 MB at K = 20, D = 16) whatever the number of queries and k. 1024 keeps
#: a block's sample distances near the L2 cache: 25% less CPU per query than 8192 (bench/bench_index.py).
_PAIR_BUDGET = 1024
#: (query, candidate) pairs per block of the FAISS candidate stage (~ pairs x (D + 6) x 4 bytes, ~11 MB at D = 16):
#: larger than the re-rank blocks because FAISS answers big query batches faster.
_CANDIDATE_BUDGET = 1 << 17
#: With several threads a batch is cut into about this many blocks per thread (so a thread slowed by other load
#: does not hold the others up), but blocks keep at least _MIN_THREAD_BLOCK queries (FAISS's per-call cost).
_BLOCKS_PER_THREAD = 4
_MIN_THREAD_BLOCK = 64
#: Entries per block when `add` regenerates samples for float32/float16 storage (~26 MB of float32 at K=20, D=16).
_REGENERATE_ROWS = 1 << 14


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
# The index


class PoseIndex:
    """Probabilistic pose embeddings with per-entry metadata; search by exact match distance.

    Args:
      embedding_dim: D, the embedding size (16 for Pr-VIPE).
      num_samples: K, samples stored per entry (20).
      match_params: (a, b, smoothing) of the model that produced the embeddings (`PoseEmbedder.match_params`).
      fingerprint: the model's fingerprint (`PoseEmbedder.fingerprint`); `load` can refuse another model's index.
      profile: keypoint profile of the model input, recorded for the user ("input13").
      factory: FAISS factory string for the candidate stage ("Flat", "HNSW32", "IVF1024,Flat", ...)
        or "auto": exact "Flat" under candidates.AUTO_IVF_THRESHOLD entries, above it "IVF{nlist},Flat" with about
        candidates.AUTO_IVF_LIST_SIZE entries per list (`candidates.resolve_factory`).
        Indexes that need training (IVF) are trained on the candidate vectors when first built.
      candidate_vectors: what the candidate stage indexes (`candidates.VECTOR_KINDS`): "moments" (default: each
        entry's sample mean and spread, whose L2 distance is the mean squared sample-pair distance) or "means"
        (the embedding means; indexes saved before format version 3 load with it).
      sample_storage: how entries keep their K samples (`prpose.index.storage`; the samples themselves are the same
        in every storage when `add` gets stddevs=, see `add`): "gaussian" (mean + float16 stddev, the samples
        regenerated when needed: 96 B/entry with the mean at D=16), "float16" (the samples stored in float16:
        64 + 640 B), "float32" (64 + 1,280 B), or "auto" (default): "gaussian" when the first `add` gives
        `stddevs=`, "float32" when it gives samples. Computation is float32 either way.
      noise_seed: seed of the regenerated samples (`storage.regenerate_samples`).

    The FAISS structure is built lazily at the first search/save after `add`, so "auto" sees the real size.
    Search-time knobs, FAISS style: `index.ef_search` (HNSW; None = max(candidates.DEFAULT_EF_SEARCH, number of candidates)) and
    `index.nprobe` (IVF; None = candidates.DEFAULT_NPROBE) and `index.threads` (None = every core: a batch's query
    blocks run on that many threads, `prpose.index.parallel`; results do not depend on it). One search at a time
    per index (the FAISS parameters are set per call).
    """

    def __init__(
        self,
        embedding_dim: int,
        num_samples: int,
        match_params,
        fingerprint: str,
        profile: str = "input13",
        factory: str = "auto",
        sample_storage: str = "auto",
        noise_seed: int = 0,
        candidate_vectors: str = "moments",
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
        if sample_storage not in ("auto", *storage.SAMPLE_STORAGES):
            raise PrposeError(f"{where}: sample_storage={sample_storage!r}, expected 'auto' or one of "
                              f"{storage.SAMPLE_STORAGES}")
        if isinstance(noise_seed, bool) or not isinstance(noise_seed, (int, np.integer)) or noise_seed < 0:
            raise PrposeError(f"{where}: noise_seed={noise_seed!r}, expected an integer >= 0")
        self.embedding_dim = int(embedding_dim)
        self.num_samples = int(num_samples)
        self.match_params = validate_match_params(match_params, where)
        self.fingerprint = fingerprint
        self.profile = str(profile)
        self.factory = factory
        self.sample_storage = sample_storage
        self.noise_seed = int(noise_seed)
        if candidate_vectors not in cand_stage.VECTOR_KINDS:
            raise PrposeError(f"{where}: candidate_vectors={candidate_vectors!r}, expected one of "
                              f"{cand_stage.VECTOR_KINDS}")
        self.candidate_vectors = candidate_vectors
        self.ef_search: int | None = None
        self.nprobe: int | None = None
        self.threads: int | None = None
        if factory != "auto":
            cand_stage.make_faiss(self._vector_dim, factory)  # fail now, not at the first search, on a bad factory
        self._means: list[np.ndarray] = []
        self._stored: list[np.ndarray] = []  # per add: stddevs (n, D) float16 ("gaussian") or samples (n, K, D)
        self._metadata: dict[str, list[np.ndarray]] | None = None
        self._count = 0
        self._faiss = None
        self._faiss_factory: str | None = None
        self._vectors: np.ndarray | None = None  # candidate vectors of every entry, built with the FAISS stage

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
        """The FAISS structure in use (the resolved "auto" choice; a loaded index keeps the structure it was saved
        with until entries are added)."""
        if self._faiss is not None and self._faiss.ntotal == self._count:
            return self._faiss_factory
        return cand_stage.resolve_factory(self.factory, self._count)

    def __repr__(self) -> str:
        return (
            f"PoseIndex(ntotal={self._count}, embedding_dim={self.embedding_dim}, num_samples={self.num_samples}, "
            f"factory={self.factory!r} -> {self.faiss_factory!r}, sample_storage={self.sample_storage!r}, "
            f"fingerprint={self.fingerprint!r})"
        )

    @property
    def _vector_dim(self) -> int:
        return cand_stage.vector_dim(self.embedding_dim, self.candidate_vectors)

    def means(self) -> np.ndarray:
        """All stored means (N, D) float32."""
        self._consolidate()
        return self._means[0] if self._means else np.zeros((0, self.embedding_dim), np.float32)

    def samples(self) -> np.ndarray:
        """All samples (N, K, D): as stored (float32/float16), or regenerated in float32 ("gaussian": that is
        N x K x D x 4 bytes at once; `entry_samples` gives parts)."""
        if self.sample_storage == "gaussian":
            return self.entry_samples(np.arange(self._count))
        stored = self.stored()
        return stored if stored is not None else np.zeros((0, self.num_samples, self.embedding_dim), np.float32)

    def stored(self) -> np.ndarray | None:
        """What the index keeps besides the means: stddevs (N, D) float16 ("gaussian") or samples (N, K, D);
        None while the index is empty."""
        self._consolidate()
        return self._stored[0] if self._stored else None

    def entry_samples(self, ids) -> np.ndarray:
        """Samples of the entries `ids` (any shape S, valid ids) -> (*S, K, D) float32."""
        ids = np.asarray(ids, np.int64)
        flat = ids.ravel()
        stored = self.stored()
        if self.sample_storage == "gaussian":
            out = storage.regenerate_samples(np.take(self.means(), flat, axis=0), np.take(stored, flat, axis=0),
                                             self.num_samples, self.noise_seed)
        else:
            # np.take: half the time of fancy indexing for rows scattered over a large array (measured)
            out = np.take(stored, flat, axis=0).astype(np.float32, copy=False)
        return out.reshape(*ids.shape, self.num_samples, self.embedding_dim)

    def metadata(self) -> dict[str, np.ndarray]:
        """All stored metadata, field -> (N, ...)."""
        self._consolidate()
        return {name: chunks[0] for name, chunks in (self._metadata or {}).items()}

    # -- adding -------------------------------------------------------------------------------------------

    def _check_embeddings(self, means, samples, where, name_means, name_samples):
        """means (N, D) and samples (N, K, D) -- or, when name_samples is "stddevs", stddevs (N, D) >= 0 -- as
        checked contiguous float32 arrays."""
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
        per_entry = (d,) if name_samples == "stddevs" else (k, d)
        if s.shape != (m.shape[0], *per_entry):
            raise PrposeError(
                f"{where}: {name_samples} has shape {s.shape}, expected {(m.shape[0], *per_entry)} to match "
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

    def add(self, means, samples=None, metadata=None, *, stddevs=None) -> np.ndarray:
        """Append N entries; returns their ids (N,) int64.

        means: (N, D) embedding means (the candidate stage searches them); then either
          * stddevs= (N, D): the entries are the Gaussians N(mean, stddev^2) and their K samples, which define the
            match distance, are `storage.regenerate_samples(means, stddevs, K, noise_seed)`: a fixed function of
            each entry's own mean and stddev, in every storage. "gaussian" keeps the stddev (float16) and
            regenerates the samples when needed; "float32"/"float16" store the regenerated samples (computed
            from the float32 stddev). So an index's samples never depend on the random key the embedder drew
            its own samples with: rebuilds, shards and single builds agree bit for bit, and the storages differ
            only by their rounding (float16 stddev, or float16 samples). What `prpose index build` gives.
          * or samples (N, K, D): your own samples, stored as given ("float32"; "float16" rounds them). "gaussian"
            storage cannot keep them and refuses.
        An index may mix both kinds of `add` (float32/float16 storage). metadata: dict field -> (N, ...) or a
        structured array with at least source, subject, sequence, frame, camera (pose3d (N, 17, 3) and other
        fields optional), or None when the index carries no metadata. Object arrays are stored as strings.
        """
        where = "PoseIndex.add"
        if (samples is None) == (stddevs is None):
            raise PrposeError(f"{where}: give either samples (N, K, D) or stddevs= (N, D), not "
                              f"{'both' if samples is not None else 'neither'}")
        if self.sample_storage == "auto":
            self.sample_storage = "gaussian" if stddevs is not None else "float32"
        if self.sample_storage == "gaussian" and samples is not None:
            raise PrposeError(
                f"{where}: the index keeps 'gaussian' storage (mean + stddev, samples regenerated), which needs "
                "stddevs= (N, D); got samples (store your own samples with sample_storage='float32' or 'float16')"
            )
        name = "samples" if samples is not None else "stddevs"
        m, s = self._check_embeddings(means, stddevs if samples is None else samples, where, "means", name)
        meta = self._check_metadata(metadata, len(m), where)
        if name == "stddevs" and s.size and s.min() < 0:
            raise PrposeError(f"{where}: stddevs has negative values (min {s.min():.4g}); expected >= 0")
        dtype = np.float16 if self.sample_storage in ("gaussian", "float16") else np.float32
        if name == "stddevs" and self.sample_storage != "gaussian":
            s = self._regenerated(m, s, dtype, where)  # checks the float16 range itself
        elif dtype == np.float16:
            _check_float16_range(s, name, where)
        if self._count == 0:
            self._metadata = None if meta is None else {field: [] for field in meta}
        ids = np.arange(self._count, self._count + len(m), dtype=np.int64)
        self._means.append(m)
        self._stored.append(s.astype(dtype, copy=False))
        if meta is not None:
            for name, arr in meta.items():
                self._metadata[name].append(arr)
        self._count += len(m)
        return ids

    def _regenerated(self, means, stddevs, dtype, where) -> np.ndarray:
        """The entries' regenerated samples (N, K, D) in `dtype`, made in blocks of _REGENERATE_ROWS entries (no
        float32 copy of them all); float16 overflow is refused."""
        out = np.empty((len(means), self.num_samples, self.embedding_dim), dtype)
        for lo in range(0, len(means), _REGENERATE_ROWS):
            block = storage.regenerate_samples(means[lo:lo + _REGENERATE_ROWS], stddevs[lo:lo + _REGENERATE_ROWS],
                                               self.num_samples, self.noise_seed)
            if dtype == np.float16:
                _check_float16_range(block, "regenerated samples", where)
            out[lo:lo + len(block)] = block
        return out

    def _consolidate(self):
        if len(self._means) > 1:
            self._means = [np.concatenate(self._means)]
            self._stored = [np.concatenate(self._stored)]
            for name in self._metadata or {}:
                self._metadata[name] = [np.concatenate(self._metadata[name])]

    # -- the FAISS candidate stage ------------------------------------------------------------------------

    def _ensure_faiss(self):
        """Build (or extend) the candidate vectors and the FAISS index over them so that they hold every entry."""
        done = 0 if self._vectors is None else len(self._vectors)
        if done < self._count:
            # In blocks: "gaussian" storage regenerates the samples the moments are taken over.
            def part(lo, step=1 << 16):
                hi = min(lo + step, self._count)
                samples = None if self.candidate_vectors == "means" else self.entry_samples(np.arange(lo, hi))
                return cand_stage.entry_vectors(self.means()[lo:hi], samples, self.candidate_vectors)

            new = np.concatenate([part(lo) for lo in range(done, self._count, 1 << 16)])
            self._vectors = new if self._vectors is None else np.concatenate([self._vectors, new])
        resolved = cand_stage.resolve_factory(self.factory, self._count)
        # Kept while it holds every entry (an "auto" index saved with an older choice, HNSW32, stays so), extended
        # while "auto" resolves to the same structure, rebuilt otherwise.
        if self._faiss is not None and (self._faiss_factory == resolved or self._faiss.ntotal == self._count):
            if self._faiss.ntotal < self._count:
                self._faiss.add(self._vectors[self._faiss.ntotal :])
            return self._faiss
        self._faiss, self._faiss_factory = cand_stage.build_faiss(resolved, self._vectors), resolved
        return self._faiss

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
        """Two-stage search: FAISS proposes candidates, the exact match distance re-ranks them.

        query_means: (Q, D); query_samples: (Q, K, D); k: hits per query; candidates: how many FAISS
        candidates to re-rank per query (default max(2k, 32) over moments, max(8k, 64) over means; at least k).
        fingerprint (required): the
        fingerprint of the model that embedded the queries (`PoseEmbedder.fingerprint`); another model's
        embeddings are refused, since distances between two models' spaces mean nothing. Pass None only to
        skip that check deliberately. Results are identical whether the queries come in one batch or one at a
        time, and whatever `index.threads`; the work runs in blocks of a bounded number of (query, candidate)
        pairs, so memory stays bounded (per thread) for any Q and k (beyond the (Q, k) result itself).

        Why these defaults (bench/bench_index.py, recall against the exact ranking, k = 20): mean distance is
        only a proxy for d (an entry's spread also moves d): over means, 40 candidates gave recall@20 0.950 (50k
        entries of the packaged model) / 0.973 (100k synthetic) and 160 gave 0.999 / 1.000. Over moments (which
        see the spread), 24 candidates gave 0.987 / 1.000 and 40 gave 1.000 / 1.000.
        """
        where = "PoseIndex.search"
        qm, qs, k = self._check_query(query_means, query_samples, k, fingerprint, where)
        if candidates is None:
            per_hit, least = DEFAULT_CANDIDATES[self.candidate_vectors]
            candidates = max(per_hit * k, least)
        if isinstance(candidates, bool) or not isinstance(candidates, (int, np.integer)) or candidates < k:
            raise PrposeError(f"{where}: candidates={candidates!r}, expected an integer >= k={k}")
        n = self._count
        num = min(int(candidates), n)
        # Ask FAISS for a margin more, then keep the `num` nearest by distances recomputed here per query: FAISS
        # batches switch to BLAS distances (different rounding) so its boundary could depend on the batch.
        wide = min(n, num + max(8, num // 8))
        threads = resolve_threads(self.threads, where)
        index = self._ensure_faiss()
        cand_stage.set_search_params(index, self._faiss_factory, wide, self.ef_search, self.nprobe)
        qv = cand_stage.query_vectors(qm, qs, self.candidate_vectors)
        nq = len(qm)
        block = max(1, _CANDIDATE_BUDGET // wide)
        if threads > 1:
            block = min(block, max(_MIN_THREAD_BLOCK, -(-nq // (_BLOCKS_PER_THREAD * threads))))
        dist = np.empty((nq, min(k, num)))
        ids = np.empty((nq, min(k, num)), np.int64)
        self.stored()  # consolidate the entries before the threads read them

        def run(i):
            lo, hi = i * block, min((i + 1) * block, nq)
            cand = cand_stage.nearest_candidates(index, self._vectors, qv[lo:hi], num, wide)
            dist[lo:hi], ids[lo:hi] = self._rerank(qs[lo:hi], cand, k)

        run_blocks(run, -(-nq // block), threads)
        return self._top_k(dist, ids, k)

    def _rerank(self, qs, cand, k) -> tuple[np.ndarray, np.ndarray]:
        """The min(k, C) best of each query's candidates by exact d: qs (Q, K, D), cand (Q, C) ids (-1 = none).

        Streams: blocks of at most _PAIR_BUDGET (query, candidate) pairs are scored and merged into a running
        top-k, so the working memory is bounded by the budget and k, whatever C is.
        Returns (distances (Q, min(k, C)) float64 ascending, +inf for none; ids (Q, min(k, C)) int64).
        """
        a, b, s = self.match_params
        nq, num = cand.shape
        keep = min(k, num)
        rows = max(1, _PAIR_BUDGET // max(num, 1))
        cols = max(1, _PAIR_BUDGET // rows)
        out_d = np.empty((nq, keep))
        out_i = np.empty((nq, keep), np.int64)
        for lo in range(0, nq, rows):
            hi = min(lo + rows, nq)
            best_d, best_i = np.empty((hi - lo, 0)), np.empty((hi - lo, 0), np.int64)
            for clo in range(0, num, cols):
                c = cand[lo:hi, clo : clo + cols]
                valid = c >= 0
                x = self.entry_samples(np.where(valid, c, 0))
                d = np.where(valid, rerank_distances(qs[lo:hi], x, a, b, s), np.inf)
                best_d, best_i = _best(np.concatenate([best_d, d], axis=1), np.concatenate([best_i, c], axis=1), keep)
            out_d[lo:hi], out_i[lo:hi] = best_d, best_i
        return out_d, out_i

    def _top_k(self, dist, ids, k) -> SearchResult:
        """Sort each row by (distance, id) and keep k; pads with id -1 / +inf when a row has fewer entries."""
        nq, width = dist.shape
        if width < k:
            dist = np.concatenate([dist, np.full((nq, k - width), np.inf)], axis=1)
            ids = np.concatenate([ids, np.full((nq, k - width), -1, np.int64)], axis=1)
        d, i = _best(dist, ids, k)
        return self._result(d, np.where(np.isfinite(d), i, -1).astype(np.int64))

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
        if self.sample_storage == "gaussian":
            def block(lo, hi):
                return self.entry_samples(np.arange(lo, hi))
        else:
            stored = self.stored()

            def block(lo, hi):
                return stored[lo:hi]
        d, ids = exact_search(block, self._count, qs, k, self.match_params)
        return self._top_k(d, ids, k)

    # -- persistence --------------------------------------------------------------------------------------

    def save(self, directory, model_ref: Mapping | None = None) -> pathlib.Path:
        """Write the index to `directory` atomically (prpose.atomic: lock, temp directory, swap).

        model_ref: optional JSON-able description of the model that built the index (`prpose index build`
        gives its run directory and fingerprint), written as model.json in the same atomic replace. It is not
        hashed: a user may edit it (for example after moving the run directory).

        Layout (`prpose.index.storage`): manifest.json (written last), faiss.index (faiss.write_index), means.npy
        (N, D) float32, stddevs.npy (N, D) float16 ("gaussian") or samples.npy (N, K, D) float32/float16,
        meta_<field>.npy per metadata field. The manifest lists every file
        with its size and SHA-256 and carries manifest_sha256, the SHA-256 of its own other fields. An existing
        index at `directory` is replaced only once the new one is complete; anything else there (a prepared
        dataset, a folder of documents) is refused with a PrposeError, and so is a second concurrent writer.
        """
        a, b, s = self.match_params
        settings = {
            "fingerprint": self.fingerprint,
            "profile": self.profile,
            "embedding_dim": self.embedding_dim,
            "num_samples": self.num_samples,
            "match_params": {"a": a, "b": b, "smoothing": s},
            "factory": self.factory,
            "count": self._count,
            "sample_storage": self.sample_storage,
            "noise_seed": self.noise_seed,
            "candidate_vectors": self.candidate_vectors,
            "search": {"ef_search": self.ef_search, "nprobe": self.nprobe},
        }
        faiss_index = self._ensure_faiss() if self._count > 0 else None
        settings["faiss_factory"] = self._faiss_factory
        stored = self.stored()
        if stored is None:  # empty ("auto" may still be unresolved: stored as float32 samples, kept "auto")
            gaussian = self.sample_storage == "gaussian"
            stored = np.zeros((0, self.embedding_dim) if gaussian else (0, self.num_samples, self.embedding_dim),
                              np.float16 if self.sample_storage in ("gaussian", "float16") else np.float32)
        return storage.write_index(directory, settings, self.means(), stored, self.metadata(), faiss_index, model_ref)

    @classmethod
    def load(cls, directory, expected_fingerprint: str | None = None, verify: bool = True) -> "PoseIndex":
        """Read an index written by `save`.

        expected_fingerprint: refuse an index built with another model. verify: check every file's SHA-256
        against the manifest (sizes, file names and the manifest's own checksum are always checked). Only the
        index's own regular files inside `directory` are read (no symbolic links, no names from the manifest
        beyond the format's), each exactly once: its bytes are hashed and parsed from the same buffer, all
        through one directory descriptor, so a concurrent rebuild in place cannot mix two builds. A save
        interrupted between its two renames is repaired first (prpose.atomic.recover). The candidate vectors are
        rebuilt here (not saved), so the first search is as fast as the next.
        Raises PrposeError naming the file and problem.
        """
        index, stored = storage.read_index(directory, cls._from_manifest, expected_fingerprint, verify)
        if len(stored.means):
            index._means, index._stored = [stored.means], [stored.stored]
            index._metadata = {name: [values] for name, values in stored.metadata.items()} if stored.metadata else None
            index._count = len(stored.means)
        index.ef_search = stored.search.get("ef_search")
        index.nprobe = stored.search.get("nprobe")
        index._faiss, index._faiss_factory = stored.faiss_index, stored.faiss_factory
        if index._count:
            # The candidate vectors the search re-sorts FAISS's candidates by are not saved: rebuild them now (about
            # 4 s of CPU per million "gaussian" entries), not inside the first search.
            index._ensure_faiss()
        return index

    @classmethod
    def _from_manifest(cls, m: dict) -> "PoseIndex":
        return cls(m["embedding_dim"], m["num_samples"], m["match_params"], m["fingerprint"], profile=m["profile"],
                   factory=m["factory"], sample_storage=m["sample_storage"], noise_seed=m["noise_seed"],
                   candidate_vectors=m["candidate_vectors"])


def _check_float16_range(values, what, where):
    """Refuse values that float16 storage would turn into inf."""
    limit = float(np.finfo(np.float16).max)
    if values.size and np.abs(values).max() > limit:
        raise PrposeError(f"{where}: {what} reach |{np.abs(values).max():.4g}|, beyond float16 range {limit}; "
                          "use sample_storage='float32'")


def _best(dist, ids, k):
    """The k smallest of each row by (distance, id): dist (Q, W), ids (Q, W) (-1 = none) -> both (Q, min(k, W)).

    Distances are compared as reported, in float32 (the re-rank computes in float32; further digits are rounding):
    equal reported distances are ordered by id, so merged shards order hits like one index."""
    dist = dist.astype(np.float32).astype(np.float64)
    tie = np.where(ids >= 0, ids, np.iinfo(np.int64).max)
    order = np.lexsort((tie, dist), axis=-1)[:, :k]
    return np.take_along_axis(dist, order, axis=1), np.take_along_axis(ids, order, axis=1)
