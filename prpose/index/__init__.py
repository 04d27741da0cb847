"""Pose retrieval index: FAISS candidates over embedding means, then exact match-distance re-ranking.

Modules, one concern each:
  * `core`: `PoseIndex` (entries, metadata, validation, the two-stage search) and `SearchResult`;
  * `candidates`: the FAISS candidate stage over the means (factory strings, training, search settings);
  * `kernels`: the NumPy match-distance kernels (float32 re-rank / scan, float64 log-space reference);
  * `exact`: the brute-force reference search the two-stage search is measured against;
  * `storage`: format "prpose-index" v2 (constants, atomic writing, checked reading).
"""

from prpose.index.core import REQUIRED_METADATA_FIELDS, PoseIndex, SearchResult
from prpose.index.storage import FAISS_FILE, FORMAT_NAME, FORMAT_VERSION, MANIFEST, MODEL_REF, is_index_dir

__all__ = ["PoseIndex", "SearchResult", "REQUIRED_METADATA_FIELDS", "FORMAT_NAME", "FORMAT_VERSION", "MANIFEST",
           "FAISS_FILE", "MODEL_REF", "is_index_dir"]
