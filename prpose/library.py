"""A compact pose library: 3D poses with their embeddings from several cameras, searchable with 2D poses.

The library answers "which stored motion is this 2D pose?" right after installation. It is a
:class:`prpose.index.PoseIndex` reduced to what a few MB can hold:

* **poses**: distinct 3D poses (h36m17, world metres, float16) with take name, source, subject and frame.
  Frames of a take that are near-duplicates in 3D are left out: walking a take in frame order, a frame is
  kept unless a kept frame of the same take lies within ``min_distance`` NP-MPJPE of it (normalised units;
  two poses *match* below kappa = 0.1). Every dropped frame therefore has a kept stand-in closer than that.
* **entries**: each kept pose as seen by each camera of its rig (the torso visible): embedding mean (float32),
  stddev (float16) and visibility (bit-packed). The K samples are not stored: the library's PoseIndex keeps
  the "gaussian" storage and regenerates them when needed (``prpose.index.storage.regenerate_samples``, seeded
  by the manifest's ``seed``): ``mean + stddev * eps`` with ``eps`` a fixed function of the entry's mean,
  deterministically (96 bytes per entry instead of 640 for float16 samples).

Files (format ``prpose-library`` version 1): ``library.npz`` and ``library.json`` (written last: counts, model
fingerprint, match parameters, seed, cameras, label tables, SHA-256 of the npz, provenance).

:meth:`PoseLibrary.search` returns one hit per pose (its best camera view), ranked by match probability.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import numpy as np

from prpose.atomic import sha256_file
from prpose.errors import PrposeError

FORMAT_NAME = "prpose-library"
FORMAT_VERSION = 1
MANIFEST = "library.json"
ARRAYS = "library.npz"
LIBRARY_DIR = "library"  # where a packaged model keeps its library
DEFAULT_MIN_DISTANCE = 0.05
_BLOCK = 256  # pairwise NP-MPJPE block size (one compiled shape)



# --- building --------------------------------------------------------------------------------------------------

def distinct_frames(poses3d: np.ndarray, min_distance: float) -> np.ndarray:
    """Indices (ascending) of a frame-ordered greedy cover of one take's poses.

    Frame t is kept unless an already kept frame is within ``min_distance`` NP-MPJPE (normalised 3D) of it.
    poses3d: (T, 17, 3) h36m17 in frame order. Returns (P,) int64, always containing 0 when T > 0.
    """
    from prpose.normalize import normalize_3d
    from prpose.procrustes import pairwise_np_mpjpe

    t = len(poses3d)
    if t == 0:
        return np.zeros(0, np.int64)
    norm = np.asarray(normalize_3d(np.asarray(poses3d, np.float32))[0])
    size = -(-t // _BLOCK) * _BLOCK
    padded = np.zeros((size, *norm.shape[1:]), np.float32)
    padded[:t] = norm
    close = np.zeros((t, t), bool)
    for i in range(0, t, _BLOCK):
        for j in range(0, t, _BLOCK):
            block = np.asarray(pairwise_np_mpjpe(padded[i:i + _BLOCK], padded[j:j + _BLOCK]))
            close[i:i + _BLOCK, j:j + _BLOCK] = (block < min_distance)[: t - i, : t - j]  # padding cut off
    covered = np.zeros(t, bool)
    kept = []
    for f in range(t):
        if not covered[f]:
            kept.append(f)
            covered |= close[f]
    return np.asarray(kept, np.int64)


def build_library(model, dataset, *, splits=("train", "val"), min_distance: float = DEFAULT_MIN_DISTANCE,
                  seed: int = 0, info: dict[str, Any] | None = None, progress: bool = True) -> dict:
    """Select distinct poses of a prepared dataset and embed them from every camera of their rig.

    Args:
      model: a ``prpose.inference.PoseEmbedder``.
      dataset: a ``prpose.dataset.PreparedDataset`` (h36m17 poses and 2D keypoints).
      splits: dataset splits to include (a held-out split stays out of the library).
      min_distance: near-duplicate threshold (NP-MPJPE, normalised units) of :func:`distinct_frames`.
      seed: seed of the samples regenerated at load time.
      info: free-form provenance stored in the manifest.
    Returns:
      {"arrays": {name: array}, "manifest": dict} for :func:`save_library`.
    """
    from prpose.progress import progress as progress_bar

    if not 0 < min_distance < 1:
        raise PrposeError(f"build_library: min_distance={min_distance!r}, expected a value in (0, 1) (NP-MPJPE)")
    rows = dataset.indices(split=splits)
    if rows.size == 0:
        raise PrposeError(f"{dataset.path}: no frames in split(s) {list(splits)}")
    sequences = dataset.codes("sequence")[rows]
    kept = []
    takes = np.unique(sequences)
    for code in progress_bar(takes, desc="distinct poses per take", unit="take", enabled=progress):
        take_rows = rows[sequences == code]
        take_rows = take_rows[np.argsort(np.asarray(dataset.frame[take_rows]), kind="stable")]
        kept.append(take_rows[distinct_frames(np.asarray(dataset.poses3d[take_rows]), min_distance)])
    pose_rows = np.sort(np.concatenate(kept))
    num_cameras = dataset.num_cameras
    points = np.asarray(dataset.keypoints2d[pose_rows])  # (P, C, 17, 2)
    visible = np.asarray(dataset.visibility[pose_rows])  # (P, C, 17)
    flat_points, flat_visible = points.reshape(-1, 17, 2), visible.reshape(-1, 17)
    # Views the embedder cannot use (torso hidden) are left out of the library and counted.
    usable = np.zeros(len(flat_points), bool)
    means, stddevs = [], []
    chunk = 8192
    for start in progress_bar(range(0, len(flat_points), chunk), desc="embedding views", unit="chunk",
                              enabled=progress):
        emb, rows_used, _ = model.embed_usable(flat_points[start:start + chunk], profile="h36m17",
                                               visible=flat_visible[start:start + chunk])
        usable[start + rows_used] = True
        means.append(emb.mean)
        stddevs.append(emb.stddev)
    entry_pose = np.repeat(np.arange(len(pose_rows)), num_cameras)[usable]
    entry_camera = np.tile(np.arange(num_cameras), len(pose_rows))[usable]
    labels = {name: dataset.codes(name)[pose_rows] for name in ("source", "subject", "sequence")}
    arrays = {
        "poses3d": np.asarray(dataset.poses3d[pose_rows], np.float16),
        "frame": np.asarray(dataset.frame[pose_rows], np.int32),
        "rig": np.asarray(dataset.rig_index[pose_rows], np.int16),
        **{name: codes.astype(np.int16) for name, codes in labels.items()},
        "entry_pose": entry_pose.astype(np.int32),
        "entry_camera": entry_camera.astype(np.uint8),
        "mean": np.concatenate(means).astype(np.float32),
        "stddev": np.concatenate(stddevs).astype(np.float16),
        "visible": np.packbits(flat_visible[usable], axis=-1),
    }
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "fingerprint": model.fingerprint,
        "match_params": list(model.match_params),
        "embedding_dim": model.embedding_dim,
        "num_samples": model.num_samples,
        "seed": int(seed),
        "min_distance": float(min_distance),
        "splits": list(splits),
        "num_frames": int(rows.size),
        "num_poses": int(len(pose_rows)),
        "num_entries": int(usable.sum()),
        "skipped_views": int((~usable).sum()),
        "camera_names": list(dataset.camera_names),
        "rigs": [[camera.to_dict() for camera in rig] for rig in dataset.rigs],
        "tables": {name: dataset.table(name) for name in ("source", "subject", "sequence")},
        "dataset": dataset.path.name,
        "info": info or {},
    }
    return {"arrays": arrays, "manifest": manifest}


def is_library_dir(path: pathlib.Path) -> bool:
    """Whether ``path`` holds a pose library (its manifest names the format)."""
    try:
        return json.loads((pathlib.Path(path) / MANIFEST).read_text()).get("format") == FORMAT_NAME
    except (OSError, ValueError, AttributeError):
        return False


def save_library(library: dict, directory: str | os.PathLike, *, overwrite: bool = False) -> pathlib.Path:
    """Write :func:`build_library`'s result atomically (``prpose.atomic.replacing``; manifest last)."""
    from prpose import atomic

    out = pathlib.Path(directory)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic.replacing(out, is_ours=is_library_dir, kind="prpose pose library", overwrite=overwrite) as tmp:
        tmp.chmod(0o755)
        np.savez_compressed(tmp / ARRAYS, **library["arrays"])
        manifest = dict(library["manifest"], files={ARRAYS: {"bytes": (tmp / ARRAYS).stat().st_size,
                                                             "sha256": sha256_file(tmp / ARRAYS)}})
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return out


