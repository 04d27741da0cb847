"""Training examples from a prepared dataset: device arrays loaded once, batches sampled inside jit.

A training example (REFERENCE.md "Training data and mining") is one 3D pose seen from two views: the
anchor's and the positive's 2D keypoints from two distinct cameras of the same frame, plus the 3D pose.
:func:`load_train_arrays` converts a split once (h36m17 -> the model's input profile by joint name,
``normalize_2d`` per camera,
``normalize_3d``) and puts it on the devices; :func:`sample_batch` then draws frames and an ordered pair of
distinct usable cameras per frame entirely on the device (no Python per step), so it can live inside the
jitted train step. :func:`sample_windows` does the same for windows of consecutive frames of one sequence
(temporal Pr-VIPE), with one camera pair for the whole window.

Real detections as views: a format-v2 dataset (prpose.dataset) may hold a detector's keypoints beside the
projected ground truth (Stacked Hourglass on Human3.6M). With ``load_train_arrays(..., detections=True)`` they are
normalised from the joints the detector gave, and ``sample_batch(..., detection_probability=p)`` makes each view
the real detection with probability p (where that detection is usable), reporting which joints it shows.

Data parallel over processes (``load_train_arrays(mesh=...)``): every process prepares and holds only its share
of the split's frames (contiguous in dataset order, cut between sequences for windows) on its own devices; the
sampler draws the same frame indices on every device and the gathers read them from wherever they live (XLA
partitions a gather from a sharded array as a local masked gather plus a sum over devices), so the batches,
and the loss, are the same whatever the number of processes.

A view (frame, camera) is *usable* by the one rule of ``prpose.views.prepare_views`` (the retrieval protocol
applies it too): its 2D normalisation is valid and all input keypoints are visible in that camera (inside the
image and in front of it; the dataset's ``visibility``); a real detected view needs only a normalisable torso
from the joints the detector gave. Frames whose 3D normalisation is invalid, or with fewer than two usable
views, are dropped; every drop is counted in the returned report.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from prpose import keypoints as kp
from prpose.errors import PrposeError
from prpose.normalize import jit_normalize_3d
from prpose.views import prepare_views

_CHUNK = 16384  # frames normalised at a time on the host: bounds memory on large memory-mapped datasets


class TrainArrays(NamedTuple):
    """A split ready for sampling (a pytree of device arrays). N kept frames, C cameras.

    keypoints2d: (N, C, J, 2) float32, the model's input profile (J joints), normalised per view (zeros where
        unusable).
    view_valid: (N, C) bool, usable views (at least two per kept frame).
    poses3d: (N, 17, 3) float32, h36m17, normalised.
    frame_ids: (N,) int32, row of each kept frame in the dataset (for reporting/debugging).
    window_starts: (W,) int32 rows (into the kept arrays) where a window of ``window`` consecutive frames of
        one sequence starts; (0,) when window == 1.
    window_view_valid: (W, C) bool, cameras usable in every frame of the window.
    detections2d: (N, C, J, 2) float32, the dataset's real detector keypoints (format v2), normalised from their
        visible joints (zeros where invisible or unusable); (0, C, J, 2) when not loaded.
    detections_visible: (N, C, J) bool, joints the detector gave (e.g. no nose for Stacked Hourglass).
    detection_valid: (N, C) bool, usable detected views: the ground-truth view is usable and the detection's
        torso normalises.
    frame_rows: (F,) int32, the row of each of the F kept frames in the per-frame arrays above (replicated).
        The identity when the arrays are not sharded; sharded over processes (``load_train_arrays(mesh=...)``),
        each process's share is padded to equal blocks and this map skips the padding, so frames are sampled
        exactly as from one unsharded array. window_starts are rows too.

    Per-frame arrays (keypoints2d, view_valid, poses3d, frame_ids, detections*) have N >= F rows.
    """

    keypoints2d: jax.Array
    view_valid: jax.Array
    poses3d: jax.Array
    frame_ids: jax.Array
    window_starts: jax.Array
    window_view_valid: jax.Array
    detections2d: jax.Array
    detections_visible: jax.Array
    detection_valid: jax.Array
    frame_rows: jax.Array


class Batch(NamedTuple):
    """One training batch. Shapes for window == 1; with windows a T axis follows B.

    anchor2d, positive2d: (B, J, 2) normalised keypoints of the input profile (anchor and positive views).
    poses3d: (B, 17, 3) normalised h36m17 3D poses (the label used for mining).
    anchor_camera, positive_camera: (B,) int32 camera slots, always distinct.
    frame: (B,) int32 rows into TrainArrays (window start for windows).
    anchor_visible, positive_visible: (B, J) bool, joints present in the view (False only in real detections).
    anchor_detected, positive_detected: (B,) bool, views that are real detections (not projected ground truth).
    """

    anchor2d: jax.Array
    positive2d: jax.Array
    poses3d: jax.Array
    anchor_camera: jax.Array
    positive_camera: jax.Array
    frame: jax.Array
    anchor_visible: jax.Array | None = None
    positive_visible: jax.Array | None = None
    anchor_detected: jax.Array | None = None
    positive_detected: jax.Array | None = None


@dataclasses.dataclass
class LoadReport:
    """What :func:`load_train_arrays` kept and dropped (every count is in frames unless it says views)."""

    split: str
    frames_in_split: int
    frames_kept: int
    dropped_invalid_3d: int
    dropped_too_few_views: int
    views_total: int
    views_unusable: int
    windows: int = 0
    detection_views: int = 0  # usable detected views of the kept frames (0: none loaded)

    def summary(self) -> str:
        s = (f"{self.split}: kept {self.frames_kept}/{self.frames_in_split} frames "
             f"(dropped {self.dropped_invalid_3d} with invalid 3D normalisation, "
             f"{self.dropped_too_few_views} with < 2 usable views; "
             f"{self.views_unusable}/{self.views_total} views unusable)")
        if self.windows:
            s += f", {self.windows} windows"
        if self.detection_views:
            s += f"; {self.detection_views} usable real detected views"
        return s


def load_train_arrays(dataset, split: str = "train", *, window: int = 1, mesh=None, profile: str = "input13",
                      detections: bool = False):
    """Load one split of a prepared dataset onto the devices, once.

    Args:
      dataset: a ``prpose.dataset.PreparedDataset`` or a path to one.
      split: "train", "val" or "test".
      window: 1 for single frames; T > 1 also computes the starts of windows of T consecutive frames
        (same sequence, consecutive ``frame`` numbers, all kept).
      mesh: shard the frames over this ``jax.sharding.Mesh``'s "data" axis (data-parallel training; its devices
        grouped by process, as ``prpose.training.make_mesh`` makes them): each process prepares and holds only its
        share (see the module docstring; the report counts the whole split). None: the default device.
      profile: the model's input profile (``config.model.input_profile``).
      detections: also load the dataset's real detections (format v2) as alternative views; ignored (with
        ``detection_views`` 0 in the report) when the dataset has none.
    Returns:
      (TrainArrays, LoadReport).
    """
    if not hasattr(dataset, "keypoints2d"):
        from prpose.dataset import load_dataset

        dataset = load_dataset(dataset)
    all_rows = np.asarray(dataset.indices(split=split))
    if all_rows.size == 0:
        raise PrposeError(f"dataset has no frames in split {split!r}; its splits: {_split_counts(dataset)}")
    num_cameras = dataset.keypoints2d.shape[1]
    if num_cameras < 2:
        raise PrposeError(f"dataset has {num_cameras} camera(s); training pairs need at least 2")
    rows = all_rows if mesh is None else _process_share(all_rows, np.asarray(dataset.codes("sequence")), window)

    with_detections = detections and getattr(dataset, "detections2d", None) is not None
    k_parts, u_parts, p_parts, p_valid_parts, d_parts = [], [], [], [], []
    for start in range(0, rows.size, _CHUNK):
        r = rows[start:start + _CHUNK]
        k, _, u = prepare_views(dataset.keypoints2d[r], dataset.visibility[r], profile)
        p, pv = jit_normalize_3d(np.asarray(dataset.poses3d[r], np.float32))
        pv = np.asarray(pv) & np.isfinite(np.asarray(dataset.poses3d[r])).all(axis=(-1, -2))
        k_parts.append(k), u_parts.append(u), p_parts.append(np.asarray(p, np.float32)), p_valid_parts.append(pv)
        if with_detections:
            # A detector view requires no joint: it is usable when its torso normalises from the joints given.
            d_parts.append(prepare_views(dataset.detections2d[r], dataset.detections_visible[r], profile,
                                         required=()))
    num_joints = kp.get_profile(profile).num_joints
    k2d = np.concatenate(k_parts) if k_parts else np.zeros((0, num_cameras, num_joints, 2), np.float32)
    usable = np.concatenate(u_parts) if u_parts else np.zeros((0, num_cameras), bool)
    p3d = np.concatenate(p_parts) if p_parts else np.zeros((0, 17, 3), np.float32)
    p_valid = np.concatenate(p_valid_parts) if p_valid_parts else np.zeros((0,), bool)
    if with_detections and d_parts:
        d2d, d_vis, d_ok = (np.concatenate(parts) for parts in zip(*d_parts))
        d_ok &= usable
    else:
        d2d = np.zeros((0, num_cameras, num_joints, 2), np.float32)
        d_vis = np.zeros((0, num_cameras, num_joints), bool)
        d_ok = np.zeros((0, num_cameras), bool)

    enough_views = usable.sum(axis=1) >= 2
    keep = p_valid & enough_views
    report = LoadReport(
        split=split, frames_in_split=int(rows.size), frames_kept=int(keep.sum()),
        dropped_invalid_3d=int((~p_valid).sum()), dropped_too_few_views=int((p_valid & ~enough_views).sum()),
        views_total=int(usable.size), views_unusable=int((~usable).sum()))

    starts = np.zeros((0,), np.int32)
    window_valid = np.zeros((0, num_cameras), bool)
    if window > 1:
        starts, window_valid = _window_starts(
            np.asarray(dataset.codes("sequence"))[rows][keep], np.asarray(dataset.frame)[rows][keep],
            usable[keep], window)
        report.windows = int(starts.size)
    if with_detections:
        d2d, d_vis, d_ok = d2d[keep], d_vis[keep], d_ok[keep]
        report.detection_views = int(d_ok.sum())
    if mesh is not None:
        report = _whole_split_report(report)
    if report.frames_kept == 0:
        raise PrposeError(f"split {split!r}: no usable frames ({report.summary()})")
    if window > 1 and report.windows == 0:
        raise PrposeError(f"split {split!r}: no window of {window} consecutive usable frames of one sequence")

    arrays = TrainArrays(
        keypoints2d=k2d[keep], view_valid=usable[keep], poses3d=p3d[keep],
        frame_ids=rows[keep].astype(np.int32), window_starts=starts, window_view_valid=window_valid,
        detections2d=d2d, detections_visible=d_vis, detection_valid=d_ok,
        frame_rows=np.arange(int(keep.sum()), dtype=np.int32))
    if mesh is None:
        return TrainArrays(*(jnp.asarray(x) for x in arrays)), report
    return _shard_frames(arrays, mesh, with_detections), report


# --- sharding over processes ---------------------------------------------------------------------------------

def _process_share(rows, sequence_codes, window: int):
    """This process's contiguous share of ``rows`` (P near-equal parts; cut between sequences for windows)."""
    count, rank = jax.process_count(), jax.process_index()
    if count == 1:
        return rows
    if window > 1:
        seq = sequence_codes[rows]
        cuts = np.concatenate([[0], np.flatnonzero(np.diff(seq) != 0) + 1, [rows.size]])
    else:
        cuts = np.arange(rows.size + 1)
    bounds = [int(cuts[np.abs(cuts - q * rows.size / count).argmin()]) for q in range(count + 1)]
    return rows[bounds[rank]:bounds[rank + 1]]


