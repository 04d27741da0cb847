"""The prepared dataset: one documented directory of arrays that every converter writes and training reads.

Format version 1 (docs/ARCHITECTURE.md, "Prepared dataset"):

- ``manifest.json``: ``{"format": "prpose-dataset", "version": 1, "num_frames", "camera_names", "profile":
  "h36m17", "rigs": [[camera dict, ...], ...], "tables": {"source", "subject", "sequence", "split"}, "info"}``.
  Written last; a directory without it is not a dataset.
- ``poses3d.npy`` float32 (N, 17, 3) world metres, Z-up, h36m17.
- ``keypoints2d.npy`` float32 (N, C, 17, 2) pixels in every camera of the frame's rig.
- ``visibility.npy`` bool (N, C, 17): in front of the camera and inside the image.
- ``rig.npy`` int16 (N,) index into ``manifest["rigs"]``.
- ``source.npy``, ``subject.npy``, ``sequence.npy``, ``split.npy`` int16 (N,) codes into ``manifest["tables"]``.
- ``frame.npy`` int32 (N,) frame index within the sequence.

Format version 2 adds optional detector keypoints, a second 2D source beside the projected ground truth
(written only when a converter has them; a dataset without them is still written as version 1):

- manifest ``"detections": {"detector": str, "profile": str (the detector's own keypoint profile), ...}``.
- ``detections2d.npy`` float32 (N, C, 17, 2) pixels, converted to h36m17 by joint name.
- ``detections_visible.npy`` bool (N, C, 17): False for joints the detector lacks, for cameras without
  detections and for values the detector left non-finite (stored as 0).
- ``detections_score.npy`` float32 (N, C, 17), only when the detector gives per-joint scores.

Writing is atomic (prpose.atomic: a write lock, a temporary directory beside the target, then a rename swap
that the next write or load repairs if a crash interrupts it), so a reader never sees a half-written dataset;
loading memory-maps the arrays, so a million-frame dataset opens instantly.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from prpose import atomic
from prpose.errors import PrposeError

FORMAT = "prpose-dataset"
VERSION = 2  # newest version read and written; datasets without detections are written as version 1
PROFILE = "h36m17"
NUM_JOINTS = 17
SPLITS = ("train", "val", "test")
LABEL_NAMES = ("source", "subject", "sequence", "split")
MANIFEST = "manifest.json"

# File name -> (dtype, shape as a function of (N, C)). The single source of truth for writer and reader.
_ARRAYS: dict[str, tuple[np.dtype, Any]] = {
    "poses3d": (np.dtype(np.float32), lambda n, c: (n, NUM_JOINTS, 3)),
    "keypoints2d": (np.dtype(np.float32), lambda n, c: (n, c, NUM_JOINTS, 2)),
    "visibility": (np.dtype(np.bool_), lambda n, c: (n, c, NUM_JOINTS)),
    "rig": (np.dtype(np.int16), lambda n, c: (n,)),
    "source": (np.dtype(np.int16), lambda n, c: (n,)),
    "subject": (np.dtype(np.int16), lambda n, c: (n,)),
    "sequence": (np.dtype(np.int16), lambda n, c: (n,)),
    "split": (np.dtype(np.int16), lambda n, c: (n,)),
    "frame": (np.dtype(np.int32), lambda n, c: (n,)),
}
# Optional detector arrays (format version 2), same convention as _ARRAYS.
_DETECTION_ARRAYS: dict[str, tuple[np.dtype, Any]] = {
    "detections2d": (np.dtype(np.float32), lambda n, c: (n, c, NUM_JOINTS, 2)),
    "detections_visible": (np.dtype(np.bool_), lambda n, c: (n, c, NUM_JOINTS)),
    "detections_score": (np.dtype(np.float32), lambda n, c: (n, c, NUM_JOINTS)),
}
_MAX_CODES = int(np.iinfo(np.int16).max) + 1


def _camera_to_dict(camera: Any, where: str) -> dict:
    if isinstance(camera, Mapping):
        d = dict(camera)
    elif hasattr(camera, "to_dict"):
        d = camera.to_dict()
    else:
        raise PrposeError(f"{where}: expected a prpose.camera.Camera or a camera dict, got {type(camera).__name__}")
    try:
        json.dumps(d)
    except TypeError as e:
        raise PrposeError(f"{where}: camera dict is not JSON-serialisable ({e})") from None
    return d


def _encode_labels(labels: Any, name: str, n: int, table: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Per-frame strings (N,) -> (int16 codes (N,), table). Table order = order of first appearance."""
    arr = np.asarray(labels)
    if arr.shape != (n,):
        raise PrposeError(f"write_dataset: {name} must hold one label per frame, shape ({n},); got {arr.shape}")
    if n and arr.dtype.kind not in "UO":
        raise PrposeError(f"write_dataset: {name} labels must be strings; got dtype {arr.dtype}")
    arr = arr.astype(str)
    if table is None:
        uniq, first, inverse = np.unique(arr, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")  # first-appearance order keeps sequences in file order
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        codes = rank[inverse.reshape(-1)]
        table = [str(s) for s in uniq[order]]
    else:
        lookup = {s: i for i, s in enumerate(table)}
        bad = sorted(set(np.unique(arr).tolist()) - set(lookup))
        if bad:
            raise PrposeError(f"write_dataset: {name} has unknown value(s) {bad[:5]}; expected one of {list(table)}")
        uniq, inverse = np.unique(arr, return_inverse=True)
        codes = np.array([lookup[s] for s in uniq.tolist()], dtype=np.int64)[inverse.reshape(-1)]
        table = list(table)
    if len(table) > _MAX_CODES:
        raise PrposeError(f"write_dataset: {name} has {len(table)} distinct values; the format holds at most {_MAX_CODES}")
    return codes.astype(np.int16), table


def _check_array(x: Any, name: str, shape: tuple[int, ...], kind: str) -> np.ndarray:
    x = np.asarray(x)
    if x.shape != shape:
        raise PrposeError(f"write_dataset: {name} has shape {x.shape}; expected {shape}")
    if kind == "float":
        if x.dtype.kind not in "fiu":
            raise PrposeError(f"write_dataset: {name} must be numeric; got dtype {x.dtype}")
        bad = ~np.isfinite(x)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise PrposeError(
                f"write_dataset: {name} has {int(bad.sum())} non-finite value(s), first at index {first}; "
                "expected finite numbers (mark unusable keypoints invisible instead)"
            )
    elif kind == "bool" and x.dtype != np.bool_:
        raise PrposeError(f"write_dataset: {name} must be boolean; got dtype {x.dtype}")
    elif kind == "int" and x.size and x.dtype.kind not in "iu":
        raise PrposeError(f"write_dataset: {name} must be integer; got dtype {x.dtype}")
    return x


def _check_detections_entry(entry: Any, where: str) -> None:
    if not isinstance(entry, Mapping) or not all(isinstance(entry.get(k), str) and entry.get(k) for k in ("detector", "profile")):
        raise PrposeError(f"{where}: expected a dict with non-empty strings 'detector' and 'profile'; got {entry!r}")


def _is_dataset_dir(path: pathlib.Path) -> bool:
    try:
        with open(path / MANIFEST) as f:
            return json.load(f).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_target(path: str | os.PathLike, overwrite: bool = False) -> None:
    """Raise PrposeError unless ``write_dataset(path, overwrite=overwrite)`` may write there.

    Allowed: a missing path, an empty directory, or (with ``overwrite``) an existing prpose dataset. Anything
    else is refused, so a typo cannot wipe unrelated files. Converters call this before long work;
    ``write_dataset`` checks again under the target's write lock (prpose.atomic).
    """
    atomic.check_target(path, overwrite, _is_dataset_dir, "prpose dataset")


def write_dataset(
    path: str | os.PathLike,
    *,
    poses3d,
    keypoints2d,
    visibility,
    rigs: Sequence[Sequence[Any]],
    rig_index,
    source,
    subject,
    sequence,
    split,
    frame,
    camera_names: Sequence[str],
    info: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    detections2d=None,
    detections_visible=None,
    detections_score=None,
    detections: Mapping[str, Any] | None = None,
) -> None:
    """Write a prepared dataset directory atomically.

    Args:
      path: target directory. It must not exist, be an empty directory, or (with ``overwrite=True``) be an
        existing prpose dataset. Any other existing path is refused, so a typo cannot wipe unrelated files.
      poses3d: (N, 17, 3) world metres, Z-up, h36m17; finite.
      keypoints2d: (N, C, 17, 2) pixels; finite (mark unusable points invisible rather than NaN).
      visibility: (N, C, 17) bool.
      rigs: list of rigs, each a list of C cameras (``prpose.camera.Camera`` or its ``to_dict()``).
      rig_index: (N,) int index into ``rigs``.
      source, subject, sequence: (N,) per-frame strings.
      split: (N,) per-frame strings, each one of ``train``, ``val``, ``test``.
      frame: (N,) int frame index within the sequence.
      camera_names: C names of the camera slots (column c of keypoints2d).
      info: free-form JSON-serialisable provenance (converter, arguments, units...).
      detections2d: optional (N, C, 17, 2) detector pixels in h36m17 order; finite (format version 2).
      detections_visible: (N, C, 17) bool, required with ``detections2d``.
      detections_score: optional (N, C, 17) per-joint detector scores.
      detections: manifest entry, required with ``detections2d``: ``{"detector": str, "profile": str, ...}``
        plus free-form provenance.
    Raises:
      PrposeError: on any shape/dtype/value problem (nothing is written) or a refused target path.
    """
    path = pathlib.Path(path)
    poses3d = np.asarray(poses3d)
    if poses3d.ndim != 3:
        raise PrposeError(f"write_dataset: poses3d must be (N, 17, 3); got shape {poses3d.shape}")
    n = poses3d.shape[0]
    camera_names = [str(c) for c in camera_names]
    c = len(camera_names)
    if c == 0:
        raise PrposeError("write_dataset: camera_names is empty; expected at least one camera")
    if len(set(camera_names)) != c:
        raise PrposeError(f"write_dataset: camera_names has duplicates: {camera_names}")
    poses3d = _check_array(poses3d, "poses3d", (n, NUM_JOINTS, 3), "float")
    keypoints2d = _check_array(keypoints2d, "keypoints2d", (n, c, NUM_JOINTS, 2), "float")
    visibility = _check_array(visibility, "visibility", (n, c, NUM_JOINTS), "bool")
    rig_index = _check_array(rig_index, "rig_index", (n,), "int")
    frame = _check_array(frame, "frame", (n,), "int")
    if len(rigs) == 0:
        raise PrposeError("write_dataset: rigs is empty; expected at least one rig of cameras")
    if len(rigs) > _MAX_CODES:
        raise PrposeError(f"write_dataset: {len(rigs)} rigs; the format holds at most {_MAX_CODES}")
    rig_dicts = []
    for r, rig in enumerate(rigs):
        if len(rig) != c:
            raise PrposeError(f"write_dataset: rig {r} has {len(rig)} cameras; expected {c} (len(camera_names))")
        rig_dicts.append([_camera_to_dict(cam, f"write_dataset: rigs[{r}][{i}]") for i, cam in enumerate(rig)])
    if n and (rig_index.min() < 0 or rig_index.max() >= len(rigs)):
        raise PrposeError(
            f"write_dataset: rig_index values span [{rig_index.min()}, {rig_index.max()}]; expected [0, {len(rigs) - 1}]"
        )
    if n and (frame.min() < 0 or frame.max() > np.iinfo(np.int32).max):
        raise PrposeError(f"write_dataset: frame values span [{frame.min()}, {frame.max()}]; expected int32 >= 0")
    optional = {}
    if detections2d is None:
        if detections_visible is not None or detections_score is not None or detections is not None:
            raise PrposeError("write_dataset: detections_visible/detections_score/detections given without detections2d")
    else:
        _check_detections_entry(detections, "write_dataset: detections")
        optional["detections2d"] = _check_array(detections2d, "detections2d", (n, c, NUM_JOINTS, 2), "float")
        if detections_visible is None:
            raise PrposeError("write_dataset: detections2d given without detections_visible")
        optional["detections_visible"] = _check_array(detections_visible, "detections_visible", (n, c, NUM_JOINTS), "bool")
        if detections_score is not None:
            optional["detections_score"] = _check_array(detections_score, "detections_score", (n, c, NUM_JOINTS), "float")
    codes, tables = {}, {}
    for name, labels in (("source", source), ("subject", subject), ("sequence", sequence), ("split", split)):
        codes[name], tables[name] = _encode_labels(labels, name, n, SPLITS if name == "split" else None)
    manifest = {
        "format": FORMAT,
        "version": 2 if optional else 1,
        "num_frames": int(n),
        "camera_names": camera_names,
        "profile": PROFILE,
        "rigs": rig_dicts,
        "tables": tables,
        "info": dict(info or {}),
    }
    if optional:
        manifest["detections"] = dict(detections)
    try:
        manifest_text = json.dumps(manifest, indent=1)
    except TypeError as e:
        raise PrposeError(f"write_dataset: info is not JSON-serialisable ({e})") from None

    with atomic.replacing(path, is_ours=_is_dataset_dir, kind="prpose dataset", overwrite=overwrite) as tmp:
        arrays = {
            "poses3d": poses3d,
            "keypoints2d": keypoints2d,
            "visibility": visibility,
            "rig": rig_index,
            "frame": frame,
            **codes,
        }
        for name, (dtype, _) in _ARRAYS.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arrays[name], dtype=dtype))
        for name, array in optional.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(array, dtype=_DETECTION_ARRAYS[name][0]))
        # The manifest goes last: its presence marks a complete dataset.
        with open(tmp / MANIFEST, "w") as f:
            f.write(manifest_text)
            f.flush()
            os.fsync(f.fileno())


