"""Shared converter helpers: 3D sequences + camera rig(s) + split assignment -> a prepared dataset.

Every converter (synthetic, Human3.6M, BVH) ends the same way: it has a list of ``SequenceInput`` (name,
subject, source, 3D poses (T, 17, 3) in world metres Z-up, frame indices), projects them into one or more
camera rigs, assigns each sequence to a split and writes the dataset atomically. This module does that part
once, plus the per-file report that converters print (frames read / converted / skipped and why).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import numpy as np

from prpose.camera import Camera
from prpose.dataset import SPLITS, PreparedDataset, check_target, load_dataset, write_dataset
from prpose.errors import PrposeError
from prpose.progress import progress as progress_bar

# Joints closer than this to the camera plane (metres) are treated as not visible: the perspective divide
# is meaningless there.
MIN_DEPTH = 0.1
# Joints whose undistorted normalised image radius exceeds this (tan 45 degrees) are treated as not visible
# even if their distorted projection lands inside the image: the Human3.6M distortion polynomial folds far
# off-axis points back into the frame.
MAX_FIELD_RADIUS = 1.0


@dataclasses.dataclass(frozen=True)
class SequenceInput:
    """One 3D motion to project.

    Attributes:
      name: unique sequence label (e.g. "S9/Walking 1", or a BVH path relative to the input root).
      subject: performer label (selects the rig when rigs are given per subject).
      source: where it came from ("h36m", "synthetic", "cmu", ...).
      poses3d: (T, 17, 3) h36m17 world metres, Z-up.
      frames: (T,) int frame indices within the sequence; None -> 0..T-1.
      detections2d: optional (T, C, 17, 2) detector pixels in h36m17 order, one column per camera of the rig
        (a second 2D source stored beside the projection; format version 2).
      detections_visible: (T, C, 17) bool, required with ``detections2d`` (False: joint not detected).
    """

    name: str
    subject: str
    source: str
    poses3d: np.ndarray
    frames: np.ndarray | None = None
    detections2d: np.ndarray | None = None
    detections_visible: np.ndarray | None = None


RigSpec = Union[Sequence[Camera], Mapping[str, Sequence[Camera]], Callable[[SequenceInput], Sequence[Camera]]]
SplitSpec = Union[str, Mapping[str, str], Callable[[SequenceInput], str]]


def check_poses(poses, where: str, num_joints: int = 17) -> np.ndarray:
    """Validate a (T, J, 3) pose array; return it as float64.

    Raises:
      PrposeError naming ``where``: wrong rank/shape, empty, or values that are non-finite or overflow float32
      (with the count and the first offending frame).
    """
    try:
        x = np.asarray(poses, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise PrposeError(f"{where}: poses are not numeric ({e})") from None
    if x.ndim != 3 or x.shape[1:] != (num_joints, 3):
        raise PrposeError(f"{where}: poses have shape {x.shape}; expected (T, {num_joints}, 3)")
    if x.shape[0] == 0:
        raise PrposeError(f"{where}: sequence has no frames")
    bad = ~(np.abs(x) <= np.finfo(np.float32).max)  # non-finite, or not storable as float32 (datasets are)
    if bad.any():
        frames = np.unique(np.nonzero(bad)[0])
        raise PrposeError(
            f"{where}: {int(bad.sum())} non-finite or out-of-range coordinate(s) in {frames.size} frame(s), first at "
            f"frame {int(frames[0])}; expected finite positions (|x| < 3.4e38, stored as float32)"
        )
    return x


def project_to_rig(poses3d, rig: Sequence[Camera]) -> tuple[np.ndarray, np.ndarray]:
    """Project world poses into every camera of a rig, with lens distortion.

    A keypoint is visible when it is at least ``MIN_DEPTH`` in front of the camera, within
    ``MAX_FIELD_RADIUS`` of the optical axis (undistorted), and its pixel lies inside the image. Keypoints
    that are not meaningful at all (behind the camera or outside that field) are stored as (0, 0), so the
    arrays stay finite; keypoints merely outside the image keep their true pixel position.

    Args:
      poses3d: (T, J, 3) world metres.
      rig: C cameras.
    Returns:
      keypoints (T, C, J, 2) float32 pixels, visible (T, C, J) bool.
    """
    x = np.asarray(poses3d, dtype=np.float64)
    t, j = x.shape[:2]
    keypoints = np.zeros((t, len(rig), j, 2), np.float32)
    visible = np.zeros((t, len(rig), j), bool)
    for c, cam in enumerate(rig):
        xc = cam.world_to_camera(x)
        depth = xc[..., 2]
        in_front = depth > MIN_DEPTH
        with np.errstate(divide="ignore", invalid="ignore"):
            radius = np.linalg.norm(xc[..., :2], axis=-1) / np.where(in_front, depth, 1.0)
        meaningful = in_front & (radius <= MAX_FIELD_RADIUS)
        uv, _ = cam.project(x, distort=True)
        uv = np.where(meaningful[..., None], uv, 0.0)
        keypoints[:, c] = uv
        visible[:, c] = meaningful & cam.in_image(uv)
    return keypoints, visible


def hash_split(key: str, fractions: Sequence[float] = (0.8, 0.1, 0.1), salt: str = "") -> str:
    """Deterministic split of one key by its SHA-256 hash (stable across runs, machines and Python versions).

    Args:
      key: e.g. a sequence name; salt: changes the assignment as a whole.
      fractions: (train, val, test), summing to 1.
    """
    _check_fractions(fractions)
    h = int.from_bytes(hashlib.sha256(f"{salt}\0{key}".encode()).digest()[:8], "big") / 2.0**64
    edges = np.cumsum(fractions)
    return SPLITS[min(int(np.searchsorted(edges, h, side="right")), len(SPLITS) - 1)]


def assign_splits(keys: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> dict[str, str]:
    """Exact-proportion deterministic split of a set of keys (for a small number of sequences).

    Counts are rounded, and every split with a positive fraction gets at least one key when there are at
    least as many keys as such splits. Returns key -> split.
    """
    _check_fractions(fractions)
    keys = list(dict.fromkeys(keys))
    n = len(keys)
    counts = [int(round(f * n)) for f in fractions]
    wanted = [i for i, f in enumerate(fractions) if f > 0]
    if n >= len(wanted):
        for i in wanted:
            counts[i] = max(counts[i], 1)
    while sum(counts) > n:  # take the excess from the largest split
        counts[int(np.argmax(counts))] -= 1
    counts[0] += n - sum(counts)
    order = np.random.default_rng(seed).permutation(n)
    out, start = {}, 0
    for split, count in zip(SPLITS, counts):
        for i in order[start:start + count]:
            out[keys[i]] = split
        start += count
    return out


def _check_fractions(fractions):
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or np.any(f < 0) or abs(f.sum() - 1.0) > 1e-6:
        raise PrposeError(f"split fractions must be 3 non-negative numbers (train, val, test) summing to 1; got {list(fractions)}")


def _check_detections(seq: SequenceInput, t: int, c: int) -> None:
    if seq.detections2d is None:
        if seq.detections_visible is not None:
            raise PrposeError(f"sequence {seq.name!r}: detections_visible given without detections2d")
        return
    det, vis = np.asarray(seq.detections2d), np.asarray(seq.detections_visible)
    if det.shape != (t, c, 17, 2) or vis.shape != (t, c, 17) or vis.dtype != np.bool_:
        raise PrposeError(f"sequence {seq.name!r}: detections have shapes {det.shape} and {vis.shape} ({vis.dtype}); "
                          f"expected ({t}, {c}, 17, 2) and bool ({t}, {c}, 17)")
    bad = ~np.isfinite(det[vis])
    if bad.any():
        raise PrposeError(f"sequence {seq.name!r}: {int(bad.sum())} non-finite visible detection value(s); "
                          "mark them invisible")


def _rig_of(seq: SequenceInput, rig: RigSpec) -> list[Camera]:
    if callable(rig) and not isinstance(rig, Mapping):
        return list(rig(seq))
    if isinstance(rig, Mapping):
        if seq.subject not in rig:
            raise PrposeError(f"sequence {seq.name!r}: no camera rig for subject {seq.subject!r}; rigs exist for {sorted(rig)}")
        return list(rig[seq.subject])
    return list(rig)


def _split_of(seq: SequenceInput, split: SplitSpec) -> str:
    if isinstance(split, str):
        value = split
    elif isinstance(split, Mapping):
        if seq.name not in split:
            raise PrposeError(f"sequence {seq.name!r} has no split assignment")
        value = split[seq.name]
    else:
        value = split(seq)
    if value not in SPLITS:
        raise PrposeError(f"sequence {seq.name!r}: split {value!r}; expected one of {list(SPLITS)}")
    return value


def assemble(sequences: Sequence[SequenceInput], rig: RigSpec, split: SplitSpec, *,
             progress: bool = False) -> dict[str, Any]:
    """Project every sequence into its rig and build the ``write_dataset`` arrays.

    Args:
      sequences: the motions; names must be unique.
      rig: one rig (list of cameras) for all, a mapping subject -> rig, or a function sequence -> rig.
        All rigs must have the same number of cameras. Identical rigs are stored once.
      split: one split name for all, a mapping sequence name -> split, or a function sequence -> split.
      progress: report progress over sequences (prpose.progress).
    Returns:
      keyword arguments for ``prpose.dataset.write_dataset`` (everything but path, info, overwrite).
    Raises:
      PrposeError (naming the sequence) for bad poses, missing rig or split, inconsistent rigs.
    """
    if not sequences:
        raise PrposeError("no sequences to convert")
    names = [s.name for s in sequences]
    dup = sorted({n for n in names if names.count(n) > 1}) if len(set(names)) != len(names) else []
    if dup:
        raise PrposeError(f"duplicate sequence names: {dup[:5]}")
    # Validate everything before the (long) projection loop, so bad input fails fast and nothing is written.
    plan = []
    for seq in sequences:
        poses = check_poses(seq.poses3d, f"sequence {seq.name!r}")
        frames = np.arange(len(poses)) if seq.frames is None else np.asarray(seq.frames)
        if frames.shape != (len(poses),) or (frames.size and frames.dtype.kind not in "iu"):
            raise PrposeError(f"sequence {seq.name!r}: frames have shape {frames.shape} dtype {frames.dtype}; expected ({len(poses)},) integers")
        cams = _rig_of(seq, rig)
        _check_detections(seq, len(poses), len(cams))
        plan.append((seq, poses, frames, cams, _split_of(seq, split)))
    rigs: list[list[Camera]] = []
    rig_ids: dict[tuple, int] = {}
    for seq, _, _, cams, _ in plan:
        if not cams or not all(isinstance(c, Camera) for c in cams):
            raise PrposeError(f"sequence {seq.name!r}: rig must be a non-empty list of prpose.camera.Camera")
        if tuple(cams) not in rig_ids:
            rig_ids[tuple(cams)] = len(rigs)
            rigs.append(cams)
    num_cams = {len(r) for r in rigs}
    if len(num_cams) != 1:
        raise PrposeError(f"all rigs must have the same number of cameras; got {sorted(num_cams)}")
    c = num_cams.pop()
    names_per_slot = {tuple(cam.name for cam in r) for r in rigs}
    camera_names = list(names_per_slot.pop()) if len(names_per_slot) == 1 else [f"cam{i}" for i in range(c)]
    if len(set(camera_names)) != c:
        camera_names = [f"cam{i}" for i in range(c)]

    n = sum(len(p) for _, p, _, _, _ in plan)
    out = {
        "poses3d": np.empty((n, 17, 3), np.float32),
        "keypoints2d": np.empty((n, c, 17, 2), np.float32),
        "visibility": np.empty((n, c, 17), bool),
        "rig_index": np.empty(n, np.int16),
        "frame": np.empty(n, np.int32),
    }
    with_detections = any(seq.detections2d is not None for seq in sequences)
    if with_detections:  # sequences without detections get invisible zeros
        out["detections2d"] = np.zeros((n, c, 17, 2), np.float32)
        out["detections_visible"] = np.zeros((n, c, 17), bool)
    labels = {k: [] for k in ("source", "subject", "sequence", "split")}
    start = 0
    for seq, poses, frames, cams, split_name in progress_bar(plan, desc="projecting", unit="seq", enabled=progress):
        end = start + len(poses)
        out["poses3d"][start:end] = poses
        out["keypoints2d"][start:end], out["visibility"][start:end] = project_to_rig(poses, cams)
        out["rig_index"][start:end] = rig_ids[tuple(cams)]
        out["frame"][start:end] = frames
        if seq.detections2d is not None:
            out["detections2d"][start:end] = seq.detections2d
            out["detections_visible"][start:end] = seq.detections_visible
        for key, value in (("source", seq.source), ("subject", seq.subject), ("sequence", seq.name), ("split", split_name)):
            labels[key].append((value, len(poses)))
        start = end
    for key, parts in labels.items():
        out[key] = np.repeat(np.array([v for v, _ in parts], dtype=str), [k for _, k in parts])
    out["rigs"] = rigs
    out["camera_names"] = camera_names
    return out


def write_sequences(out_dir: str | os.PathLike, sequences: Sequence[SequenceInput], rig: RigSpec, split: SplitSpec, *,
                    info: Mapping[str, Any] | None = None, overwrite: bool = False,
                    progress: bool = True, detections: Mapping[str, Any] | None = None) -> PreparedDataset:
    """``assemble`` + atomic ``write_dataset`` + reload (validates what was written). Returns the dataset.

    The output path is checked first, so a refused target fails before any projection work. ``detections``
    is the manifest entry (``{"detector", "profile", ...}``), required when sequences carry detections.
    """
    check_target(out_dir, overwrite)
    arrays = assemble(sequences, rig, split, progress=progress)
    if "detections2d" in arrays:
        arrays["detections"] = detections
    elif detections is not None:
        raise PrposeError("write_sequences: a detections entry was given but no sequence has detections")
    from prpose.errors import writing

    with writing(out_dir):  # a full disk names the dataset being written
        write_dataset(out_dir, **arrays, info=dict(info or {}), overwrite=overwrite)
    return load_dataset(out_dir)


@dataclasses.dataclass
class ConversionReport:
    """Per-input-file outcome, printed by converters so that nothing is dropped silently."""

    rows: list[tuple[str, int, int, str]] = dataclasses.field(default_factory=list)
    failures: int = 0

    def converted(self, name: str, frames_read: int, frames_kept: int, note: str = "") -> None:
        self.rows.append((name, int(frames_read), int(frames_kept), note or "ok"))

    def skipped(self, name: str, reason: str, frames_read: int = 0) -> None:
        self.rows.append((name, int(frames_read), 0, f"skipped: {reason}"))

    def failed(self, name: str, reason: str, frames_read: int = 0) -> None:
        self.failures += 1
        self.rows.append((name, int(frames_read), 0, f"FAILED: {reason}"))

    @property
    def frames_read(self) -> int:
        return sum(r[1] for r in self.rows)

    @property
    def frames_kept(self) -> int:
        return sum(r[2] for r in self.rows)

    def table(self, max_rows: int | None = None) -> str:
        """Fixed-width table: file, frames read, frames converted, status; then totals.

        ``max_rows`` limits the rows shown, but rows that are not plain "ok" (skipped, failed, notes) are all
        shown, so nothing dropped is hidden by the limit.
        """
        rows = self.rows if max_rows is None else [
            r for i, r in enumerate(self.rows) if i < max_rows or r[3] != "ok"]
        width = max([len(r[0]) for r in rows] + [4])
        lines = [f"{'file':<{width}}  {'read':>8}  {'kept':>8}  status"]
        lines += [f"{name:<{width}}  {read:>8,d}  {kept:>8,d}  {status}" for name, read, kept, status in rows]
        if len(rows) < len(self.rows):
            lines.append(f"... and {len(self.rows) - len(rows)} more files converted without remarks")
        skipped = sum(1 for r in self.rows if r[3].startswith("skipped"))
        lines.append(
            f"total: {len(self.rows)} file(s), {self.frames_read:,d} frames read, {self.frames_kept:,d} converted, "
            f"{skipped} skipped, {self.failures} failed"
        )
        return "\n".join(lines)