def _gather_processes(x: np.ndarray) -> np.ndarray:
    """(P, ...) the same-shaped NumPy array of every process, in process order."""
    if jax.process_count() == 1:
        return np.asarray(x)[None]
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.asarray(x)))


def _concat_processes(x: np.ndarray) -> np.ndarray:
    """The concatenation over processes (in process order) of per-process arrays of any length."""
    lengths = _gather_processes(np.array([x.shape[0]]))[:, 0]
    padded = np.zeros((int(lengths.max()), *x.shape[1:]), x.dtype)
    padded[:x.shape[0]] = x
    return np.concatenate([part[:n] for part, n in zip(_gather_processes(padded), lengths)])


def _whole_split_report(report: LoadReport) -> LoadReport:
    """The sum of every process's report (each counted its own share)."""
    names = [f.name for f in dataclasses.fields(LoadReport) if f.name != "split"]
    totals = _gather_processes(np.array([getattr(report, n) for n in names], np.int64)).sum(axis=0)
    return LoadReport(split=report.split, **{n: int(v) for n, v in zip(names, totals)})


def _shard_frames(local: TrainArrays, mesh, with_detections: bool) -> TrainArrays:
    """Per-frame arrays sharded over the mesh's "data" axis (this process's block: its frames, zero-padded to
    the common block size); frame_rows, window starts (as rows) and empty arrays replicated."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    rank = jax.process_index()
    local_devices = sum(d.process_index == rank for d in mesh.devices.flat)
    counts = _gather_processes(np.array([local.poses3d.shape[0]]))[:, 0]
    block = max(1, -(-int(counts.max()) // local_devices)) * local_devices
    sharded, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())

    def shard(x):
        padded = np.zeros((block, *x.shape[1:]), x.dtype)
        padded[:x.shape[0]] = x
        return jax.make_array_from_process_local_data(sharded, padded, (block * counts.size, *x.shape[1:]))

    def replicate(x):
        return jax.make_array_from_callback(x.shape, replicated, lambda index: x[index])

    per_frame = {"keypoints2d", "view_valid", "poses3d", "frame_ids"}
    if with_detections:
        per_frame |= {"detections2d", "detections_visible", "detection_valid"}
    whole = local._replace(
        frame_rows=np.concatenate([q * block + np.arange(n, dtype=np.int32) for q, n in enumerate(counts)]),
        window_starts=_concat_processes(local.window_starts + np.int32(rank * block)),
        window_view_valid=_concat_processes(local.window_view_valid))
    return TrainArrays(**{name: (shard if name in per_frame else replicate)(np.asarray(x))
                          for name, x in whole._asdict().items()})


def _window_starts(sequence, frame, usable, window):
    """Rows i such that rows i..i+T-1 are consecutive frames of one sequence, with >= 2 cameras usable in all."""
    n = sequence.shape[0]
    if n < window:
        return np.zeros((0,), np.int32), np.zeros((0, usable.shape[1]), bool)
    idx = np.arange(n - window + 1)
    ok = np.ones(idx.shape, bool)
    cams = np.ones((idx.size, usable.shape[1]), bool)
    for t in range(window):
        ok &= (sequence[idx + t] == sequence[idx]) & (frame[idx + t] == frame[idx] + t)
        cams &= usable[idx + t]
    ok &= cams.sum(axis=1) >= 2
    return idx[ok].astype(np.int32), cams[ok]


def _split_counts(dataset) -> dict:
    out = {}
    for name in ("train", "val", "test"):
        try:
            out[name] = int(np.asarray(dataset.indices(split=name)).size)
        except Exception:  # noqa: BLE001 - only for the error message
            pass
    return out


def _camera_pair(key, valid):
    """An ordered pair of distinct cameras per row, uniform among valid ones. valid: (B, C) bool, >= 2 True."""
    k1, k2 = jax.random.split(key)
    neg_inf = jnp.float32(-jnp.inf)
    logits = jnp.where(valid, 0.0, neg_inf)
    first = jax.random.categorical(k1, logits, axis=-1)
    others = valid & (jnp.arange(valid.shape[-1]) != first[:, None])
    second = jax.random.categorical(k2, jnp.where(others, 0.0, neg_inf), axis=-1)
    return first.astype(jnp.int32), second.astype(jnp.int32)


def sample_batch(key, arrays: TrainArrays, batch_size: int, detection_probability: float = 0.0) -> Batch:
    """Draw ``batch_size`` examples (jittable; ``batch_size`` and ``detection_probability`` static): frames
    uniformly with replacement, then an ordered pair of distinct usable cameras per frame, uniformly. Each view is
    independently the real detection (with ``detection_probability``, where ``detection_valid``) or the projected
    ground truth; the Batch's visibility / detected fields are always set."""
    k_frame, k_cam, k_det = jax.random.split(key, 3)
    n = arrays.frame_rows.shape[0]
    frame = arrays.frame_rows[jax.random.randint(k_frame, (batch_size,), 0, n, dtype=jnp.int32)]
    anchor_cam, positive_cam = _camera_pair(k_cam, arrays.view_valid[frame])
    num_joints = arrays.keypoints2d.shape[-2]

    def view(cam, u):
        gt = arrays.keypoints2d[frame, cam]
        all_visible = jnp.ones((batch_size, num_joints), bool)
        if detection_probability <= 0 or arrays.detections2d.shape[0] == 0:
            return gt, all_visible, jnp.zeros((batch_size,), bool)
        detected = (u < detection_probability) & arrays.detection_valid[frame, cam]
        keypoints = jnp.where(detected[:, None, None], arrays.detections2d[frame, cam], gt)
        visible = jnp.where(detected[:, None], arrays.detections_visible[frame, cam], all_visible)
        return keypoints, visible, detected

    u = jax.random.uniform(k_det, (2, batch_size))
    anchor2d, anchor_visible, anchor_detected = view(anchor_cam, u[0])
    positive2d, positive_visible, positive_detected = view(positive_cam, u[1])
    return Batch(
        anchor2d=anchor2d, positive2d=positive2d, poses3d=arrays.poses3d[frame],
        anchor_camera=anchor_cam, positive_camera=positive_cam, frame=frame,
        anchor_visible=anchor_visible, positive_visible=positive_visible,
        anchor_detected=anchor_detected, positive_detected=positive_detected)


def sample_windows(key, arrays: TrainArrays, batch_size: int, window: int) -> Batch:
    """Draw windows of ``window`` consecutive frames (jittable; sizes static). One camera pair per window.

    Returns a Batch with anchor2d/positive2d (B, T, J, 2), poses3d (B, T, 17, 3), frame (B,) window start row.
    """
    if arrays.window_starts.shape[0] == 0:
        raise PrposeError("sample_windows: the arrays were loaded without windows (load_train_arrays(window=T))")
    k_start, k_cam = jax.random.split(key)
    which = jax.random.randint(k_start, (batch_size,), 0, arrays.window_starts.shape[0], dtype=jnp.int32)
    start = arrays.window_starts[which]
    anchor_cam, positive_cam = _camera_pair(k_cam, arrays.window_view_valid[which])
    rows = start[:, None] + jnp.arange(window, dtype=jnp.int32)[None, :]  # (B, T)
    return Batch(
        anchor2d=arrays.keypoints2d[rows, anchor_cam[:, None]],
        positive2d=arrays.keypoints2d[rows, positive_cam[:, None]],
        poses3d=arrays.poses3d[rows],
        anchor_camera=anchor_cam, positive_camera=positive_cam, frame=start)