class PreparedDataset:
    """A loaded prepared dataset; the big arrays are read-only memory maps.

    Attributes:
      path: the dataset directory.
      manifest: the parsed manifest.json.
      poses3d: (N, 17, 3) float32 world metres.
      keypoints2d: (N, C, 17, 2) float32 pixels.
      visibility: (N, C, 17) bool.
      rig_index: (N,) int16 into ``rigs``.
      frame: (N,) int32.
      rigs: list[list[Camera]].
      camera_names: list of C names.
      info: the manifest's free-form provenance.
      detections2d: (N, C, 17, 2) float32 detector pixels (h36m17 order), or None without detections.
      detections_visible: (N, C, 17) bool, or None.
      detections_score: (N, C, 17) float32, or None (also when the detector gives no scores).
      detections_info: the manifest's ``detections`` entry (detector, profile, provenance), or None.
    """

    def __init__(self, path: pathlib.Path, manifest: dict, arrays: dict[str, np.ndarray]):
        self.path = path
        self.manifest = manifest
        self.poses3d = arrays["poses3d"]
        self.keypoints2d = arrays["keypoints2d"]
        self.visibility = arrays["visibility"]
        self.rig_index = arrays["rig"]
        self.frame = arrays["frame"]
        self._codes = {name: arrays[name] for name in LABEL_NAMES}
        self.camera_names: list[str] = list(manifest["camera_names"])
        self.info: dict = manifest.get("info", {})
        self.detections2d = arrays.get("detections2d")
        self.detections_visible = arrays.get("detections_visible")
        self.detections_score = arrays.get("detections_score")
        self.detections_info: dict | None = manifest.get("detections") if self.detections2d is not None else None
        self._rigs = None

    @property
    def has_detections(self) -> bool:
        """True when the dataset stores detector keypoints beside the projected ground truth (version 2)."""
        return self.detections2d is not None

    def __len__(self) -> int:
        return int(self.manifest["num_frames"])

    @property
    def num_frames(self) -> int:
        return len(self)

    @property
    def num_cameras(self) -> int:
        return len(self.camera_names)

    @property
    def rigs(self):
        """list[list[prpose.camera.Camera]], built from the manifest on first use."""
        if self._rigs is None:
            from prpose.camera import Camera  # imported lazily: reading arrays needs no geometry

            try:
                self._rigs = [[Camera.from_dict(d) for d in rig] for rig in self.manifest["rigs"]]
            except (KeyError, TypeError, ValueError) as e:
                raise PrposeError(f"{self.path / MANIFEST}: bad camera entry in 'rigs' ({e})") from None
        return self._rigs

    def cameras(self, index: int):
        """The rig (list of C cameras) of frame ``index``."""
        return self.rigs[int(self.rig_index[index])]

    def table(self, name: str) -> list[str]:
        """The string table of label ``name`` (source, subject, sequence, split)."""
        self._check_label_name(name)
        return list(self.manifest["tables"][name])

    def codes(self, name: str) -> np.ndarray:
        """(N,) int16 codes of label ``name`` into ``table(name)``."""
        self._check_label_name(name)
        return self._codes[name]

    def labels(self, name: str, index=None) -> np.ndarray:
        """Per-frame strings of label ``name``: (N,) or for ``index`` (an int, slice or index array)."""
        codes = self.codes(name)
        if index is not None:
            codes = codes[index]
        return np.asarray(self.table(name), dtype=str)[np.asarray(codes)]

    def indices(self, split: str | Iterable[str] | None = None, **labels: str | Iterable[str]) -> np.ndarray:
        """Frame indices (int64, ascending) whose split and other labels are among the given values.

        ``indices(split="train")``, ``indices(split=("val", "test"), subject="S9")``; no filter -> all frames.
        Unknown values raise PrposeError (a typo would otherwise silently select nothing).
        """
        mask = np.ones(len(self), dtype=bool)
        filters = dict(labels)
        if split is not None:
            filters["split"] = split
        for name, wanted in filters.items():
            self._check_label_name(name)
            wanted = [wanted] if isinstance(wanted, str) else list(wanted)
            table = self.table(name)
            allowed = SPLITS if name == "split" else table
            bad = [w for w in wanted if w not in allowed]
            if bad:
                raise PrposeError(f"{self.path}: unknown {name} value(s) {bad}; known: {list(allowed)}")
            wanted_codes = [table.index(w) for w in wanted]
            mask &= np.isin(np.asarray(self._codes[name]), wanted_codes)
        return np.flatnonzero(mask).astype(np.int64)

    def _check_label_name(self, name: str) -> None:
        if name not in LABEL_NAMES:
            raise PrposeError(f"unknown label {name!r}; expected one of {list(LABEL_NAMES)}")

    def _count_lines(self, name: str, top: int | None) -> list[str]:
        table = self.table(name)
        counts = np.bincount(np.asarray(self._codes[name], dtype=np.int64), minlength=len(table))
        order = [i for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
        if name == "split":
            order = [i for i in range(len(table)) if counts[i] > 0]
        shown = order if top is None else order[:top]
        width = max([len(table[i]) for i in shown] + [1])
        lines = [f"  {table[i]:<{width}}  {int(counts[i]):>9,d}  ({100.0 * counts[i] / max(len(self), 1):5.1f}%)" for i in shown]
        if len(order) > len(shown):
            rest = int(sum(counts[i] for i in order[len(shown):]))
            lines.append(f"  ... and {len(order) - len(shown)} more ({rest:,d} frames)")
        return lines

    def summary(self, top: int = 10) -> str:
        """Human-readable description: counts per split, source, subject, sequence (top ``top``), camera; info."""
        n, c = len(self), self.num_cameras
        lines = [
            f"prpose dataset {self.path}",
            f"  format {self.manifest['format']} v{self.manifest['version']}, profile {self.manifest['profile']}, "
            f"{n:,d} frames x {c} cameras = {n * c:,d} views, {len(self.manifest['rigs'])} rig(s)",
        ]
        for name, limit in (("split", None), ("source", top), ("subject", top), ("sequence", top)):
            lines.append(f"{name} ({len(self.table(name))} distinct):" if name != "split" else "split:")
            lines.extend(self._count_lines(name, limit))
        lines.append("cameras (views, keypoints visible):")
        width = max(len(s) for s in self.camera_names)
        for i, cam in enumerate(self.camera_names):
            # Per-camera mean in chunks: bounded memory even for huge memory-mapped datasets.
            visible = sum(int(np.count_nonzero(self.visibility[s:s + 65536, i])) for s in range(0, n, 65536))
            frac = visible / max(n * NUM_JOINTS, 1)
            lines.append(f"  {cam:<{width}}  {n:>9,d}  {100.0 * frac:5.1f}% visible")
        if self.has_detections:
            extra = {k: v for k, v in self.detections_info.items() if k not in ("detector", "profile")}
            lines.append(f"detections: {self.detections_info['detector']} (profile {self.detections_info['profile']}"
                         f"{', with scores' if self.detections_score is not None else ''}), keypoints visible:")
            for i, cam in enumerate(self.camera_names):
                visible = sum(int(np.count_nonzero(self.detections_visible[s:s + 65536, i])) for s in range(0, n, 65536))
                lines.append(f"  {cam:<{width}}  {100.0 * visible / max(n * NUM_JOINTS, 1):5.1f}% visible")
            for key, value in extra.items():
                lines.append(f"  {key}: {json.dumps(value) if not isinstance(value, str) else value}")
        else:
            lines.append("detections: none (projected ground truth only)")
        lines.append("info:")
        if self.info:
            for key, value in self.info.items():
                lines.append(f"  {key}: {json.dumps(value) if not isinstance(value, str) else value}")
        else:
            lines.append("  (none)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"PreparedDataset({str(self.path)!r}, num_frames={len(self)}, cameras={self.camera_names})"


def _load_array(apath: pathlib.Path, dtype: np.dtype, expected: tuple[int, ...]) -> np.ndarray:
    """Memory-map one .npy file, checking its dtype and shape (never unpickles)."""
    if not apath.is_file():
        raise PrposeError(f"{apath}: missing array file")
    try:
        arr = np.load(apath, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise PrposeError(f"{apath}: cannot read array ({e})") from None
    if arr.shape != expected or arr.dtype != dtype:
        raise PrposeError(f"{apath}: {arr.dtype} array of shape {arr.shape}; expected {dtype} of shape {expected}")
    return arr


def load_dataset(path: str | os.PathLike) -> PreparedDataset:
    """Open a prepared dataset with memory-mapped arrays, validating the manifest and every array.

    Raises:
      PrposeError naming the path and the problem: not a directory, no/invalid manifest, wrong format, newer
      version, missing array file, wrong dtype or shape, codes outside their tables.
    """
    path = pathlib.Path(path)
    atomic.recover(path, _is_dataset_dir)  # a write interrupted between its two renames is repaired first
    if not path.is_dir():
        raise PrposeError(f"{path}: not a directory; expected a prepared dataset directory")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise PrposeError(f"{path}: no {MANIFEST}; not a prepared dataset (or an interrupted write)")
    try:
        with open(mpath) as f:
            manifest = json.load(f)
    except ValueError as e:
        raise PrposeError(f"{mpath}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise PrposeError(f"{mpath}: format is {got!r}; expected {FORMAT!r}")
    version = manifest.get("version")
    if not isinstance(version, int) or version < 1:
        raise PrposeError(f"{mpath}: version {version!r} is not a valid format version; expected {VERSION}")
    if version > VERSION:
        raise PrposeError(
            f"{mpath}: format version {version} is newer than this prpose supports ({VERSION}); upgrade prpose"
        )
    for key in ("num_frames", "camera_names", "profile", "rigs", "tables"):
        if key not in manifest:
            raise PrposeError(f"{mpath}: missing key {key!r}")
    if manifest["profile"] != PROFILE:
        raise PrposeError(f"{mpath}: profile {manifest['profile']!r}; expected {PROFILE!r}")
    for key, kind in (("camera_names", list), ("rigs", list), ("tables", dict), ("info", dict)):
        if key in manifest and not isinstance(manifest[key], kind):
            raise PrposeError(f"{mpath}: {key!r} is a {type(manifest[key]).__name__}; expected a {kind.__name__}")
    if not all(isinstance(name, str) for name in manifest["camera_names"]):
        raise PrposeError(f"{mpath}: 'camera_names' must be a list of strings")
    if not all(isinstance(rig, list) for rig in manifest["rigs"]):
        raise PrposeError(f"{mpath}: 'rigs' must be a list of camera lists")
    tables = manifest["tables"]
    for name in LABEL_NAMES:
        if not isinstance(tables.get(name), list) or not all(isinstance(v, str) for v in tables[name]):
            raise PrposeError(f"{mpath}: tables[{name!r}] missing or not a list of strings")
    bad_splits = [s for s in tables["split"] if s not in SPLITS]
    if bad_splits:
        raise PrposeError(f"{mpath}: unknown split name(s) {bad_splits}; expected {list(SPLITS)}")
    n, c = manifest["num_frames"], len(manifest["camera_names"])
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise PrposeError(f"{mpath}: num_frames {n!r}; expected a non-negative integer")
    for r, rig in enumerate(manifest["rigs"]):
        if len(rig) != c:
            raise PrposeError(f"{mpath}: rig {r} has {len(rig)} cameras; expected {c} (camera_names)")
    arrays = {name: _load_array(path / f"{name}.npy", dtype, shape_fn(n, c)) for name, (dtype, shape_fn) in _ARRAYS.items()}
    if "detections" in manifest:
        if version < 2:
            raise PrposeError(f"{mpath}: 'detections' needs format version 2; the manifest says version {version}")
        _check_detections_entry(manifest["detections"], f"{mpath}: 'detections'")
        for name, (dtype, shape_fn) in _DETECTION_ARRAYS.items():
            apath = path / f"{name}.npy"
            if name != "detections_score" or apath.exists():
                arrays[name] = _load_array(apath, dtype, shape_fn(n, c))
    limits = {"rig": len(manifest["rigs"]), **{name: len(tables[name]) for name in LABEL_NAMES}}
    for name, limit in limits.items():
        a = arrays[name]
        if n and (int(a.min()) < 0 or int(a.max()) >= limit):
            raise PrposeError(
                f"{path / (name + '.npy')}: codes span [{int(a.min())}, {int(a.max())}]; expected [0, {limit - 1}]"
            )
    return PreparedDataset(path, manifest, arrays)
