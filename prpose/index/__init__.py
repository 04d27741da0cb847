"""Pose retrieval index: FAISS candidates over embedding means, then exact match-distance re-ranking.

Modules, one concern each:
  * `core`: `PoseIndex` (entries, metadata, validation, the two-stage search) and `SearchResult`;
  * `candidates`: the FAISS candidate stage over the means (factory strings, training, search settings);
  * `kernels`: the NumPy match-distance kernels (float32 re-rank / scan, float64 log-space reference);
  * `exact`: the brute-force reference search the two-stage search is measured against;
  * `parallel`: the threads a batched search runs its query blocks on;
  * `storage`: how entries keep their samples ("gaussian": regenerated from mean + stddev) and format
    "prpose-index" v3 (constants, atomic writing, checked reading; v2 still loads);
  * `shards`: shards built by several processes (`index build --shard I/N`), merged and searched as one.
"""

from prpose.index.core import REQUIRED_METADATA_FIELDS, PoseIndex, SearchResult
from prpose.index.shards import ShardedIndex, load_index
from prpose.index.storage import FAISS_FILE, FORMAT_NAME, FORMAT_VERSION, MANIFEST, MODEL_REF, is_index_dir

__all__ = ["PoseIndex", "SearchResult", "ShardedIndex", "load_index", "REQUIRED_METADATA_FIELDS", "FORMAT_NAME",
           "FORMAT_VERSION", "MANIFEST", "FAISS_FILE", "MODEL_REF", "is_index_dir"]
