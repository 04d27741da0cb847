"""A sharded pose index: n ordinary indexes (`shard-I-of-N/`) searched as one.

Built by n processes (`prpose index build --shard I/N`, on one machine or several, or `--workers N` which starts
them locally), each embedding its own contiguous part of the dataset into an ordinary prpose index; `prpose index
merge DIR` (run by `--workers` itself) checks that all n shards are present and belong together (same model,
match parameters, sizes, storage and metadata fields) and writes `shards.json` (written last) naming each shard
with its entry count and its manifest's SHA-256, so a shard rebuilt later is noticed.

Search as one: every shard runs its own two-stage search (FAISS candidates + exact re-rank), and the per-shard
top-k lists are merged by exact match distance (ties by global id). Global ids are the shard's offset (the
entries of all earlier shards) plus the id within the shard, i.e. the ids a single-process build gives, since
shards split the dataset's rows into contiguous ranges in order. Every shard re-ranks its own `candidates`, so
the merged candidate set contains the single index's (with an exact "Flat" candidate stage it is a superset),
and recall can only rise. The merge is the same operation a distributed vector engine performs across nodes
(docs/SCALING.md).

Directory: `shards.json` {"format": "prpose-index-shards", "version": 1, "num_shards", "count", "fingerprint",
"shards": [{"name", "count", "manifest_sha256"}, ...]} and the shard directories; nothing else but the write
locks of the shards (`.shard-*.lock`, prpose.atomic).
"""

from __future__ import annotations

import json
import os
import pathlib
import re

import numpy as np

from prpose import atomic
from prpose.errors import PrposeError

SHARDS_FORMAT = "prpose-index-shards"
SHARDS_VERSION = 1
SHARDS_MANIFEST = "shards.json"
_SHARD_DIR = re.compile(r"shard-(\d{5})-of-(\d{5})")
#: What prpose.atomic leaves beside a shard or shards.json while (or after) writing: locks, temporaries, old copies.
_LEFTOVER = re.compile(r"\.(shard-\d{5}-of-\d{5}|shards\.json)\.(lock|(tmp|old)-\d+-\w+)")
_MAX_SHARDS = 99_999
#: Manifest fields that every shard of one index must share.
_SHARED_FIELDS = ("fingerprint", "profile", "embedding_dim", "num_samples", "match_params", "sample_storage",
                  "noise_seed")


def shard_name(i: int, n: int) -> str:
    """The directory of shard i (from 0) of n: "shard-00000-of-00004"."""
    return f"shard-{i:05d}-of-{n:05d}"