# --- loading and searching -------------------------------------------------------------------------------------

class PoseLibrary:
    """A saved library, loaded and checked; searchable once :attr:`index` is built (on first search).

    Attributes: path, manifest, fingerprint, num_poses, num_entries, arrays (the stored arrays).
    """

    def __init__(self, directory: str | os.PathLike, *, expected_fingerprint: str | None = None):
        self.path = pathlib.Path(directory)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise PrposeError(f"{self.path}: no {MANIFEST}; not a pose library (prpose library build writes one)")
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT_NAME or manifest.get("version") != FORMAT_VERSION:
            raise PrposeError(f"{manifest_path}: format {manifest.get('format')!r} version {manifest.get('version')!r};"
                              f" expected {FORMAT_NAME!r} version {FORMAT_VERSION}")
        f = self.path / ARRAYS
        expected = manifest["files"][ARRAYS]
        if not f.is_file() or f.stat().st_size != expected["bytes"] or sha256_file(f) != expected["sha256"]:
            raise PrposeError(f"{f}: missing, or its size or SHA-256 differs from {MANIFEST}")
        if expected_fingerprint is not None and manifest["fingerprint"] != expected_fingerprint:
            raise PrposeError(f"{self.path}: the library was built by model {manifest['fingerprint']}, not by the "
                              f"model in use ({expected_fingerprint}); rebuild it with that model")
        with np.load(f, allow_pickle=False) as data:
            self.arrays = {name: data[name] for name in data.files}
        self.manifest = manifest
        self.fingerprint = manifest["fingerprint"]
        self.num_poses = int(manifest["num_poses"])
        self.num_entries = int(manifest["num_entries"])
        self._index = None

    def __repr__(self) -> str:
        return f"PoseLibrary({self.path}, poses={self.num_poses}, entries={self.num_entries})"

    @property
    def index(self):
        """The PoseIndex over all entries (built on first use: "gaussian" storage, FAISS flat over means)."""
        if self._index is None:
            from prpose.index import PoseIndex

            m, a = self.manifest, self.arrays
            index = PoseIndex(m["embedding_dim"], m["num_samples"], m["match_params"], m["fingerprint"],
                              factory="Flat", sample_storage="gaussian", noise_seed=m["seed"])
            index.add(a["mean"], stddevs=a["stddev"], metadata={
                "source": np.asarray(m["tables"]["source"])[a["source"][a["entry_pose"]]],
                "subject": np.asarray(m["tables"]["subject"])[a["subject"][a["entry_pose"]]],
                "sequence": np.asarray(m["tables"]["sequence"])[a["sequence"][a["entry_pose"]]],
                "frame": a["frame"][a["entry_pose"]],
                "camera": np.asarray(m["camera_names"])[a["entry_camera"]],
                "pose": a["entry_pose"],
                "pose3d": a["poses3d"][a["entry_pose"]].astype(np.float32),
            })
            self._index = index
        return self._index

    def search(self, query_means, query_samples, k: int, *, fingerprint: str | None):
        """The k best distinct poses per query (each by its best camera view): a ``prpose.index.SearchResult``
        (ids are entry ids; metadata has source, subject, sequence, frame, camera, pose, pose3d).
        ``fingerprint``: of the model that embedded the queries (checked as in ``PoseIndex.search``)."""
        from prpose.index import SearchResult

        index = self.index
        views = len(self.manifest["camera_names"])
        wide = index.search(query_means, query_samples, k * views, candidates=max(8 * k * views, 64),
                            fingerprint=fingerprint)
        nq = wide.ids.shape[0]
        picks = np.full((nq, k), -1, np.int64)
        for q in range(nq):
            seen, j = set(), 0
            for col, (entry, pose) in enumerate(zip(wide.ids[q], wide.metadata["pose"][q])):
                if entry < 0 or j == k:
                    break
                if int(pose) not in seen:
                    seen.add(int(pose))
                    picks[q, j] = col
                    j += 1
        pad = picks < 0
        cols = np.where(pad, 0, picks)

        def take(values):
            out = np.take_along_axis(values, cols.reshape(nq, k, *([1] * (values.ndim - 2))), axis=1)
            out[pad] = np.zeros((), values.dtype)
            return out

        return SearchResult(
            distances=np.where(pad, np.float32(np.inf), take(wide.distances)).astype(np.float32),
            probabilities=np.where(pad, np.float32(0), take(wide.probabilities)).astype(np.float32),
            ids=np.where(pad, -1, take(wide.ids)),
            metadata={name: take(values) for name, values in wide.metadata.items()},
        )

    def views(self, entry_ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """How entries were seen: keypoints2d (n, 17, 2) pixels (the stored pose projected by the entry's
        camera), visible (n, 17) bool, and the camera centres (n, 3) world metres."""
        from prpose.camera import Camera

        ids = np.asarray(entry_ids, np.int64).ravel()
        a = self.arrays
        pose = a["entry_pose"][ids]
        points = np.zeros((ids.size, 17, 2), np.float32)
        centers = np.zeros((ids.size, 3), np.float64)
        for i, (p, c) in enumerate(zip(pose, a["entry_camera"][ids])):
            camera = Camera.from_dict(self.manifest["rigs"][int(a["rig"][p])][int(c)])
            points[i] = camera.project(a["poses3d"][p].astype(np.float64))[0]
            centers[i] = camera.center
        visible = np.unpackbits(a["visible"][ids], axis=-1, count=17).astype(bool)
        return points, visible, centers


def library_dir(model_dir: str | os.PathLike) -> pathlib.Path:
    """Where a model directory keeps its library (``<model>/library``)."""
    return pathlib.Path(model_dir) / LIBRARY_DIR
