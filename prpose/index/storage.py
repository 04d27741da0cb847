"""The index's storage: how entries keep their samples, and format "prpose-index" version 4 on disk.

Entries. An entry is a Gaussian embedding (mean, stddev) whose match distance is computed from K samples. Given
the stddev (`PoseIndex.add(means, stddevs=)`, what `prpose index build` and the pose library do), the samples are
`regenerate_samples(mean, stddev)`: a fixed function of the entry alone, never the embedder's randomly keyed draws,
so the exact ranking of an index is well defined and reproducible (rebuilds, shards and single builds agree bit for
bit) and the storages below differ only by rounding. The index keeps them as one of `SAMPLE_STORAGES`:
  * "gaussian" (what `prpose index build` writes): the mean (float32, which the candidate stage needs anyway)
    and the stddev (float16); the K samples are regenerated whenever needed: 32 bytes per entry beyond the mean
    instead of 1,280 (float32 samples at K = 20, D = 16). Its only loss is the stddev's float16 rounding
    (relative 2^-11; bench/bench_index_storage.py measures the ranking against float32's);
  * "float16" / "float32": the regenerated samples stored (640 / 1,280 bytes per entry), or the samples a user
    gives `add` instead of stddevs, stored as given (float16 rounds them).

On disk, a directory: manifest.json (written last; `files` lists every other file, faiss.index included, with size
+ SHA-256; `manifest_sha256` = SHA-256 of the manifest's other fields as canonical JSON), faiss.index (the
candidate stage), means.npy (N, D) float32, then stddevs.npy (N, D) float16 ("gaussian", with "noise_seed" in the
manifest) or samples.npy (N, K, D) float32/float16, meta_<field>.npy per metadata field, and model.json (not
hashed: the model that built the index, written by `prpose index build` in the same atomic replace). Writing goes
through `prpose.atomic.replacing` (lock, temp directory, swap). Reading takes only these names, never symbolic
links, each file once through one directory descriptor (hashed and parsed from the same bytes), so a rebuild in
place cannot mix two builds.

Versions: 4 has "sample_storage" (replacing "sample_dtype") and the gaussian storage; 3 added
`candidate_vectors` (what faiss.index holds: "moments", see prpose.index.candidates). Versions 2 and 3 (samples.npy,
float32/float16) still load, as float32/float16 storage; a version 2 index (FAISS over the means) loads as
"means" and searches as before. Saving writes version 4. Version 1 indexes are refused with "rebuild". A float32 /
float16 index that `prpose index build` wrote before it regenerated samples in every storage holds the embedder's
keyed draws: it loads and searches with them unchanged (they are its samples); a rebuild gives the reproducible ones.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import io
import json
import math
import os
import pathlib
import re
import stat
from typing import Any, Callable, Mapping

import numpy as np

from prpose import atomic
from prpose.errors import PrposeError
from prpose.index.candidates import VECTOR_KINDS, saved_factories, vector_dim

FORMAT_NAME = "prpose-index"
#: 2: every file (faiss.index included) hashed and confined to the directory; the manifest hashes itself.
#: 3: `candidate_vectors` names what faiss.index holds (version 2: always the means).
#: 4: "sample_storage" (gaussian: means + stddevs.npy + noise_seed; or samples.npy) instead of "sample_dtype".
FORMAT_VERSION = 4
#: The oldest version this prpose reads (2 and 3: samples.npy, read as float32/float16 storage).
OLDEST_READABLE_VERSION = 2
MANIFEST = "manifest.json"
FAISS_FILE = "faiss.index"
#: Written beside the index files by `prpose index build`: the model (run directory) that built it.
MODEL_REF = "model.json"
#: How entries keep their samples (computation is float32 either way); see the module docstring.
SAMPLE_STORAGES = ("gaussian", "float16", "float32")
#: Rows of the noise table that `regenerate_samples` draws from (NOISE_ROWS x K x D float32: 5 MB at K=20, D=16).
NOISE_ROWS = 4096
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)

_MANIFEST_MAX_BYTES = 16 << 20
_LOAD_ATTEMPTS = 50  # re-reads when a concurrent save replaces the directory while it is read


# ----------------------------------------------------------------------------------------------------------
# Regenerated samples (the "gaussian" storage)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 arrays (a bijection; every output bit depends on every input bit)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@functools.lru_cache(maxsize=4)
def noise_table(num_samples: int, dim: int, seed: int = 0) -> np.ndarray:
    """(NOISE_ROWS, K, D) float32 standard normal values, a fixed function of (K, D, seed): Box-Muller on
    SplitMix64 of a counter, in float64 (NumPy's Generator streams may change between NumPy versions). Read-only."""
    count = NOISE_ROWS * num_samples * dim
    with np.errstate(over="ignore"):
        bits = _mix64(np.arange((count + 1) // 2, dtype=np.uint64) + _mix64(np.uint64(seed) * _GOLDEN))
    u1 = ((bits >> np.uint64(32)).astype(np.float64) + 1.0) / 2.0**32  # (0, 1]
    angle = (bits & np.uint64(0xFFFFFFFF)).astype(np.float64) * (2.0 * np.pi / 2.0**32)
    radius = np.sqrt(-2.0 * np.log(u1))
    table = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:count]
    table = table.astype(np.float32).reshape(NOISE_ROWS, num_samples, dim)
    table.flags.writeable = False
    return table


@functools.lru_cache(maxsize=4)
def _hash_coefficients(dim: int, seed: int) -> np.ndarray:
    """Odd 64-bit multipliers, one per dimension, of the mean hash in `regenerate_samples`."""
    with np.errstate(over="ignore"):
        return _mix64(np.arange(1, dim + 1, dtype=np.uint64) * _GOLDEN + np.uint64(seed)) | np.uint64(1)


def regenerate_samples(means, stddevs, num_samples: int, seed: int = 0) -> np.ndarray:
    """The K samples of Gaussian entries: means (n, D) float32, stddevs (n, D) -> (n, K, D) float32.

    sample_k = mean + stddev * sign * T[row, k], with T = `noise_table(K, D, seed)`, and per entry a row and D
    random signs taken from a 64-bit hash of the mean's float32 bits. So an entry's samples depend only on its
    own mean and stddev (not on its id, batch or shard: a sharded build equals a single one), each entry's
    samples are exact N(mean, stddev^2) draws, and entries rarely share noise (NOISE_ROWS x 2^D patterns).
    Costs about as much as gathering stored samples (bench/bench_index_storage.py).
    """
    m = np.ascontiguousarray(means, np.float32)
    n, dim = m.shape
    with np.errstate(over="ignore"):
        h = _mix64((m.view(np.uint32).astype(np.uint64) * _hash_coefficients(dim, seed)).sum(axis=1, dtype=np.uint64))
        words = np.stack([h] + [_mix64(h + np.uint64(j) * _GOLDEN) for j in range(1, -(-dim // 48))], axis=1)
    rows = (h % np.uint64(NOISE_ROWS)).astype(np.intp)
    bit = np.arange(dim)
    negative = (words[:, bit // 48] >> (np.uint64(16) + (bit % 48).astype(np.uint64))) & np.uint64(1)
    scale = np.asarray(stddevs, np.float32) * (1.0 - 2.0 * negative.astype(np.float32))  # (n, D)
    out = noise_table(num_samples, dim, seed)[rows]  # (n, K, D), a fresh array
    out *= scale[:, None, :]
    out += m[:, None, :]
    return out


# ----------------------------------------------------------------------------------------------------------
# Writing and reading


@dataclasses.dataclass
class StoredArrays:
    """What `read_index` reads besides the manifest: means (N, D), the stored sample part (stddevs (N, D) float16
    for "gaussian" storage, else samples (N, K, D)), metadata field -> (N, ...), the deserialised FAISS index
    (None when the index is empty) and the search settings saved with it."""

    means: np.ndarray
    stored: np.ndarray
    metadata: dict[str, np.ndarray]
    faiss_index: Any
    faiss_factory: str | None
    search: dict[str, int | None]


def _stored_file(sample_storage: str) -> str:
    return "stddevs.npy" if sample_storage == "gaussian" else "samples.npy"


def write_index(directory, settings: Mapping[str, Any], means, stored, metadata: Mapping[str, np.ndarray],
                faiss_index, model_ref: Mapping | None = None) -> pathlib.Path:
    """Write an index to `directory` atomically; an existing prpose index there is replaced, anything else refused.

    settings: the manifest's index fields (fingerprint, profile, embedding_dim, num_samples, match_params
    {a, b, smoothing}, factory, faiss_factory, candidate_vectors, count, sample_storage, noise_seed, search
    {ef_search, nprobe}); means (N, D) float32; stored: stddevs (N, D) float16 ("gaussian") or samples (N, K, D);
    metadata field -> (N, ...); faiss_index: the candidate stage (None when the index is empty); model_ref:
    optional JSON-able description of the model, written as model.json.
    """
    target = pathlib.Path(directory)
    with atomic.replacing(target, is_ours=is_index_dir, kind="prpose index") as tmp:
        files = {"means.npy": means, _stored_file(settings["sample_storage"]): stored}
        for name, values in metadata.items():
            files[f"meta_{name}.npy"] = values
        for fname, arr in files.items():
            np.save(tmp / fname, arr, allow_pickle=False)
        faiss_name = None
        if faiss_index is not None:
            import faiss

            faiss.write_index(faiss_index, str(tmp / FAISS_FILE))
            faiss_name = FAISS_FILE
        listed = list(files) + ([faiss_name] if faiss_name else [])
        manifest = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            **settings,
            "faiss_factory": settings["faiss_factory"] if faiss_name else None,
            "faiss_file": faiss_name,
            "metadata_fields": {
                name: {"dtype": values.dtype.str, "shape": list(values.shape[1:])} for name, values in metadata.items()
            },
            "files": {f: {"size": (tmp / f).stat().st_size, "sha256": atomic.sha256_file(tmp / f)} for f in listed},
        }
        manifest["manifest_sha256"] = _manifest_digest(manifest)
        if model_ref is not None:
            (tmp / MODEL_REF).write_text(json.dumps(dict(model_ref), indent=1))
        _write_manifest(tmp / MANIFEST, manifest)
    return target


def read_index(directory, make_index: Callable[[dict], Any], expected_fingerprint: str | None = None,
               verify: bool = True):
    """Read and check an index written by `write_index` -> (make_index(manifest), StoredArrays).

    make_index: builds the (empty) index object from the parsed manifest (fingerprint, profile, embedding_dim,
    num_samples, match_params (a, b, s), factory, sample_storage, noise_seed, candidate_vectors, ...), raising
    PrposeError for values it refuses
    (the error is prefixed with the manifest's path). expected_fingerprint: refuse an index built with another
    model. verify: check every file's SHA-256 (sizes, file names and the manifest's own checksum are always
    checked). A save interrupted between its two renames is repaired first (prpose.atomic.recover).
    Raises PrposeError naming the file and problem.
    """
    root = pathlib.Path(directory)
    atomic.recover(root, is_index_dir)
    for _ in range(_LOAD_ATTEMPTS):
        dfd = atomic.open_dir(root, "a prpose index directory (written by `prpose index build`)")
        try:
            return _read_from(root, dfd, make_index, expected_fingerprint, verify)
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


def _read_from(root: pathlib.Path, dfd: int, make_index, expected_fingerprint, verify):
    mpath = root / MANIFEST
    m = _parse_manifest(_read_file(dfd, root, MANIFEST, limit=_MANIFEST_MAX_BYTES), mpath)
    try:
        index = make_index(m)
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
    if m["sample_storage"] == "gaussian":
        stored = array("stddevs.npy", (count, dim), np.float16)
    else:
        dtype = "float32" if m["sample_storage"] == "auto" else m["sample_storage"]
        stored = array("samples.npy", (count, k, dim), dtype)
    meta = {name: array(f"meta_{name}.npy", (count, *info["shape"]), info["dtype"])
            for name, info in m["metadata_fields"].items()}
    fidx = None
    if m["faiss_file"]:
        import faiss

        data = read(FAISS_FILE)
        try:
            fidx = faiss.deserialize_index(np.frombuffer(data, np.uint8))
        except RuntimeError as err:
            first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            raise PrposeError(f"{root / FAISS_FILE}: faiss could not read it ({first})") from None
        want = vector_dim(dim, m["candidate_vectors"])
        if fidx.ntotal != count or fidx.d != want:
            raise PrposeError(
                f"{root / FAISS_FILE}: FAISS index has {fidx.ntotal} vectors of dim {fidx.d}, "
                f"expected {count} of dim {want}"
            )
    return index, StoredArrays(means, stored, meta, fidx, m["faiss_factory"] if fidx is not None else None,
                               m["search"])


# ----------------------------------------------------------------------------------------------------------
# Helpers

_META_FILE = re.compile(r"meta_([A-Za-z_][A-Za-z0-9_]*)\.npy")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_index_dir(path) -> bool:
    """Whether `path` holds a prpose index and nothing else: its manifest.json names format "prpose-index" and
    every entry is one of the index's own regular files (manifest.json, model.json, faiss.index, means.npy,
    stddevs.npy, samples.npy, meta_<field>.npy). The test `--overwrite` and `save` apply before replacing a
    directory."""
    path = pathlib.Path(path)
    try:
        with open(path / MANIFEST, "rb") as fh:
            manifest = json.loads(fh.read(_MANIFEST_MAX_BYTES))
        entries = list(os.scandir(path))
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        return False
    own = {MANIFEST, MODEL_REF, FAISS_FILE, "means.npy", "stddevs.npy", "samples.npy"}
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
            f"{mpath}: index format version {version!r}; this prpose reads versions {OLDEST_READABLE_VERSION} to "
            f"{FORMAT_VERSION} (upgrade prpose for newer indexes)"
        )
    if version < OLDEST_READABLE_VERSION:
        raise PrposeError(
            f"{mpath}: index format version {version} predates checksummed manifests (version "
            f"{OLDEST_READABLE_VERSION}); rebuild it with `prpose index build`"
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
    for key in ("fingerprint", "profile", "factory", "sample_dtype" if version < 4 else "sample_storage"):
        if not isinstance(manifest.get(key), str):
            raise bad(key, "a string")
        out[key] = manifest[key]
    if version < 4:  # samples.npy in that dtype: the float32 / float16 storage of version 4
        out["sample_storage"] = out.pop("sample_dtype")
        if out["sample_storage"] not in ("float32", "float16"):
            raise bad("sample_dtype", "'float32' or 'float16'")
    elif out["sample_storage"] not in SAMPLE_STORAGES and not (out["sample_storage"] == "auto" and out["count"] == 0):
        raise bad("sample_storage", f"one of {list(SAMPLE_STORAGES)} ('auto' only in an empty index)")
    out["noise_seed"] = manifest.get("noise_seed", 0)
    if out["sample_storage"] == "gaussian" and not (
            isinstance(out["noise_seed"], int) and not isinstance(out["noise_seed"], bool) and out["noise_seed"] >= 0):
        raise bad("noise_seed", "an integer >= 0")
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
    out["candidate_vectors"] = manifest.get("candidate_vectors", "means") if version >= 3 else "means"
    if out["candidate_vectors"] not in VECTOR_KINDS:
        raise bad("candidate_vectors", f"one of {list(VECTOR_KINDS)}")
    out["faiss_factory"] = manifest.get("faiss_factory")
    if out["faiss_file"] and out["faiss_factory"] not in saved_factories(out["factory"], out["count"]):
        raise bad("faiss_factory", f"one of {list(saved_factories(out['factory'], out['count']))} (factory "
                                   f"{out['factory']!r})")
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
    wanted = {"means.npy", _stored_file(out["sample_storage"]), *(f"meta_{name}.npy" for name in fields)}
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
    out["manifest_sha256"] = manifest["manifest_sha256"]
    return out


def read_manifest(directory) -> dict:
    """The checked manifest of the index in `directory` (as `read_index` parses it, with "manifest_sha256"),
    without reading its arrays. Raises PrposeError naming the file."""
    root = pathlib.Path(directory)
    atomic.recover(root, is_index_dir)
    dfd = atomic.open_dir(root, "a prpose index directory (written by `prpose index build`)")
    try:
        return _parse_manifest(_read_file(dfd, root, MANIFEST, limit=_MANIFEST_MAX_BYTES), root / MANIFEST)
    except _Vanished:
        raise PrposeError(f"{root}: no {MANIFEST}; not a prpose index (or an interrupted save)") from None
    finally:
        os.close(dfd)


def _write_manifest(path: pathlib.Path, manifest: dict) -> None:
    with open(path, "w") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