def parse_shard(text: str) -> tuple[int, int]:
    """ "I/N" (the --shard argument) -> (I, N), with 0 <= I < N."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or not 0 <= int(m[1]) < int(m[2]) <= _MAX_SHARDS:
        raise PrposeError(f"--shard {text!r}: expected I/N with 0 <= I < N <= {_MAX_SHARDS} (0/4 is the first of four)")
    return int(m[1]), int(m[2])


def shard_rows(count: int, chunk: int, i: int, n: int) -> slice:
    """The rows [lo, hi) of `count` that shard i of n takes: a contiguous run of whole `chunk`-row blocks of the
    single build's block grid (so each block is embedded exactly as a single build would embed it)."""
    blocks = -(-count // chunk)
    return slice(min(blocks * i // n * chunk, count), min(blocks * (i + 1) // n * chunk, count))


def is_shards_dir(path, *, allow_empty: bool = False) -> bool:
    """Whether `path` is a (possibly unmerged) sharded index: one or more shard directories that are prpose
    indexes, their write locks and leftovers (prpose.atomic), `shards.json` and `model.json`, nothing else.
    allow_empty: also an empty directory, or one holding only locks and leftovers (shards being written)."""
    from prpose.index.storage import MODEL_REF, is_index_dir

    path = pathlib.Path(path)
    try:
        entries = list(os.scandir(path))
    except OSError:
        return False
    own = {SHARDS_MANIFEST, MODEL_REF}
    return (allow_empty or any(_SHARD_DIR.fullmatch(e.name) for e in entries)) and all(
        (e.name in own and e.is_file(follow_symlinks=False))
        or (_SHARD_DIR.fullmatch(e.name) and e.is_dir(follow_symlinks=False) and is_index_dir(e.path))
        or _LEFTOVER.fullmatch(e.name)
        for e in entries
    )


def check_shards_target(out, num_shards: int) -> None:
    """Refuse (PrposeError) an --out for shards that is a file, holds anything but shards of this sharded index,
    or holds shards of another shard count N (they could never be merged with these)."""
    out = pathlib.Path(out)
    if not out.exists():
        return
    if not out.is_dir() or not is_shards_dir(out, allow_empty=True):
        raise PrposeError(f"--out {out}: not a directory of index shards (it holds other files); give a new or empty "
                          "directory for a sharded build")
    others = sorted({int(m[2]) for m in map(_SHARD_DIR.fullmatch, os.listdir(out)) if m and int(m[2]) != num_shards})
    if others:
        raise PrposeError(f"--out {out}: holds shards of a {others[0]}-shard build; shards of {num_shards} could "
                          "never be merged with them (delete them or give another --out)")


def _shard_dirs(root: pathlib.Path) -> list[str]:
    """The names of the shard directories of one N in `root`, all N of them, in order; else a PrposeError."""
    try:
        names = sorted(e.name for e in os.scandir(root) if _SHARD_DIR.fullmatch(e.name) and e.is_dir())
    except OSError as err:
        raise PrposeError(f"{root}: cannot list it ({err.strerror or err})") from None
    if not names:
        raise PrposeError(f"{root}: no shard directories (shard-I-of-N, written by `prpose index build --shard I/N`)")
    counts = sorted({int(_SHARD_DIR.fullmatch(name)[2]) for name in names})
    if len(counts) > 1:
        raise PrposeError(f"{root}: shards of {len(counts)} different shard counts N {counts}; keep one build's "
                          "shards (delete the others)")
    n = counts[0]
    missing = [shard_name(i, n) for i in range(n) if shard_name(i, n) not in names]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise PrposeError(f"{root}: shard(s) {', '.join(missing[:3])}{more} missing; build them with "
                          f"`prpose index build ... --shard I/{n}`")
    return [shard_name(i, n) for i in range(n)]


def merge_shards(directory) -> dict:
    """Check the shards in `directory` belong together and write shards.json (atomically); returns it.

    Reads only the shards' manifests. Refuses (PrposeError naming the shard and the field) shards built with
    another model, other match parameters, sizes, storage or metadata fields, and a missing shard.
    """
    from prpose.index import storage

    root = pathlib.Path(directory)
    with atomic.locked(root / SHARDS_MANIFEST):
        names = _shard_dirs(root)
        manifests = [storage.read_manifest(root / name) for name in names]
        first = manifests[0]
        for name, m in zip(names[1:], manifests[1:]):
            for field in (*_SHARED_FIELDS, "metadata_fields"):
                if m[field] != first[field]:
                    raise PrposeError(f"{root / name}: {field} {m[field]!r:.80} differs from {names[0]}'s "
                                      f"{first[field]!r:.80}; all shards must come from one build (same model, "
                                      "settings and metadata)")
        shards = {
            "format": SHARDS_FORMAT,
            "version": SHARDS_VERSION,
            "num_shards": len(names),
            "count": sum(m["count"] for m in manifests),
            "fingerprint": first["fingerprint"],
            "shards": [{"name": name, "count": m["count"], "manifest_sha256": m["manifest_sha256"]}
                       for name, m in zip(names, manifests)],
        }
        model_ref = root / names[0] / storage.MODEL_REF
        tmp = root / f".{SHARDS_MANIFEST}.tmp-{os.getpid()}-merge"
        try:
            if model_ref.is_file():  # the model that built the shards, for `prpose query --index DIR`
                (root / storage.MODEL_REF).write_bytes(model_ref.read_bytes())
            tmp.write_text(json.dumps(shards, indent=1))
            os.replace(tmp, root / SHARDS_MANIFEST)
        finally:
            tmp.unlink(missing_ok=True)
    return shards


def _read_shards_manifest(root: pathlib.Path) -> dict:
    path = root / SHARDS_MANIFEST
    try:
        shards = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise PrposeError(f"{root}: no {SHARDS_MANIFEST}; shards are searchable as one after "
                          f"`prpose index merge {root}`") from None
    except (OSError, ValueError) as err:
        raise PrposeError(f"{path}: unreadable ({err})") from None
    ok = (isinstance(shards, dict) and shards.get("format") == SHARDS_FORMAT and isinstance(shards.get("shards"), list)
          and all(isinstance(s, dict) and isinstance(s.get("name"), str) and _SHARD_DIR.fullmatch(s["name"])
                  and isinstance(s.get("count"), int) and isinstance(s.get("manifest_sha256"), str)
                  for s in shards["shards"]) and shards["shards"])
    if not ok:
        raise PrposeError(f"{path}: not a {SHARDS_FORMAT!r} manifest (rerun `prpose index merge {root}`)")
    if shards.get("version") != SHARDS_VERSION:
        raise PrposeError(f"{path}: version {shards.get('version')!r}; this prpose reads version {SHARDS_VERSION}")
    return shards


class ShardedIndex:
    """Shards searched as one; the search API of `PoseIndex` (`search`, `search_exact`, `ntotal`, ...).

    Attributes: path, shards (list of PoseIndex, in order), offsets (n,) global id of each shard's first entry.
    """

    def __init__(self, path: pathlib.Path, shards: list):
        self.path = pathlib.Path(path)
        self.shards = shards
        self.offsets = np.concatenate([[0], np.cumsum([len(s) for s in shards])[:-1]]).astype(np.int64)
        first = shards[0]
        self.fingerprint, self.match_params = first.fingerprint, first.match_params
        self.embedding_dim, self.num_samples, self.profile = first.embedding_dim, first.num_samples, first.profile

    @classmethod
    def load(cls, directory, expected_fingerprint: str | None = None, verify: bool = True) -> "ShardedIndex":
        """Load every shard named by shards.json (each checked as `PoseIndex.load` checks an index). A shard
        rebuilt since the merge (its manifest checksum differs) is refused with "merge again"."""
        from prpose.index import storage
        from prpose.index.core import PoseIndex

        root = pathlib.Path(directory)
        listed = _read_shards_manifest(root)
        shards = []
        for entry in listed["shards"]:
            shard_dir = root / entry["name"]
            if storage.read_manifest(shard_dir)["manifest_sha256"] != entry["manifest_sha256"]:
                raise PrposeError(f"{shard_dir}: rebuilt after the shards were merged; run `prpose index merge "
                                  f"{root}` again")
            shard = PoseIndex.load(shard_dir, expected_fingerprint=expected_fingerprint, verify=verify)
            if len(shard) != entry["count"]:
                raise PrposeError(f"{shard_dir}: {len(shard)} entries, {SHARDS_MANIFEST} says {entry['count']}")
            shards.append(shard)
        return cls(root, shards)

    @property
    def ntotal(self) -> int:
        return int(sum(len(s) for s in self.shards))

    @property
    def threads(self):
        """Search threads of every shard (`PoseIndex.threads`; the shards are searched one after another)."""
        return self.shards[0].threads

    @threads.setter
    def threads(self, value):
        for shard in self.shards:
            shard.threads = value

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        return f"ShardedIndex({self.path}, shards={len(self.shards)}, ntotal={self.ntotal})"

    def search(self, query_means, query_samples, k: int, candidates: int | None = None, *, fingerprint):
        """`PoseIndex.search` on every shard (each re-ranks its own `candidates`), merged by match distance."""
        return self._merge([s.search(query_means, query_samples, k, candidates, fingerprint=fingerprint)
                            for s in self.shards], k)

    def search_exact(self, query_means, query_samples, k: int, *, fingerprint):
        """`PoseIndex.search_exact` on every shard, merged: the exact ranking over all shards' entries."""
        return self._merge([s.search_exact(query_means, query_samples, k, fingerprint=fingerprint)
                            for s in self.shards], k)

    def _merge(self, results, k):
        from prpose.index.core import SearchResult

        ids = np.concatenate([np.where(r.ids >= 0, r.ids + off, -1) for r, off in zip(results, self.offsets)], 1)
        dist = np.concatenate([r.distances for r in results], axis=1)
        order = np.lexsort((np.where(ids >= 0, ids, np.iinfo(np.int64).max), dist), axis=-1)[:, :k]

        def take(values):
            return np.take_along_axis(values, order.reshape(*order.shape, *([1] * (values.ndim - 2))), axis=1)

        return SearchResult(
            distances=take(dist),
            probabilities=take(np.concatenate([r.probabilities for r in results], axis=1)),
            ids=take(ids),
            metadata={name: take(np.concatenate([r.metadata[name] for r in results], axis=1))
                      for name in results[0].metadata},
        )


def load_index(directory, expected_fingerprint: str | None = None, verify: bool = True):
    """A `PoseIndex` or, for a directory of shards, a `ShardedIndex` (both searched the same way)."""
    from prpose.index.core import PoseIndex

    root = pathlib.Path(directory)
    if (root / SHARDS_MANIFEST).exists() or is_shards_dir(root):
        return ShardedIndex.load(root, expected_fingerprint, verify)
    return PoseIndex.load(root, expected_fingerprint, verify)
